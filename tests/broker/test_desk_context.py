"""Issue 15: "desks get a typed, narrow context (lifecycle, break-glass, directory, a prefixed
key-value store), not the whole broker", and "desks own their configuration"."""

from __future__ import annotations

import base64
import dataclasses
import os

from broker.clock import ManualClock
from broker.config import Settings
from broker.notify import DeskContext, LoggingNotifier
from tests.support.harness import Harness, make_settings, write_agents


class RecordingDesk:
    """A desk that keeps what it was started with."""

    name = "recording"

    def __init__(self) -> None:
        self.notifier = LoggingNotifier()
        self.started_with = None

    def routes(self) -> list:
        return []

    async def start(self, ctx) -> None:
        self.started_with = ctx

    async def stop(self) -> None:
        return None


async def test_a_desk_starts_with_the_desk_context_not_the_broker(tmp_path, redis_url, prefix, redis):
    """Issue 15: a desk is started with a DeskContext (the lifecycle, break-glass, directory,
    its key space under the broker's prefix, the notice port), never the broker with its
    keys, verifier, scheduler or outbox."""
    settings = make_settings(tmp_path, redis_url, prefix)
    desk = RecordingDesk()
    h = Harness(settings, write_agents(settings.agents_file), ManualClock(), desks=[desk])
    await h.start()
    try:
        ctx = desk.started_with
        assert type(ctx) is DeskContext
        assert ctx.lifecycle is h.broker.lifecycle and ctx.breakglass is h.broker.breakglass
        assert ctx.directory is h.broker.directory and ctx.notices is h.broker.lifecycle.notices
        assert ctx.keys.prefix == prefix and ctx.keys.key("slack", "x") == f"{prefix}slack:x"
        for part in ("keyring", "verifier", "scheduler", "outbox", "wakeups", "desks"):
            assert not hasattr(ctx, part), part
    finally:
        await h.stop()


def test_the_core_settings_hold_no_chat_platform_setting():
    """Issue 15: the Slack and Teams variables are the desks' own (bot/slack/settings.py,
    bot/teams/settings.py): the core keeps only the environment they are read from."""
    names = {f.name for f in dataclasses.fields(Settings)}
    assert not [n for n in names if n.startswith(("slack_", "microsoft_", "teams_"))]
    env = {"JITGATE_ISSUER": "https://jitgate.test", "SLACK_BOT_TOKEN": "xoxb-1",
           "JITGATE_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode()}
    settings = Settings.from_env(env)
    assert settings.env["SLACK_BOT_TOKEN"] == "xoxb-1" and "xoxb-1" not in repr(settings)
