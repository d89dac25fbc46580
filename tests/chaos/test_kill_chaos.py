"""Issue 21, item 7: chaos in CI, bounded (about a minute).

Two ``jitgate serve`` processes share one Redis under mixed load: auto-grants collected and
completed or left to expire, two-person approvals through correctly signed Slack clicks sent to
either replica (the Slack Web API is the recording stand-in), and withdrawals. Ten times, at
random moments, one replica is killed with ``kill -9`` and started again. The agents retry what
failed with the same Idempotency-Key, as the client library does.

Afterwards: every request is in exactly one state, and a non-terminal one is legitimately so;
no grant stayed open past its end by more than the revocation bound; each approver counted
once; no request was lost (every proposal the agents were answered for exists); and
``jitgate audit verify`` passes.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import time
from pathlib import Path

import httpx

from broker.identity import make_assertion
from broker.model import STATES, TERMINAL, Request
from support.fake_slack import FakeSlack
from tests.bot.slack import slackreq
from tests.support.harness import ISSUER, write_agents
from tests.support.process import BrokerProcess, jitgate_env, run_cli

SLACK_APPROVERS = Path(__file__).resolve().parents[1] / "bot" / "slack" / "fixtures" / "approvers.yaml"
LOAD_S = 40  # seconds of load; the kills happen inside it
KILLS = 10
WORKERS = 6
REVOCATION_BOUND_S = 3.0  # a grant closes at most this long after its end, kills included
SEED = int(os.environ.get("JITGATE_CHAOS_SEED", "21"))

READ = {"action": "read", "target": "staging/payments-api", "justification": "chaos read", "confidence": 0.9}
DEPLOY = {"action": "deploy", "target": "prod/payments-api", "justification": "chaos deploy", "duration_s": 3,
          "confidence": 0.9, "evidence": [{"kind": "ticket", "title": "INC-21", "url": "https://t.example/INC-21"}]}
USERS = {"bob": "U0BOB", "erin": "U0ERIN"}


def _auth(keys, agent: str) -> dict:
    return {"Authorization": "Bearer " + make_assertion(keys[agent], agent_id=agent, audience=ISSUER)}


class Cluster:
    """The replicas that are up right now; one may be down while it restarts."""

    def __init__(self, env: dict) -> None:
        self.env = env
        self.up: list[BrokerProcess] = []
        self.rng = random.Random(SEED)

    def pick(self) -> BrokerProcess | None:
        return self.rng.choice(self.up) if self.up else None

    async def kill_and_restart(self) -> None:
        victim = self.rng.choice(self.up)
        self.up.remove(victim)
        os.kill(victim.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.proc.wait)
        victim.stop()
        fresh = BrokerProcess(self.env)
        await asyncio.to_thread(fresh.start)
        self.up.append(fresh)


async def _call(cluster: Cluster, http: httpx.AsyncClient, method: str, path: str, *, tries: float = 20.0,
                headers=None, **kw) -> httpx.Response | None:
    """One agent call, retried (on another replica) while the answer is a connection error or a 503;
    ``headers`` may be a function, called per attempt (a fresh assertion each time, as the client does)."""
    deadline = time.monotonic() + tries
    while time.monotonic() < deadline:
        replica = cluster.pick()
        if replica is not None:
            try:
                r = await http.request(method, replica.url + path, headers=headers() if callable(headers) else headers,
                                       **kw)
                if r.status_code != 503:
                    assert r.status_code < 500, (method, path, r.status_code, r.text)
                    return r
            except httpx.TransportError:
                pass
        await asyncio.sleep(0.1)
    return None


async def test_two_replicas_killed_ten_times_under_mixed_load(tmp_path, redis_url, prefix, redis):
    fake = await FakeSlack(bot_token=slackreq.BOT_TOKEN, app_token=slackreq.APP_TOKEN).start()
    keys = write_agents(tmp_path / "agents.yaml")
    env = jitgate_env(
        tmp_path, prefix, base64.urlsafe_b64encode(os.urandom(32)).decode(), redis_url,
        JITGATE_APPROVERS_FILE=str(SLACK_APPROVERS), SLACK_BOT_TOKEN=slackreq.BOT_TOKEN,
        SLACK_SIGNING_SECRET=slackreq.SIGNING_SECRET, SLACK_APPROVALS_CHANNEL="#approvals",
        SLACK_SECURITY_CHANNEL="#security", SLACK_API_URL=fake.api_url, JITGATE_SWEEP_INTERVAL_S="0.2",
    )
    cluster = Cluster(env)
    a, b = BrokerProcess(env), BrokerProcess(env)
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    cluster.up = [a, b]
    answered: dict[str, str] = {}  # request id -> what the agents were last told
    rng = random.Random(SEED + 1)
    stop_at = time.monotonic() + LOAD_S
    try:
        async with httpx.AsyncClient(timeout=10) as http:

            async def propose(agent: str, body: dict, n: str) -> str | None:
                r = await _call(cluster, http, "POST", "/v1/escalations", json=body,
                                headers=lambda: {**_auth(keys, agent), "Idempotency-Key": n})
                if r is None:
                    return None
                assert r.status_code in (200, 201), r.text
                answered[r.json()["id"]] = r.json()["status"]
                return r.json()["id"]

            async def auto_grant(n: str) -> None:
                rid = await propose("reader-bot", {**READ, "duration_s": rng.choice([1, 2, 3])}, n)
                if rid is None:
                    return
                tok = await _call(cluster, http, "POST", f"/v1/escalations/{rid}/token", headers=lambda: _auth(keys, "reader-bot"))
                if tok is not None and tok.status_code == 200 and rng.random() < 0.5:
                    await _call(cluster, http, "POST", f"/v1/escalations/{rid}/complete", headers=lambda: _auth(keys, "reader-bot"))

            async def approval(n: str) -> None:
                rid = await propose("deploy-bot", DEPLOY, n)
                if rid is None:
                    return
                if rng.random() < 0.2:  # the agent changes its mind
                    await _call(cluster, http, "DELETE", f"/v1/escalations/{rid}", headers=lambda: _auth(keys, "deploy-bot"))
                    return
                ref = None
                for _ in range(50):  # the message, unless the replica posting it died (then later)
                    req = Request.from_redis(await redis.hgetall(f"{prefix}{{req:{rid}}}"))
                    refs = [m for m in req.messages if m["transport"] == "slack"]
                    if refs:
                        ref = (refs[0]["destination"], refs[0]["ref"])
                        break
                    await asyncio.sleep(0.1)
                if ref is None:
                    return  # stays pending until the outbox claims the dead replica's delivery
                for who in rng.sample(["bob", "erin"], 2):
                    payload = slackreq.block_actions(USERS[who], "jit_approve", value=rid, channel=ref[0], ts=ref[1])
                    body = slackreq.form_payload(payload)
                    await _call(cluster, http, "POST", "/slack/events", content=body, headers=lambda: slackreq.signed(body))
                    if rng.random() < 0.3:  # a double click
                        await _call(cluster, http, "POST", "/slack/events", content=body, headers=lambda: slackreq.signed(body))
                tok = await _call(cluster, http, "POST", f"/v1/escalations/{rid}/token", headers=lambda: _auth(keys, "deploy-bot"))
                if tok is not None and tok.status_code == 200 and rng.random() < 0.5:
                    await _call(cluster, http, "POST", f"/v1/escalations/{rid}/complete", headers=lambda: _auth(keys, "deploy-bot"))

            async def worker(w: int) -> None:
                i = 0
                while time.monotonic() < stop_at:
                    i += 1
                    n = f"chaos-{w}-{i}"
                    await (approval(n) if rng.random() < 0.3 else auto_grant(n))

            async def killer() -> None:
                moments = sorted(rng.uniform(2, LOAD_S - 4) for _ in range(KILLS))
                started = time.monotonic()
                for m in moments:
                    await asyncio.sleep(max(0.0, started + m - time.monotonic()))
                    await cluster.kill_and_restart()

            await asyncio.gather(killer(), *(worker(w) for w in range(WORKERS)))
            await asyncio.sleep(REVOCATION_BOUND_S + 1)  # the last grants end and are swept
    finally:
        for p in cluster.up:
            await asyncio.to_thread(p.stop)
        await fake.stop()

    now = time.time()
    seen = set()
    counts: dict[str, int] = {}
    async for key in redis.scan_iter(match=f"{prefix}{{req:*}}", count=1000):
        if not key.endswith(b"}"):
            continue  # a request's side keys, not the request
        req = Request.from_redis(await redis.hgetall(key))
        seen.add(req.id)
        counts[req.status] = counts.get(req.status, 0) + 1
        assert req.status in STATES
        approvers = [a["approver"] for a in req.approvals]
        assert len(approvers) == len(set(approvers)), (req.id, req.approvals)  # each approver counted once
        if req.grant_end is not None:
            if req.status not in TERMINAL:
                assert req.grant_end > now - REVOCATION_BOUND_S, (req.id, req.status, now - req.grant_end)
            elif req.status == "expired" and req.closed_at is not None:
                assert req.closed_at - req.grant_end <= REVOCATION_BOUND_S, (req.id, req.closed_at - req.grant_end)
        if req.status == "pending":
            assert len(approvers) < 2, (req.id, req.approvals)
        if len(approvers) == 2:
            counts["two-person approvals"] = counts.get("two-person approvals", 0) + 1
    print(f"chaos: {len(answered)} requests, {KILLS} kills, seed {SEED}: {counts}")
    missing = set(answered) - seen
    assert not missing, f"requests the agents were told about are gone: {sorted(missing)[:5]}"
    assert len(answered) > 50 and counts.get("expired", 0) > 0 and counts.get("completed", 0) > 0, counts
    assert counts.get("two-person approvals", 0) > 10, counts
    verify = run_cli(env, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
