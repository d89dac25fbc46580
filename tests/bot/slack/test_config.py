"""Fail closed: Slack half-configured refuses to start, naming the missing setting."""

from __future__ import annotations

import logging

import pytest

from broker.app import build, load_desks
from broker.clock import ManualClock
from broker.config import Secret, Settings
from broker.errors import ConfigError
from bot.slack import SlackDesk, desk_from_settings
from tests.bot.slack import slackreq
from tests.bot.slack.conftest import slack_settings
from tests.support.harness import make_settings, write_agents


def _settings(tmp_path, **slack) -> Settings:
    return make_settings(tmp_path, "redis://127.0.0.1:1/0", "unused:", **slack)


def test_off_when_nothing_is_set(tmp_path):
    """No SLACK_* setting: the desk is off (None), the broker runs without it."""
    assert desk_from_settings(_settings(tmp_path)) is None


@pytest.mark.parametrize("slack, named", [
    ({"slack_bot_token": Secret("xoxb-1"), "slack_approvals_channel": "#a"}, "SLACK_SIGNING_SECRET"),
    ({"slack_signing_secret": Secret(slackreq.SIGNING_SECRET), "slack_approvals_channel": "#a"}, "SLACK_BOT_TOKEN"),
    ({"slack_app_token": Secret("xapp-1"), "slack_approvals_channel": "#a"}, "SLACK_BOT_TOKEN"),
    ({"slack_bot_token": Secret("xoxb-1"), "slack_signing_secret": Secret(slackreq.SIGNING_SECRET)}, "SLACK_APPROVALS_CHANNEL"),
    ({"slack_bot_token": Secret("xoxb-1"), "slack_app_token": Secret("xapp-1")}, "SLACK_APPROVALS_CHANNEL"),
    ({"slack_bot_token": Secret("xoxb-1"), "slack_app_token": Secret("xoxb-oops"), "slack_approvals_channel": "#a"},
     "SLACK_APP_TOKEN"),
    ({"slack_bot_token": Secret("xoxb-1"), "slack_signing_secret": Secret("   "), "slack_approvals_channel": "#a"},
     "SLACK_SIGNING_SECRET"),
    ({"slack_bot_token": Secret("xoxb-1"), "slack_signing_secret": Secret(slackreq.SIGNING_SECRET), "slack_approvals_channel": "#a",
      "slack_api_url": "file:///etc/passwd"}, "SLACK_API_URL"),
    # Issue 14.13: "a Slack signing secret of one character ... start[s] without complaint".
    ({"slack_bot_token": Secret("xoxb-1"), "slack_signing_secret": Secret("s"), "slack_approvals_channel": "#a"},
     "SLACK_SIGNING_SECRET"),
    ({"slack_bot_token": Secret("xoxb-1"), "slack_signing_secret": Secret("0123456789abcde"),
      "slack_approvals_channel": "#a"}, "SLACK_SIGNING_SECRET"),
    ({"slack_bot_token": Secret("xoxb-1"), "slack_app_token": Secret("xapp-1"), "slack_signing_secret": Secret("x"),
      "slack_approvals_channel": "#a"}, "SLACK_SIGNING_SECRET"),
])
def test_half_configured_refuses_naming_the_setting(tmp_path, slack, named):
    """Requirement 9: Slack enabled without what it needs to verify requests (or to post) refuses to start."""
    with pytest.raises(ConfigError) as e:
        desk_from_settings(_settings(tmp_path, **slack))
    assert named in e.value.detail


def test_modes(tmp_path):
    """HTTP mode mounts POST /slack/events; Socket Mode (app token) mounts nothing."""
    http = desk_from_settings(_settings(tmp_path, slack_bot_token=Secret("xoxb-1"), slack_signing_secret=Secret(slackreq.SIGNING_SECRET),
                                        slack_approvals_channel="#a"))
    sock = desk_from_settings(_settings(tmp_path, slack_bot_token=Secret("xoxb-1"), slack_app_token=Secret("xapp-1"),
                                        slack_approvals_channel="#a"))
    assert [(r.path, sorted(r.methods)) for r in http.routes()] == [("/slack/events", ["POST"])]
    assert not http.socket_mode and sock.socket_mode and sock.routes() == []


def test_registered_as_the_slack_desk(tmp_path):
    """The desk is found through the jitgate.desks entry point (the core imports none of it)."""
    desks = load_desks(_settings(tmp_path, slack_bot_token=Secret("xoxb-1"), slack_signing_secret=Secret(slackreq.SIGNING_SECRET),
                                 slack_approvals_channel="#a"))
    assert [type(d) for d in desks if d.name == "slack"] == [SlackDesk]
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        load_desks(_settings(tmp_path, slack_bot_token=Secret("xoxb-1"), slack_approvals_channel="#a"))


async def test_rejected_token_refuses_start(tmp_path, redis_url, prefix, redis, fake_slack):
    """Requirement 9: a bot token Slack refuses (auth.test invalid_auth) stops the broker from starting."""
    settings = slack_settings(tmp_path, redis_url, prefix, fake_slack, slack_bot_token=Secret("xoxb-wrong"))
    write_agents(settings.agents_file)
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN was refused by Slack \\(invalid_auth\\)"):
            await build(settings, redis=client, clock=ManualClock(), desks=[desk_from_settings(settings)])
    finally:
        await client.aclose()


async def test_rejected_app_token_refuses_start(tmp_path, redis_url, prefix, redis, fake_slack):
    """Issue 24.4: "Check the app token at start-up (apps.connections.open) and refuse" - a wrong SLACK_APP_TOKEN
    looked healthy while Socket Mode retried invalid_auth forever; now it stops the broker from starting."""
    settings = slack_settings(tmp_path, redis_url, prefix, fake_slack, slack_signing_secret=Secret(""),
                              slack_app_token=Secret("xapp-wrong"))
    write_agents(settings.agents_file)
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        with pytest.raises(ConfigError, match="SLACK_APP_TOKEN was refused by Slack \\(invalid_auth\\)"):
            await build(settings, redis=client, clock=ManualClock(), desks=[desk_from_settings(settings)])
    finally:
        await client.aclose()
    assert [c.token for c in fake_slack.of("apps.connections.open", ok=False)] == ["xapp-wrong"]


async def test_unreachable_slack_does_not_block_start(tmp_path, redis_url, prefix, redis, caplog):
    """Slack down at start: the broker starts anyway (its API and other desks keep working) and says why."""
    settings = make_settings(tmp_path, redis_url, prefix, slack_bot_token=Secret(slackreq.BOT_TOKEN),
                             slack_signing_secret=Secret(slackreq.SIGNING_SECRET), slack_approvals_channel="#a",
                             slack_api_url="http://127.0.0.1:9/api/")
    write_agents(settings.agents_file)
    import redis.asyncio as aioredis

    desk = SlackDesk(settings, retry_backoff_s=0.01)
    with caplog.at_level(logging.WARNING, logger="jitgate.slack"):
        broker = await build(settings, redis=aioredis.from_url(redis_url), clock=ManualClock(), desks=[desk])
    from broker.app import shutdown

    await shutdown(broker)
    assert "Slack is unreachable" in caplog.text
