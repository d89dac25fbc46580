"""The limit: the unavoidable parts of each path, measured one by one on the server's core.

Run by the harness as ``python -m bench.limits REDIS_URL`` pinned to the same core as the
broker and Redis; prints one JSON object of microseconds per call. Each part runs in
batches and reports the median batch, so one scheduler hiccup does not move it. Async
parts keep ``INFLIGHT`` calls in flight, as a loaded broker does; their cost includes
the Redis CPU, because Redis shares the core. Everything is written under a throwaway
key prefix that is deleted afterwards.

The HTTP hello-world part needs a client and is measured by the harness itself
(bench/hello.py, server CPU per request).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis.asyncio as aioredis

from broker.clock import new_id
from broker.directory import Directory
from broker.identity import AssertionVerifier, Registry, add_agent, generate_key, load_private_key, make_assertion
from broker.policy import PolicyGate, PrincipalInfo
from broker.redisline import LuaScript, RedisLine
from broker.audit import event
from broker.store import Store
from broker.tokens import KeyRing, build_access_token_claims

from broker.context import build_context

from .agents import KEY_KIND
from .procs import FIXTURES, ISSUER, run_async

INFLIGHT = 16
BATCHES = 5

CONTEXT = build_context(confidence=90, duration_s=300, posture="normal", evidence_count=3, delegation_depth=0,
                        now=12 * 3600)


class Meter:
    """Wall time, and CPU time of this process plus Redis's (Redis shares the core)."""

    def __init__(self, redis_pid: int | None) -> None:
        self.redis = psutil.Process(redis_pid) if redis_pid else None

    def _cpu(self) -> float:
        t = time.process_time()
        if self.redis is not None:
            r = self.redis.cpu_times()
            t += r.user + r.system
        return t

    def start(self) -> tuple[float, float]:
        return time.perf_counter(), self._cpu()

    def stop(self, started: tuple[float, float], n: int) -> tuple[float, float]:
        return (time.perf_counter() - started[0]) / n, (self._cpu() - started[1]) / n


def _median(samples: list[tuple[float, float]]) -> dict:
    return {"wall": round(statistics.median(w for w, _ in samples) * 1e6, 2),
            "cpu": round(statistics.median(c for _, c in samples) * 1e6, 2)}


def sync_part(meter: Meter, fn, n: int) -> dict:
    """Microseconds per call of ``fn()`` (median of batches of ``n``): wall and CPU."""
    for _ in range(max(10, n // 10)):
        fn()  # warm caches
    samples = []
    for _ in range(BATCHES):
        started = meter.start()
        for _ in range(n):
            fn()
        samples.append(meter.stop(started, n))
    return _median(samples)


async def async_part(meter: Meter, make_call, n: int) -> dict:
    """Microseconds per call with ``INFLIGHT`` calls in flight; ``make_call(i)`` returns a coroutine."""
    counter = iter(range(10**9))

    async def run(count: int) -> tuple[float, float]:
        left = count

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await make_call(next(counter))

        started = meter.start()
        await asyncio.gather(*(worker() for _ in range(INFLIGHT)))
        return meter.stop(started, count)

    await run(max(INFLIGHT, n // 10))
    samples = [await run(n) for _ in range(BATCHES)]
    return _median(samples)


async def measure(redis_url: str, n: int, redis_pid: int | None = None) -> dict:
    """Each part's microseconds per call: ``{"wall": {...}, "cpu": {...}}``."""
    meter = Meter(redis_pid)
    redis = aioredis.from_url(redis_url)
    line = RedisLine(redis_url)  # what the broker's hot path talks to Redis through
    prefix = f"benchlimits:{secrets.token_hex(4)}:"
    work = Path(tempfile.mkdtemp(prefix="jitgate-limits-"))
    out: dict[str, dict] = {}
    try:
        # -- one agent-assertion verification (signature, claims, jti SET NX in Redis)
        pem, jwk = generate_key(KEY_KIND)
        key = load_private_key(pem)
        add_agent(work / "agents.yaml", id="limits-agent", owner="dave", team="platform", public_jwk=jwk)
        registry = Registry.load(work / "agents.yaml")
        verifier = AssertionVerifier(registry, line, prefix, audience=ISSUER)
        total = n * (BATCHES + 1)
        bearers = ["Bearer " + make_assertion(key, agent_id="limits-agent", audience=ISSUER, lifetime_s=300)
                   for _ in range(total + INFLIGHT)]
        out["assertion_verify_us"] = await async_part(meter, lambda i: verifier.verify_agent(bearers[i]), n)

        # -- one Cedar decision with pre-parsed policies and entities
        directory = Directory.load(FIXTURES / "approvers.yaml", FIXTURES / "targets.yaml")
        gate = PolicyGate.load(FIXTURES / "policies", directory, [PrincipalInfo("limits-agent", "dave", "platform")])
        decision = gate.decide(agent_id="limits-agent", action="read", target="staging/payments-api", context=CONTEXT)
        assert decision.outcome == "auto_grant", decision
        out["cedar_decide_us"] = sync_part(
            meter, lambda: gate.decide(agent_id="limits-agent", action="read", target="staging/payments-api", context=CONTEXT), n)

        # -- one token signature (and, for introspection, one token verification)
        ring = KeyRing(redis, prefix, os.urandom(32), alg="ES256")
        await ring.ensure()
        now = int(time.time())
        claims = build_access_token_claims(
            issuer=ISSUER, agent_id="limits-agent", audience="staging/payments-api", issued_at=now, expires_at=now + 300,
            jti=new_id(), action="read", target="staging/payments-api", tool=None, dataset=None, request_id=new_id(),
            approvers=[], policies=["staging-read"], proposal_sha256="0" * 64)
        out["token_sign_us"] = sync_part(meter, lambda: ring.sign(claims), n)
        token = ring.sign(claims)
        out["token_verify_us"] = await async_part(meter, lambda i: ring.verify(token, issuer=ISSUER), n)

        # -- one EVALSHA round trip: the real transition script, one audit event, on
        #    throwaway requests (active -> completed, what /complete does)
        store = Store(redis, line, prefix)
        ids = [new_id() for _ in range(2 * (total + INFLIGHT))]
        at = "2026-01-01T00:00:00.000Z"
        sem = asyncio.Semaphore(64)

        async def create(rid: str) -> None:
            async with sem:
                res = await store.create(rid, {"id": rid, "agent": "limits-agent"}, "active",
                                         [event("bench.seed", at, rid)], None, None, 0)
                assert res.ok, res

        await asyncio.gather(*(create(rid) for rid in ids))

        def transition(audit: bool, offset: int):
            async def call(i: int):
                rid = ids[offset + i]
                events = [event("grant.completed", at, rid, {"agent": "limits-agent"})] if audit else []
                res = await store.transition(rid, ["active"], "completed", {"closed_at": "0", "closed_by": "bench"},
                                             events, int(time.time() * 1000), deadline="-")
                assert res.ok, res
            return call

        out["evalsha_transition_us"] = await async_part(meter, transition(True, 0), n)
        # The same without its audit event: what one hash-chained audit entry costs.
        out["evalsha_transition_no_audit_us"] = await async_part(meter, transition(False, total + INFLIGHT), n)
        trivial = LuaScript.of("return 1")
        out["evalsha_trivial_us"] = await async_part(meter, lambda i: line.run_script(trivial, [], []), n)
        out["redis_read_us"] = await async_part(meter, lambda i: line.execute("HGETALL", store.req_key(ids[i % len(ids)])), n)
    finally:
        async for k in redis.scan_iter(match=prefix + "*", count=1000):
            await redis.delete(k)
        await line.aclose()
        await redis.aclose()
    return {"wall": {k: v["wall"] for k, v in out.items()}, "cpu": {k: v["cpu"] for k, v in out.items()}}


def main() -> None:
    redis_url, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    redis_pid = int(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(run_async(measure(redis_url, n, redis_pid))))


if __name__ == "__main__":
    main()
