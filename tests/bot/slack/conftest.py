"""A broker with the Slack desk in HTTP mode, the Slack stand-in, and a driver that
sends correctly signed requests to ``POST /slack/events``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import pytest

from broker.clock import ManualClock
from broker.config import Secret
from bot.slack import SlackDesk
from tests.bot.slack import slackreq
from support.fake_slack import FakeSlack
from tests.support.harness import Harness, make_settings, write_agents

APPROVERS = Path(__file__).resolve().parent / "fixtures" / "approvers.yaml"


def slack_settings(tmp_path, redis_url, prefix, fake: FakeSlack, **overrides):
    values = dict(
        approvers_file=APPROVERS,
        slack_bot_token=Secret(slackreq.BOT_TOKEN),
        slack_signing_secret=Secret(slackreq.SIGNING_SECRET),
        slack_approvals_channel="#approvals",
        slack_security_channel="#security",
        slack_api_url=fake.api_url,
    )
    values.update(overrides)
    return make_settings(tmp_path, redis_url, prefix, **values)


@pytest.fixture
async def fake_slack():
    """The Slack Web API stand-in on an ephemeral port."""
    fake = await FakeSlack(bot_token=slackreq.BOT_TOKEN, app_token=slackreq.APP_TOKEN).start()
    yield fake
    await fake.stop()


class Driver:
    """Acts as Slack towards the running app, and as the agent through the harness."""

    def __init__(self, harness: Harness, fake: FakeSlack) -> None:
        self.h = harness
        self.fake = fake

    @property
    def life(self):
        return self.h.broker.lifecycle

    async def post(self, body: str, headers: dict | None = None) -> httpx.Response:
        return await self.h.client.post("/slack/events", content=body, headers=headers or slackreq.signed(body))

    async def propose(self, agent: str = "deploy-bot", **body) -> str:
        """Propose as the agent and wait until the proposal message is posted and stored."""
        r = await self.h.propose(agent, **body)
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        await self.message_ref(rid)
        return rid

    async def message_ref(self, rid: str) -> tuple[str, str]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            req = await self.life.get(rid)
            refs = [m for m in req.messages if m["transport"] == "slack"]
            if refs:
                return refs[0]["destination"], refs[0]["ref"]
            await asyncio.sleep(0.01)
        raise AssertionError(f"request {rid} was never posted to Slack; calls: {[c.method for c in self.fake.calls]}")

    async def click(self, user: str, action_id: str, rid: str, *, value: str | None = None, selected: str | None = None,
                    ref: tuple[str, str] | None = None) -> httpx.Response:
        """A signed click on the request's message (``value`` defaults to the request id)."""
        channel, ts = ref or await self.message_ref(rid)
        payload = slackreq.block_actions(user, action_id, value=rid if value is None and selected is None else value,
                                         selected=selected, channel=channel, ts=ts,
                                         response_url=self.fake.response_url("click"))
        return await self.post(slackreq.form_payload(payload))

    async def submit_deny(self, user: str, rid: str, reason: str) -> httpx.Response:
        return await self.post(slackreq.form_payload(slackreq.view_submission(user, rid, reason)))

    async def jit(self, user: str, text: str) -> httpx.Response:
        return await self.post(slackreq.slash(user, text, response_url=self.fake.response_url(user)))

    async def answer(self, hook: str, count: int = 1) -> dict:
        """The ``count``-th response-URL answer for ``hook`` (a slash command's user)."""
        got = await self.fake.wait_for(lambda: len([r for r in self.fake.responses if r["_hook"] == hook]) >= count,
                                       what=f"response to {hook}")
        assert got
        return [r for r in self.fake.responses if r["_hook"] == hook][count - 1]

    async def ephemerals(self, user: str, count: int = 1) -> list[str]:
        """Texts of the first ``count`` ephemeral messages to ``user`` (waits for them)."""
        def found():
            texts = [c.args["text"] for c in self.fake.of("chat.postEphemeral") if c.args.get("user") == user]
            return texts if len(texts) >= count else None
        return await self.fake.wait_for(found, what=f"{count} ephemeral(s) to {user}")

    async def status(self, rid: str, want: str, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while True:
            req = await self.life.get(rid)
            if req.status == want:
                return req
            if time.monotonic() > deadline:
                raise AssertionError(f"request {rid} is {req.status}, not {want}")
            await asyncio.sleep(0.01)

    def message(self, ref: tuple[str, str]) -> dict:
        return self.fake.messages[ref]

    def message_text(self, ref: tuple[str, str]) -> str:
        """Every text in the message's blocks, joined (what an approver reads)."""
        return "\n".join(_texts(self.fake.messages[ref]["blocks"]))

    async def settle(self) -> None:
        """Let background listeners finish and the outbox deliver everything queued."""
        await asyncio.sleep(0.05)
        await self.h.broker.outbox.drain()


def _texts(node) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("text"), str):
            out.append(node["text"])
        for v in node.values():
            if isinstance(v, (dict, list)):
                out += _texts(v)
    elif isinstance(node, list):
        for v in node:
            out += _texts(v)
    return out


@contextlib.asynccontextmanager
async def running(tmp_path, redis_url, prefix, fake: FakeSlack, *, make_desk=None, clock: ManualClock | None = None,
                  **overrides):
    """A broker with the Slack desk built from these settings (by ``make_desk``), and a driver for it."""
    settings = slack_settings(tmp_path, redis_url, prefix, fake, **overrides)
    keys = write_agents(settings.agents_file)
    desk = make_desk(settings) if make_desk else SlackDesk(settings, retry_backoff_s=0.01)
    h = Harness(settings, keys, clock or ManualClock(), desks=[desk])
    await h.start()
    try:
        yield Driver(h, fake)
    finally:
        await h.stop()


@pytest.fixture
async def slack(tmp_path, redis_url, prefix, redis, fake_slack):
    """A running broker with the Slack desk (HTTP mode) talking to the stand-in."""
    async with running(tmp_path, redis_url, prefix, fake_slack) as driver:
        yield driver
