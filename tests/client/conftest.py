"""A live broker over real HTTP for the client tests: uvicorn on 127.0.0.1 (ephemeral
port) in the test's event loop, real Redis on the test prefix, the wall clock (the
client signs with real time), agents that can delegate, and a SPIFFE trust bundle."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import uvicorn
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from broker.app import Broker, build, create_app, shutdown
from broker.identity import generate_key, load_private_key
from broker.jose import b64url
from broker.notify import LoggingNotifier
from broker.client import Client
from tests.support.harness import AGENTS as HARNESS_AGENTS
from tests.support.harness import ISSUER, RS_AUDIENCES, make_settings

POLICIES = Path(__file__).resolve().parent / "policies"
TRUST_DOMAIN = "example.org"
SPIFFE_AGENT = "spiffe://example.org/ns/platform/sa/indexer"

# id, owner, team, can_delegate (added to the harness agents: deploy-bot, reader-bot, ops-bot)
DELEGATION_AGENTS = [
    ("orchestrator", "dave", "platform", True),
    ("planner", "dave", "platform", True),
    ("worker", "dave", "platform", False),
    ("helper", "dave", "platform", True),
    ("quarantined-bot", "dave", "platform", False),
    ("ops-lead", "bob", "ops", True),
    ("no-rights", "dave", "platform", False),
]


def ec_jwk(public_key, kid: str) -> dict:
    n = public_key.public_numbers()
    return {"kty": "EC", "crv": "P-256", "kid": kid, "use": "jwt-svid",
            "x": b64url(n.x.to_bytes(32, "big")), "y": b64url(n.y.to_bytes(32, "big"))}


@dataclass
class Live:
    """A served broker: ``url`` to reach it, ``broker`` to act as approvers, ``keys`` of the agents."""

    broker: Broker
    url: str
    keys: dict
    svid_key: ec.EllipticCurvePrivateKey
    server: uvicorn.Server
    clients: list = field(default_factory=list)

    def client(self, agent_id: str = "reader-bot", **kw) -> Client:
        c = Client(self.url, agent_id, self.keys[agent_id], **kw)
        self.clients.append(c)
        return c

    def approver(self, approver_id: str):
        return self.broker.directory.approver(approver_id)

    async def approve(self, rid: str, approver_id: str = "bob"):
        return await self.broker.lifecycle.approve(rid, self.approver(approver_id), channel="cli", platform_user="test")

    async def deny(self, rid: str, reason: str, approver_id: str = "bob"):
        return await self.broker.lifecycle.deny(rid, self.approver(approver_id), channel="cli", reason=reason)

    async def request_ids(self) -> list[str]:
        return [r.id for r in await self.broker.store.scan_requests()]

    async def pending(self, timeout: float = 20.0) -> str:
        """The id of the one pending request, once there is one."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for req in await self.broker.store.scan_requests():
                if req.status == "pending":
                    return req.id
            await asyncio.sleep(0.02)
        raise AssertionError("no pending request appeared")


async def serve(settings, keys, svid_key) -> Live:
    redis = aioredis.from_url(settings.redis_url)
    broker = await build(settings, redis=redis, notifiers=[LoggingNotifier()], desks=[])
    app = create_app(settings, broker=broker)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", access_log=False,
                            ws="none")  # as broker.cli.cmd_serve
    server = uvicorn.Server(config)
    # startup()/shutdown() without serve(): its main loop would add a 0.1 s tick to every stop.
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    port = server.servers[0].sockets[0].getsockname()[1]
    return Live(broker, f"http://127.0.0.1:{port}", keys, svid_key, server)


async def stop(live: Live) -> None:
    for c in live.clients:
        await c.aclose()
    await live.server.shutdown()
    await shutdown(live.broker)


@pytest.fixture
def live_settings(tmp_path, redis_url, prefix):
    """Settings of the live broker; a test may replace fields before ``live`` starts it."""
    keys: dict = {}
    agents = []
    for agent_id, owner, team, kind in HARNESS_AGENTS:
        agents.append(_entry(keys, agent_id, owner, team, kind=kind))
    for agent_id, owner, team, can_delegate in DELEGATION_AGENTS:
        agents.append(_entry(keys, agent_id, owner, team, can_delegate=can_delegate))
    # A keyless SPIFFE agent: it authenticates with JWT-SVIDs; the entry gives owner and team.
    agents.append({"id": SPIFFE_AGENT, "owner": "dave", "team": "platform"})
    # A resource server that may call introspection.
    pem, jwk = generate_key("P-256")
    keys["payments-api"] = load_private_key(pem)
    # One write (add_agent fsyncs on every call, which costs more than the tests themselves).
    (tmp_path / "agents.yaml").write_text(yaml.safe_dump({"agents": agents, "resource_servers": [
        {"id": "payments-api", "public_key": jwk, "audiences": RS_AUDIENCES}]}))
    svid_key = ec.generate_private_key(ec.SECP256R1())
    bundle = tmp_path / "bundle.jwks"
    bundle.write_text(json.dumps({"keys": [ec_jwk(svid_key.public_key(), "svid-key-1")]}))
    settings = make_settings(tmp_path, redis_url, prefix, policy_dir=POLICIES, spiffe_bundle=bundle,
                             spiffe_trust_domain=TRUST_DOMAIN, reminder_interval_s=0)
    return {"settings": settings, "keys": keys, "svid_key": svid_key}


def _entry(keys: dict, agent_id: str, owner: str, team: str, *, kind: str = "P-256", can_delegate: bool = False) -> dict:
    pem, jwk = generate_key(kind)
    keys[agent_id] = load_private_key(pem)
    entry = {"id": agent_id, "owner": owner, "team": team, "public_key": jwk}
    if can_delegate:
        entry["can_delegate"] = True
    return entry


@pytest.fixture
async def live(live_settings, redis):
    """The broker of ``live_settings``, served over HTTP."""
    s = await serve(live_settings["settings"], live_settings["keys"], live_settings["svid_key"])
    yield s
    await stop(s)


__all__ = ["ISSUER", "Live", "SPIFFE_AGENT", "TRUST_DOMAIN", "ec_jwk"]
