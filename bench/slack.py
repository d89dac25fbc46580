"""The real approval path for the wake-up figure: signed Slack clicks.

The brokers run the Slack desk in HTTP mode against the local Slack Web API stand-in
(support/fake_slack.py, served from this process); each approval is the
``block_actions`` payload Slack sends when an approver presses *Approve* on the proposal's
message, form-encoded and signed with the signing secret exactly as Slack signs it,
posted to ``POST /slack/events`` of a broker. The desk acks at once and approves after
the ack, so the time measured from the click's HTTP response includes the approval.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import urlencode

import aiohttp
import orjson

from .load import HarnessError
from .stack import PREFIX

BOT_TOKEN = "xoxb-bench-token"
SIGNING_SECRET = "bench-signing-secret-" + secrets.token_hex(8)
APPROVER_SLACK_ID = "U0BOB"  # bob (sre) in tests/fixtures/approvers.yaml
TEAM = "T0TEST"


def sign(body: str, secret: str = SIGNING_SECRET) -> dict:
    """Slack's request signature: ``v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")``."""
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def approve_click(action_id: str, rid: str, channel: str, ts: str) -> str:
    """The form body of a click on *Approve* in the proposal's message."""
    payload = {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "bench"},
        "user": {"id": APPROVER_SLACK_ID, "username": "bob", "team_id": TEAM},
        "api_app_id": "A0JITGATE",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": f"{secrets.randbelow(10**9)}.{secrets.randbelow(10**9)}",
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": ts, "text": "jitgate proposal"},
        "response_url": "http://127.0.0.1:9/none",
        "actions": [{"action_id": action_id, "block_id": "jit_decide", "type": "button", "value": rid,
                     "text": {"type": "plain_text", "text": "Approve"}, "action_ts": f"{time.time():.6f}"}],
    }
    return urlencode({"payload": json.dumps(payload)})


class SlackClicker:
    """Approvals as signed Slack clicks on one broker's ``/slack/events``."""

    name = "slack"
    channel = "slack"
    describe = "signed Slack click (block_actions) on POST /slack/events; Slack Web API stand-in on loopback"

    def __init__(self, stack, fake_cls, action_id: str) -> None:
        self.stack = stack
        self.fake = fake_cls(bot_token=BOT_TOKEN)
        self.action_id = action_id
        self.url: str | None = None
        self.refs: dict[str, tuple[str, str]] = {}
        self.session: aiohttp.ClientSession | None = None

    @classmethod
    def create(cls, stack):
        """A clicker when the Slack desk and the stand-in are installed; else None."""
        try:
            from bot.slack.blocks import APPROVE  # noqa: PLC0415
            from bot.slack.desk import desk_from_settings  # noqa: F401, PLC0415
            from support.fake_slack import FakeSlack  # noqa: PLC0415
        except ImportError:
            return None
        return cls(stack, FakeSlack, APPROVE)

    async def start_fake(self) -> None:
        await self.fake.start()

    def broker_env(self) -> dict:
        return {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_APPROVALS_CHANNEL": "#approvals", "SLACK_API_URL": self.fake.api_url}

    def bound(self, broker) -> "SlackClicker":
        self.url = broker.url + "/slack/events"
        return self

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def prepare(self, ids: list[str], timeout: float = 60) -> None:
        """Wait until the desk posted each proposal to Slack; remember where (channel, ts)."""
        r = self.stack.client()
        try:
            deadline = time.monotonic() + timeout
            for rid in ids:
                while rid not in self.refs:
                    raw = await r.hget(f"{PREFIX}{{req:{rid}}}", "messages")
                    for m in orjson.loads(raw or b"[]"):
                        if m.get("transport") == "slack":
                            self.refs[rid] = (m["destination"], m["ref"])
                    if rid in self.refs:
                        break
                    if time.monotonic() > deadline:
                        raise HarnessError(f"the Slack desk did not post request {rid} within {timeout:.0f} s")
                    await asyncio.sleep(0.05)
        finally:
            await r.aclose()

    async def click(self, rid: str) -> tuple[float, float]:
        """(when the click was sent, when its HTTP response came), machine-wide monotonic seconds."""
        channel, ts = self.refs[rid]
        body = approve_click(self.action_id, rid, channel, ts)
        headers = sign(body)
        sent = time.monotonic()
        async with self.session.post(self.url, data=body.encode(), headers=headers) as resp:
            await resp.read()
            done = time.monotonic()
        if resp.status != 200:
            raise HarnessError(f"Slack click on {rid}: HTTP {resp.status}")
        return sent, done

    async def stop(self) -> None:
        if self.session:
            await self.session.close()
            self.session = None

    async def stop_fake(self) -> None:
        await self.fake.stop()
