"""The Microsoft Teams approval desk (Bot Framework, Adaptive Cards with Universal Actions).

``desk_from_settings`` is the ``jitgate.desks`` entry point: no Teams settings, no desk;
Teams settings that would run the bot unsafely refuse start-up, naming the setting.
botbuilder turns inbound authentication *off* when the app id is empty, so an empty app
id with any other Teams setting is refused rather than "not configured".
"""

from __future__ import annotations

from urllib.parse import urlparse

from broker.config import Settings
from broker.errors import ConfigError

APP_TYPES = {"multitenant": "MultiTenant", "singletenant": "SingleTenant"}


def _teams_settings_given(s: Settings) -> list[str]:
    given = {
        "MICROSOFT_APP_PASSWORD": bool(s.microsoft_app_password),
        "MICROSOFT_APP_TENANT_ID": bool(s.microsoft_app_tenant_id),
        "TEAMS_APPROVALS_CONVERSATION": bool(s.teams_approvals_conversation),
        "TEAMS_SECURITY_CONVERSATION": bool(s.teams_security_conversation),
        "TEAMS_OPENID_METADATA_URL": bool(s.teams_openid_metadata_url),
        "TEAMS_TOKEN_ISSUER": bool(s.teams_token_issuer),
        "TEAMS_LOGIN_URL": bool(s.teams_login_url),
    }
    return [name for name, on in given.items() if on]


def check_settings(s: Settings) -> bool:
    """True when Teams is configured (and safely); False when it is off; ConfigError otherwise."""
    if not s.microsoft_app_id.strip():
        given = _teams_settings_given(s)
        if given:
            raise ConfigError(f"MICROSOFT_APP_ID is empty but {', '.join(given)} is set: with an empty app id "
                              "botbuilder would accept unauthenticated activities. Set MICROSOFT_APP_ID (the Azure "
                              "Bot's app id) or unset the Teams settings.")
        return False
    if not s.microsoft_app_password:
        raise ConfigError("MICROSOFT_APP_ID is set but MICROSOFT_APP_PASSWORD is empty: the bot could neither be "
                          "verified by Teams nor post; set the app registration's client secret")
    if s.microsoft_app_type.lower() not in APP_TYPES:
        raise ConfigError(f"MICROSOFT_APP_TYPE must be SingleTenant or MultiTenant, got {s.microsoft_app_type!r} "
                          "(managed identities are not supported by this desk)")
    if not s.microsoft_app_tenant_id.strip():
        raise ConfigError("MICROSOFT_APP_TENANT_ID is required with Teams: approvers are accepted only from your "
                          "organisation's Entra tenant")
    if bool(s.teams_openid_metadata_url) != bool(s.teams_token_issuer):
        raise ConfigError("TEAMS_OPENID_METADATA_URL and TEAMS_TOKEN_ISSUER must be set together (the keys and the "
                          "issuer of the same Bot Framework cloud)")
    if s.teams_openid_metadata_url:
        u = urlparse(s.teams_openid_metadata_url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ConfigError(f"TEAMS_OPENID_METADATA_URL must be an http(s) URL, got {s.teams_openid_metadata_url!r}")
    if s.teams_login_url:
        u = urlparse(s.teams_login_url)
        if u.scheme != "https" or not u.netloc or u.path.strip("/") == "":
            raise ConfigError("TEAMS_LOGIN_URL must be an https authority with the tenant, e.g. "
                              f"https://login.microsoftonline.us/<tenant>, got {s.teams_login_url!r}")
    return True


def desk_from_settings(settings: Settings):
    """The Teams desk, or None when Teams is not configured (``jitgate.desks`` entry point)."""
    if not check_settings(settings):
        return None
    from .desk import TeamsDesk  # noqa: PLC0415 - botbuilder is imported only when Teams is on

    return TeamsDesk(settings)
