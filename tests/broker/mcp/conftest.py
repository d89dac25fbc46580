"""A live broker for the MCP tests: uvicorn on an ephemeral loopback port, real Redis on the test
prefix, the wall clock, the Slack desk talking to the Slack stand-in (approvals are signed clicks
on ``POST /slack/events``), and the MCP tests' policies and targets."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
import yaml
from cryptography.hazmat.primitives import serialization

from broker.app import Broker, build, create_app, shutdown
from broker.client import Client
from broker.identity import generate_key, load_private_key
from broker.notify import LoggingNotifier
from bot.slack import SlackDesk
from bot.slack.blocks import APPROVE, DENY
from support.fake_slack import FakeSlack
from tests.bot.slack import slackreq
from tests.bot.slack.conftest import slack_settings

HERE = Path(__file__).resolve().parent
# id, owner, team
AGENTS = [("mcp-gateway", "dave", "platform"), ("reader-bot", "dave", "platform")]


@dataclass
class Live:
    """The served broker: ``url``, the ``broker`` itself, the agents' key files, the Slack stand-in."""

    broker: Broker
    url: str
    key_files: dict[str, Path]
    fake: FakeSlack
    server: uvicorn.Server

    def client(self, agent_id: str = "mcp-gateway", **kw) -> Client:
        return Client(self.url, agent_id, self.key_files[agent_id], **kw)

    async def pending(self, timeout: float = 20.0) -> str:
        """The id of the one pending request, once there is one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for req in await self.broker.store.scan_requests():
                if req.status == "pending":
                    return req.id
            await asyncio.sleep(0.02)
        raise AssertionError("no pending request appeared")

    async def message_ref(self, rid: str) -> tuple[str, str]:
        """Where the desk posted the request in Slack (channel, ts)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            refs = [m for m in (await self.broker.lifecycle.get(rid)).messages if m["transport"] == "slack"]
            if refs:
                return refs[0]["destination"], refs[0]["ref"]
            await asyncio.sleep(0.02)
        raise AssertionError(f"request {rid} was never posted to Slack")

    async def slack_post(self, body: str) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.post(self.url + "/slack/events", content=body, headers=slackreq.signed(body))

    async def slack_approve(self, user: str, rid: str) -> None:
        """A signed click on Approve in the request's Slack message."""
        channel, ts = await self.message_ref(rid)
        payload = slackreq.block_actions(user, APPROVE, value=rid, channel=channel, ts=ts,
                                         response_url=self.fake.response_url("click"))
        r = await self.slack_post(slackreq.form_payload(payload))
        assert r.status_code == 200, r.text

    async def slack_deny(self, user: str, rid: str, reason: str) -> None:
        """Deny in Slack: the click opens the reason modal, the submission carries the reason."""
        channel, ts = await self.message_ref(rid)
        payload = slackreq.block_actions(user, DENY, value=rid, channel=channel, ts=ts,
                                         response_url=self.fake.response_url("click"))
        assert (await self.slack_post(slackreq.form_payload(payload))).status_code == 200
        r = await self.slack_post(slackreq.form_payload(slackreq.view_submission(user, rid, reason)))
        assert r.status_code == 200, r.text

    async def status(self, rid: str, want: str, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while True:
            req = await self.broker.lifecycle.get(rid)
            if req.status == want:
                return req
            if time.monotonic() > deadline:
                raise AssertionError(f"request {rid} is {req.status}, not {want}")
            await asyncio.sleep(0.02)


def write_agents(tmp_path: Path) -> dict[str, Path]:
    """Register :data:`AGENTS` and write each one's private key to a file only its owner reads."""
    entries, files = [], {}
    for agent_id, owner, team in AGENTS:
        pem, jwk = generate_key("P-256")
        entries.append({"id": agent_id, "owner": owner, "team": team, "public_key": jwk})
        key = load_private_key(pem)
        path = tmp_path / f"{agent_id}.pem"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
        files[agent_id] = path
    (tmp_path / "agents.yaml").write_text(yaml.safe_dump({"agents": entries}))
    return files


@pytest.fixture
async def fake_slack():
    fake = await FakeSlack(bot_token=slackreq.BOT_TOKEN, app_token=slackreq.APP_TOKEN).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def live(tmp_path, redis_url, prefix, redis, fake_slack):
    """The broker with the Slack desk, served over HTTP on the wall clock."""
    settings = slack_settings(tmp_path, redis_url, prefix, fake_slack, policy_dir=HERE / "policies",
                              targets_file=HERE / "targets.yaml", reminder_interval_s=0)
    key_files = write_agents(tmp_path)
    broker = await build(settings, redis=aioredis.from_url(settings.redis_url), notifiers=[LoggingNotifier()],
                         desks=[SlackDesk(settings, retry_backoff_s=0.01)])
    config = uvicorn.Config(create_app(settings, broker=broker), host="127.0.0.1", port=0, lifespan="off",
                            log_level="warning", access_log=False, ws="none")
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    port = server.servers[0].sockets[0].getsockname()[1]
    yield Live(broker, f"http://127.0.0.1:{port}", key_files, fake_slack, server)
    await server.shutdown()
    await shutdown(broker)
