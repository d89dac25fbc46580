"""A broker built for tests: real Redis (test prefix), real keys, real policies, an
in-process HTTP client, and a manual clock."""

from __future__ import annotations

import dataclasses

import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from broker.app import Broker, build, create_app, shutdown
from broker.clock import ManualClock
from broker.config import Settings
from broker.identity import add_agent, generate_key, load_private_key, make_assertion
from broker.notify import LoggingNotifier
from broker.redisconn import connect, is_sentinel

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ISSUER = "https://jitgate.test"
# The token audiences (targets) the test resource server "payments-api" is registered for.
RS_AUDIENCES = ["prod/payments-api", "staging/payments-api"]

# id, owner, team, key kind
AGENTS = [
    ("deploy-bot", "alice", "platform", "Ed25519"),
    ("reader-bot", "dave", "platform", "P-256"),
    ("ops-bot", "bob", "ops", "Ed25519"),
]


def write_agents(path: Path) -> dict[str, object]:
    """Register the test agents (and one resource server) in ``path``; return their private keys."""
    keys: dict[str, object] = {}
    for agent_id, owner, team, kind in AGENTS:
        pem, jwk = generate_key(kind)
        keys[agent_id] = load_private_key(pem)
        add_agent(path, id=agent_id, owner=owner, team=team, public_jwk=jwk)
    pem, jwk = generate_key("P-256")
    keys["payments-api"] = load_private_key(pem)
    import yaml  # noqa: PLC0415

    doc = yaml.safe_load(path.read_text())
    # Registered for the targets the tests mint tokens for (RFC 7662 section 4: it sees only those).
    doc["resource_servers"] = [{"id": "payments-api", "public_key": jwk, "audiences": RS_AUDIENCES}]
    path.write_text(yaml.safe_dump(doc))
    return keys


# The desks' own settings (bot/slack/settings.py, bot/teams/settings.py), by the names tests
# give them: they reach a desk as its factory reads them, from the broker's environment.
DESK_ENV = {
    "slack_bot_token": "SLACK_BOT_TOKEN", "slack_signing_secret": "SLACK_SIGNING_SECRET",
    "slack_app_token": "SLACK_APP_TOKEN", "slack_approvals_channel": "SLACK_APPROVALS_CHANNEL",
    "slack_security_channel": "SLACK_SECURITY_CHANNEL", "slack_api_url": "SLACK_API_URL",
    "microsoft_app_id": "MICROSOFT_APP_ID", "microsoft_app_password": "MICROSOFT_APP_PASSWORD",
    "microsoft_app_tenant_id": "MICROSOFT_APP_TENANT_ID", "microsoft_app_type": "MICROSOFT_APP_TYPE",
    "teams_approvals_conversation": "TEAMS_APPROVALS_CONVERSATION",
    "teams_security_conversation": "TEAMS_SECURITY_CONVERSATION",
    "teams_openid_metadata_url": "TEAMS_OPENID_METADATA_URL", "teams_token_issuer": "TEAMS_TOKEN_ISSUER",
    "teams_login_url": "TEAMS_LOGIN_URL",
}


def with_desk_env(settings: Settings, **desk) -> Settings:
    """``settings`` with these desk settings (by their :data:`DESK_ENV` names) in its environment."""
    env = dict(settings.env)
    for name, value in desk.items():
        env[DESK_ENV[name]] = value.reveal() if hasattr(value, "reveal") else value
    return dataclasses.replace(settings, env=env)


def make_settings(tmp: Path, redis_url: str, prefix: str, **overrides) -> Settings:
    values = dict(
        issuer=ISSUER,
        key_encryption_key=os.urandom(32),
        redis_url=redis_url,
        redis_prefix=prefix,
        data_dir=tmp / "data",
        policy_dir=FIXTURES / "policies",
        agents_file=tmp / "agents.yaml",
        approvers_file=FIXTURES / "approvers.yaml",
        targets_file=FIXTURES / "targets.yaml",
        sweep_interval_s=0.05,
        # Off unless a test turns them on (tests/broker/test_rate_limits.py): many tests open
        # dozens of requests for one target within a minute of the manual clock.
        agent_proposals_per_min=0,
        target_proposals_per_min=0,
        max_open_per_agent=0,
        # Off unless a test turns it on (tests/broker/test_dedupe.py, tests/bot/slack/test_dedupe.py):
        # many tests propose the same task several times to get several requests.
        dedupe=False,
        # Off unless a test turns it on (tests/broker/test_alternate_paths.py): many tests deny
        # and then propose other actions on the same target, which would alert security.
        alternate_path_window_s=0,
    )
    desk = {k: overrides.pop(k) for k in list(overrides) if k in DESK_ENV}
    values.update(overrides)
    return with_desk_env(Settings(**values), **desk)


@dataclass
class Harness:
    settings: Settings
    keys: dict
    clock: ManualClock
    broker: Broker | None = None
    client: httpx.AsyncClient | None = None
    notifier: LoggingNotifier = field(default_factory=LoggingNotifier)
    desks: list | None = None  # None: the desks the settings configure (entry points)

    async def start(self, *, background: bool = True) -> "Harness":
        """(Re)build the broker on the same Redis and settings: a restart."""
        url = self.settings.redis_url
        redis = connect(url) if is_sentinel(url) else aioredis.from_url(url)
        self.broker = await build(self.settings, redis=redis, clock=self.clock, notifiers=[self.notifier],
                                  desks=self.desks, start_background=background)
        app = create_app(self.settings, broker=self.broker)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
        return self

    async def stop(self) -> None:
        if self.client:
            await self.client.aclose()
            self.client = None
        if self.broker:
            await shutdown(self.broker)
            self.broker = None

    async def expire_after(self, seconds: float) -> int:
        """Advance the clock by ``seconds`` and sweep: how many requests the sweeper expired. The
        harness runs the scheduler's jobs, so the background sweep may get there first; it is
        counted too (sweeps in one process take turns, so every sweep begun before this one has
        finished when it returns)."""
        sched = self.broker.scheduler
        before = sched.swept
        self.clock.advance(seconds)
        await sched.sweep()
        return sched.swept - before

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def life(self):
        return self.broker.lifecycle

    def auth(self, agent_id: str, **kw) -> dict:
        token = make_assertion(self.keys[agent_id], agent_id=agent_id, audience=ISSUER, now=self.clock.now(), **kw)
        return {"Authorization": f"Bearer {token}"}

    async def propose(self, agent_id: str = "deploy-bot", headers: dict | None = None, **body) -> httpx.Response:
        proposal = {
            "action": "deploy",
            "target": "prod/payments-api",
            "justification": "roll out fix for INC-42",
            "duration_s": 600,
            "confidence": 0.9,
            "evidence": [
                {"kind": "ticket", "title": "INC-42", "url": "https://tickets.example.com/INC-42"},
                {"kind": "log", "title": "error rate", "excerpt": "5xx rate 12% since 10:02"},
                {"kind": "diff", "title": "fix", "url": "https://git.example.com/pr/7"},
            ],
        }
        proposal.update(body)
        return await self.client.post("/v1/escalations", json=proposal, headers={**self.auth(agent_id), **(headers or {})})

    async def status(self, rid: str, agent_id: str = "deploy-bot", wait: float | None = None) -> httpx.Response:
        params = {"wait": wait} if wait is not None else None
        return await self.client.get(f"/v1/escalations/{rid}", params=params, headers=self.auth(agent_id))

    async def collect(self, rid: str, agent_id: str = "deploy-bot") -> httpx.Response:
        return await self.client.post(f"/v1/escalations/{rid}/token", headers=self.auth(agent_id))

    async def complete(self, rid: str, agent_id: str = "deploy-bot") -> httpx.Response:
        return await self.client.post(f"/v1/escalations/{rid}/complete", headers=self.auth(agent_id))

    async def introspect(self, token: str) -> httpx.Response:
        return await self.client.post("/v1/introspect", data={"token": token}, headers=self.auth("payments-api"))

    def approver(self, approver_id: str):
        return self.broker.directory.approver(approver_id)

    async def approve(self, rid: str, approver_id: str, **kw):
        return await self.life.approve(rid, self.approver(approver_id), channel="cli", platform_user="test", **kw)
