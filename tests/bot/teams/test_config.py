"""Requirement 2 (fail closed): Teams settings that would run the bot unsafely refuse start-up;
no Teams settings means no desk. And the outbound credentials never say "auth disabled"."""

from __future__ import annotations

import pytest

from broker.app import load_desks
from broker.config import Secret, Settings
from broker.errors import ConfigError
from bot.teams import desk_from_settings
from bot.teams.auth import BotConfig, MsalCredentialsFactory, login_authority
from tests.support.fake_botframework import APP_ID, TENANT

from bot.teams.settings import TeamsSettings
from tests.support.harness import with_desk_env

from .conftest import teams_settings

BASE = Settings(issuer="https://jitgate.test", key_encryption_key=b"k" * 32)
ON = with_desk_env(BASE, microsoft_app_id=APP_ID, microsoft_app_password=Secret("pw"), microsoft_app_tenant_id=TENANT)


def test_no_teams_settings_no_desk():
    """A channel without credentials is simply off."""
    assert desk_from_settings(BASE) is None


@pytest.mark.parametrize("override, names", [
    ({"microsoft_app_password": Secret("pw")}, "MICROSOFT_APP_PASSWORD"),
    ({"teams_approvals_conversation": "19:x@thread.tacv2"}, "TEAMS_APPROVALS_CONVERSATION"),
    ({"teams_openid_metadata_url": "http://127.0.0.1:1/m", "teams_token_issuer": "x"}, "TEAMS_OPENID_METADATA_URL"),
    ({"microsoft_app_id": "   ", "microsoft_app_password": Secret("pw")}, "MICROSOFT_APP_PASSWORD"),
])
def test_empty_app_id_with_teams_settings_refuses_to_start(override, names):
    """PITFALLS: botbuilder disables authentication when the app id is empty; Teams settings with an
    empty MICROSOFT_APP_ID refuse start-up instead, naming the setting."""
    with pytest.raises(ConfigError) as e:
        desk_from_settings(with_desk_env(BASE, **override))
    assert "MICROSOFT_APP_ID" in e.value.detail and names in e.value.detail


def test_app_id_without_password_refuses_to_start():
    """Teams enabled without a password/credential refuses to start."""
    with pytest.raises(ConfigError, match="MICROSOFT_APP_PASSWORD"):
        desk_from_settings(with_desk_env(ON, microsoft_app_password=Secret("")))


def test_tenant_is_required():
    """Approvers are bound only within the configured tenant, so it must be configured."""
    with pytest.raises(ConfigError, match="MICROSOFT_APP_TENANT_ID"):
        desk_from_settings(with_desk_env(ON, microsoft_app_tenant_id=""))


@pytest.mark.parametrize("override, setting", [
    ({"microsoft_app_type": "UserAssignedMSI"}, "MICROSOFT_APP_TYPE"),
    ({"teams_openid_metadata_url": "http://127.0.0.1:1/m"}, "TEAMS_TOKEN_ISSUER"),
    ({"teams_openid_metadata_url": "file:///etc/keys", "teams_token_issuer": "x"}, "TEAMS_OPENID_METADATA_URL"),
    ({"teams_login_url": "http://login.example/tenant"}, "TEAMS_LOGIN_URL"),
    ({"teams_login_url": "https://login.example"}, "TEAMS_LOGIN_URL"),
])
def test_wrong_teams_settings_name_the_setting(override, setting):
    """A wrong setting refuses start-up with a message naming it."""
    with pytest.raises(ConfigError, match=setting):
        desk_from_settings(with_desk_env(ON, **override))


def test_the_broker_loads_the_teams_desk_through_its_entry_point(tmp_path, redis_url, prefix, fake_bf, fake_login):
    """The core finds the desk through the jitgate.desks entry point (it imports no desk itself)."""
    s = teams_settings(tmp_path, redis_url, prefix, fake_bf, fake_login)
    desks = [d for d in load_desks(s) if d.name == "teams"]
    assert len(desks) == 1
    with pytest.raises(ConfigError, match="MICROSOFT_APP_PASSWORD"):
        load_desks(with_desk_env(s, microsoft_app_password=Secret("")))


async def test_outbound_credentials_never_disable_authentication():
    """botbuilder asks the credentials factory whether auth is disabled: jitgate's always says no,
    accepts only its own app id, and refuses to exist without an id and a password."""
    f = MsalCredentialsFactory(APP_ID, Secret("pw"), "https://login.microsoftonline.com/botframework.com",
                               custom_authority=False)
    assert await f.is_authentication_disabled() is False
    assert await f.is_valid_app_id(APP_ID) and not await f.is_valid_app_id("") and not await f.is_valid_app_id("x")
    with pytest.raises(PermissionError):
        await f.create_credentials("someone-else", "https://api.botframework.com", None, True)
    for app_id, pw in (("", Secret("pw")), (APP_ID, Secret(""))):
        with pytest.raises(ValueError):
            MsalCredentialsFactory(app_id, pw, "https://login.microsoftonline.com/x", custom_authority=False)


def test_botbuilder_configuration_comes_from_the_settings():
    """PITFALLS: TEAMS_OPENID_METADATA_URL / TEAMS_TOKEN_ISSUER become botbuilder's
    TO_BOT_FROM_CHANNEL_* attributes; MICROSOFT_APP_* its APP_*; defaults are Microsoft's cloud."""
    c = BotConfig(TeamsSettings.from_env(ON.env))
    assert (c.APP_ID, c.APP_PASSWORD, c.APP_TENANTID, c.APP_TYPE) == (APP_ID, "pw", TENANT, "MultiTenant")
    assert c.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL == "https://login.botframework.com/v1/.well-known/openidconfiguration"
    assert c.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER == "https://api.botframework.com"
    assert "pw" not in repr(c)
    custom = TeamsSettings.from_env(with_desk_env(ON, teams_openid_metadata_url="http://127.0.0.1:9/m",
                                                  teams_token_issuer="https://iss").env)
    assert BotConfig(custom).TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL == "http://127.0.0.1:9/m"
    assert BotConfig(custom).TO_BOT_FROM_CHANNEL_TOKEN_ISSUER == "https://iss"
    assert login_authority(TeamsSettings.from_env(ON.env)) == "https://login.microsoftonline.com/botframework.com"
    assert login_authority(TeamsSettings.from_env(with_desk_env(ON, microsoft_app_type="SingleTenant").env)) == \
        f"https://login.microsoftonline.com/{TENANT}"
    assert login_authority(TeamsSettings.from_env(with_desk_env(
        ON, teams_login_url="https://login.microsoftonline.us/t/").env)) == "https://login.microsoftonline.us/t"
