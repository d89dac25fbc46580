"""When the console is on, and the rule that a default-on console listens on loopback only."""

from __future__ import annotations

import base64
import os

import pytest

from bot.console import ConsoleDesk, desk_from_settings, is_loopback
from broker.config import Secret, Settings
from broker.errors import ConfigError
from tests.support.harness import make_settings, write_agents
from tests.support.process import jitgate_env, run_cli

BASE_ENV = {"JITGATE_ISSUER": "http://127.0.0.1:8080",
            "JITGATE_KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode()}


def _settings(tmp_path, **overrides) -> Settings:
    return make_settings(tmp_path, "redis://unused", "p:", **overrides)


def test_on_by_default_without_a_chat_platform(tmp_path):
    """With neither SLACK_BOT_TOKEN nor MICROSOFT_APP_ID the console is the approval desk."""
    assert isinstance(desk_from_settings(_settings(tmp_path)), ConsoleDesk)


def test_off_by_default_when_a_chat_platform_is_configured(tmp_path):
    """Slack or Teams configured: the console stays off unless asked for."""
    assert desk_from_settings(_settings(tmp_path, slack_bot_token=Secret("xoxb-1"))) is None
    assert desk_from_settings(_settings(tmp_path, microsoft_app_id="app-id")) is None
    on = desk_from_settings(_settings(tmp_path, slack_bot_token=Secret("xoxb-1"), console=True))
    assert isinstance(on, ConsoleDesk)
    assert desk_from_settings(_settings(tmp_path, console=False)) is None


def test_default_console_refuses_a_non_loopback_host(tmp_path):
    """Security (loopback only): a console on by default refuses to start on a public address, naming JITGATE_HOST."""
    for host in ("0.0.0.0", "192.168.1.20", "::", "jitgate.example.com"):
        with pytest.raises(ConfigError) as e:
            desk_from_settings(_settings(tmp_path, host=host))
        assert "JITGATE_HOST" in e.value.detail and "JITGATE_CONSOLE=1" in e.value.detail
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert desk_from_settings(_settings(tmp_path, host=host)) is not None


def test_explicit_console_may_listen_anywhere(tmp_path):
    """JITGATE_CONSOLE=1 is a deliberate choice: any address is allowed."""
    assert desk_from_settings(_settings(tmp_path, host="0.0.0.0", console=True, issuer="https://j.example")) is not None


def test_jitgate_console_setting_is_parsed_strictly():
    """JITGATE_CONSOLE accepts 1/0 (true/false, yes/no, on/off); anything else refuses start-up naming it."""
    assert Settings.from_env(BASE_ENV).console is None
    assert Settings.from_env({**BASE_ENV, "JITGATE_CONSOLE": "1"}).console is True
    assert Settings.from_env({**BASE_ENV, "JITGATE_CONSOLE": "off"}).console is False
    with pytest.raises(ConfigError) as e:
        Settings.from_env({**BASE_ENV, "JITGATE_CONSOLE": "maybe"})
    assert "JITGATE_CONSOLE" in e.value.detail


def test_is_loopback():
    """Loopback means 127.0.0.0/8, ::1 and localhost; nothing else."""
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "", "::", "10.0.0.1", "localhost.evil.example"]))


def test_serve_on_a_public_address_refuses_to_start(tmp_path, prefix, redis_url):
    """Security (loopback only): `jitgate serve --host 0.0.0.0` with the default console exits non-zero naming JITGATE_HOST."""
    write_agents(tmp_path / "agents.yaml")
    env = jitgate_env(tmp_path, prefix, BASE_ENV["JITGATE_KEY_ENCRYPTION_KEY"], redis_url)
    out = run_cli(env, "serve", "--host", "0.0.0.0", "--port", "0", timeout=30)
    assert out.returncode != 0
    assert "JITGATE_HOST is '0.0.0.0'" in out.stderr

