"""Settings: how ``.env`` is read, strict booleans, and secrets that are too weak to start with."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest

from broker.config import Settings, environment, read_env_file
from broker.errors import ConfigError
from bot.slack.settings import SlackSettings
from bot.teams.settings import TeamsSettings

ROOT = Path(__file__).resolve().parents[2]
KEK = base64.urlsafe_b64encode(os.urandom(32)).decode()
BASE = {"JITGATE_ISSUER": "https://jitgate.test", "JITGATE_KEY_ENCRYPTION_KEY": KEK}


def _fenced_env_snippets(marker: str) -> list[str]:
    """The ```-fenced blocks of the README and of the pages under docs/ that configure a
    desk: those with a line starting with ``marker``. Read from the documents themselves, so
    the test checks what users copy, wherever the section lives."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
            if re.search(rf"^{re.escape(marker)}", block, re.MULTILINE):
                found.append(block)
    assert found, f"no fenced block with {marker!r} in README.md or docs/*.md"
    return found


def _as_written(block: str) -> dict[str, str]:
    """What a reader of the snippet expects: each uncommented KEY=VALUE line gives VALUE, up
    to a comment (a '#' after whitespace)."""
    expected = {}
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        expected[key.strip()] = re.split(r"\s+#", value, maxsplit=1)[0].strip()
    return expected


def _private_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def test_readme_slack_snippet_reads_as_written(tmp_path):
    """Issue 13.5: the README's Slack snippet, pasted into .env verbatim, gives the values it
    shows (inline comments are comments; a commented-out line sets nothing)."""
    for block in _fenced_env_snippets("SLACK_SIGNING_SECRET="):
        values = read_env_file(_private_env(tmp_path, block))
        assert values == _as_written(block)
        assert "SLACK_APP_TOKEN" not in values and "#SLACK_APP_TOKEN" not in values
        slack = SlackSettings.from_env(Settings.from_env({**BASE, **values}).env)  # the desk reads its own
        assert slack.approvals_channel == values["SLACK_APPROVALS_CHANNEL"]
        assert slack.security_channel == values.get("SLACK_SECURITY_CHANNEL", "")
        assert " " not in slack.approvals_channel  # e.g. C0123ABCD, not the comment after it


def test_readme_teams_snippet_reads_as_written(tmp_path):
    """Issue 13.5: the README's Teams snippet, pasted into .env verbatim: a value that starts
    with '#' (a channel name) is kept; the comment after it is not."""
    for block in _fenced_env_snippets("MICROSOFT_APP_ID="):
        values = read_env_file(_private_env(tmp_path, block))
        assert values == _as_written(block)
        teams = TeamsSettings.from_env(Settings.from_env({**BASE, **values}).env)  # the desk reads its own
        assert teams.app_type == values.get("MICROSOFT_APP_TYPE", "MultiTenant")
        assert teams.approvals_conversation == values["TEAMS_APPROVALS_CONVERSATION"]
        assert " " not in teams.approvals_conversation  # e.g. #jit-approvals, kept, without its comment


def test_dotenv_export_quotes_and_comments(tmp_path):
    """Issue 13.5: `export FOO=1` sets FOO; quotes keep a '#'; full-line comments and blank lines are skipped."""
    env_file = _private_env(tmp_path, "# a comment\n\nexport JITGATE_PORT=9090\n"
                                      "JITGATE_SECURITY_GROUP='sec # ops'   # quoted\n"
                                      'JITGATE_ONCALL_GROUP="pager"\n')
    values = read_env_file(env_file)
    assert values == {"JITGATE_PORT": "9090", "JITGATE_SECURITY_GROUP": "sec # ops", "JITGATE_ONCALL_GROUP": "pager"}


def test_process_environment_wins_and_is_not_written(tmp_path, monkeypatch):
    """Issue 13.5: .env is read into the settings, never into os.environ; the process
    environment still wins over the file."""
    env_file = _private_env(tmp_path, f"JITGATE_ISSUER=https://from-file.test\nJITGATE_KEY_ENCRYPTION_KEY={KEK}\n"
                                      "JITGATE_ONCALL_GROUP=pager   # from the file\n")
    monkeypatch.delenv("JITGATE_ONCALL_GROUP", raising=False)
    monkeypatch.delenv("JITGATE_KEY_ENCRYPTION_KEY", raising=False)
    monkeypatch.setenv("JITGATE_ISSUER", "https://from-process.test")
    monkeypatch.setenv("JITGATE_ENV_FILE", str(env_file))
    settings = Settings.from_env()
    assert settings.issuer == "https://from-process.test"
    assert settings.oncall_group == "pager"
    assert "JITGATE_ONCALL_GROUP" not in os.environ and "JITGATE_KEY_ENCRYPTION_KEY" not in os.environ
    assert environment(tmp_path / "absent.env").get("JITGATE_ONCALL_GROUP") is None


BOOLEANS = ["JITGATE_REQUIRE_DPOP", "JITGATE_EMAIL_BINDING", "JITGATE_CONSOLE"]
FIELDS = {"JITGATE_REQUIRE_DPOP": "require_dpop", "JITGATE_EMAIL_BINDING": "email_binding", "JITGATE_CONSOLE": "console"}


@pytest.mark.parametrize("name", BOOLEANS)
@pytest.mark.parametrize("word, value", [("1", True), ("true", True), ("YES", True), ("On", True),
                                         ("0", False), ("false", False), ("No", False), ("OFF", False)])
def test_every_boolean_accepts_the_same_words(name, word, value):
    """Issue 14.12: one parser for every boolean setting: 1/0, true/false, yes/no, on/off, any case."""
    assert getattr(Settings.from_env({**BASE, name: word}), FIELDS[name]) is value


@pytest.mark.parametrize("name", BOOLEANS)
@pytest.mark.parametrize("word", ["enable", "ture", "2", "y", "required"])
def test_an_unknown_boolean_refuses_to_start(name, word):
    """Issue 14.12: "`JITGATE_REQUIRE_DPOP=on` (or a typo) silently means off": an unknown value
    refuses to start, naming the variable and the accepted values."""
    with pytest.raises(ConfigError) as e:
        Settings.from_env({**BASE, name: word})
    assert name in e.value.detail and "true/false" in e.value.detail and "on/off" in e.value.detail


def test_require_dpop_on_means_on():
    """Issue 14.12: JITGATE_REQUIRE_DPOP=on turns DPoP on (it meant off)."""
    assert Settings.from_env({**BASE, "JITGATE_REQUIRE_DPOP": "on"}).require_dpop is True
    assert Settings.from_env({**BASE, "JITGATE_EMAIL_BINDING": "on"}).email_binding is True
    assert Settings.from_env(BASE).require_dpop is False and Settings.from_env(BASE).email_binding is False


def test_serve_refuses_a_typo_in_a_boolean(tmp_path, redis_url, prefix):
    """Issue 14.12: `jitgate serve` with JITGATE_REQUIRE_DPOP=ture exits non-zero, naming the setting."""
    from tests.support.process import jitgate_env, run_cli

    env = jitgate_env(tmp_path, prefix, KEK, redis_url, JITGATE_REQUIRE_DPOP="ture")
    out = run_cli(env, "serve", "--port", "0", timeout=60)
    assert out.returncode != 0
    assert "JITGATE_REQUIRE_DPOP" in out.stderr and "on/off" in out.stderr
