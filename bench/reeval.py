"""Issue 16, item 1: deciding again after a posture change, with ``n`` active grants.

Seeding: ``n`` auto-granted staging reads collected through ``Lifecycle.submit`` and
``collect`` (bench/seed.py, their tokens kept). The fixture policies forbid everything in
posture ``incident`` (``incident-freeze``), so every grant is affected by that change and
none by ``elevated``.

Three measurements:

1. *Re-evaluation cost per open grant, nothing refused*: ``Lifecycle.set_posture("elevated")``
   in this process (the audit entry, the posture and epoch commit, then the walk over every
   open grant: a Cedar call each and the epoch stamp), wall and CPU (this process, and
   Redis) divided by ``n``.
2. *Lag at introspection, epoch path* (``trials`` times): a resource server introspects one
   token over HTTP, one call after another; meanwhile the posture and epoch commit of a
   change to ``incident`` is made (``Store.set_posture``, what ``set_posture`` commits
   before its walk) and the lag is the time from just before that commit to the first
   answer ``{"active": false}``. The posture is set back to ``normal`` after each trial.
   The walk is left out here on purpose: this is the bound introspection alone gives.
3. *The real change under load*: ``jitgate posture incident`` (the operator CLI, its own
   process: audit entry, commit, then the walk revoking every grant in batches) while the
   resource server introspects a sample of tokens round-robin, two calls in flight. Every
   call sent 50 ms or more after the ``posture.changed`` audit time must answer inactive
   (the count that did not is reported; it must be 0), and their latency while the walk runs
   is reported. The walk's length is from that audit time to the last ``requests.redecided``
   batch: how long until every grant is revoked in Redis without anyone introspecting it.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from datetime import datetime

import orjson
import redis.asyncio as aioredis

from .agents import RESOURCE_SERVER
from .load import Client, HarnessError, Recorder, summary
from .procs import ROOT, CpuMeter
from .revocation import seed
from .stack import PREFIX

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SECURITY = "carol"  # the fixture approvers' security member


def _epoch(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


async def _audit(r, kinds: set[str]) -> list[dict]:
    out = []
    for _, f in await r.xrange(PREFIX + "audit"):
        e = orjson.loads(f[b"event"])
        if e["type"] in kinds:
            out.append(e)
    return out


class _Introspector:
    """A resource server introspecting over HTTP with a fresh assertion per call."""

    def __init__(self, stack, url: str, calls: int, concurrency: int = 1) -> None:
        self.stack, self.url = stack, url
        self.pool = stack.agents.mint(RESOURCE_SERVER, calls)
        self.client = Client(concurrency)
        self.rec = Recorder()

    async def active(self, token: str) -> bool:
        if not self.pool:
            raise HarnessError("assertion pool exhausted")
        body = await self.client.call(self.rec, "introspect", "POST", self.url + "/v1/introspect",
                                      data=f"token={token}".encode(), headers={**FORM, "Authorization": self.pool.pop()})
        return b'"active":true' in body

    async def close(self) -> None:
        await self.client.close()


async def _lag_trial(store, rs: _Introspector, token: str) -> float:
    """One token introspected back to back; the change committed meanwhile; the lag."""
    if not await rs.active(token):
        raise HarnessError("a seeded token was inactive before the change")
    changed: list[float] = []

    async def change() -> None:
        await asyncio.sleep(random.uniform(0.002, 0.02))
        changed.append(time.perf_counter())
        await store.set_posture("incident")

    task = asyncio.create_task(change())
    try:
        for _ in range(2000):
            active = await rs.active(token)
            if not active and changed:
                return time.perf_counter() - changed[0]
            if not active:
                raise HarnessError("a token went inactive before the change")
        raise HarnessError("a token stayed active after the change")
    finally:
        await task
        await store.set_posture("normal")


async def measure(stack, broker, n: int, trials: int, sample: int, log) -> dict:
    from broker.app import build, shutdown  # noqa: PLC0415
    from broker.config import Settings  # noqa: PLC0415

    r = stack.client()
    rm = CpuMeter(stack.redis_pid)
    try:
        log(f"  seeding {n} active grants (tokens kept) …")
        tokens: list[str] = []
        ids, seed_s = await seed(stack, n, log, tokens=tokens)
        await stack.drain_outbox(300)
        if len(tokens) != n or await r.zcard(PREFIX + "deadlines") != n:
            raise HarnessError(f"expected {n} active grants and tokens, found {len(tokens)}")
        settings = Settings.from_env(stack.env())
        client = aioredis.from_url(stack.redis_url)
        here = await build(settings, redis=client, notifiers=[], desks=[], start_background=False)
        try:
            life = here.lifecycle
            security = life.operator_approver(SECURITY)
            # 1. the walk with nothing refused
            rm.reset()
            cpu0, t0 = time.process_time(), time.perf_counter()
            await life.set_posture("elevated", security, channel="cli")
            walk_kept_s = time.perf_counter() - t0
            walk_kept_cpu = time.process_time() - cpu0
            redis_kept_cpu = rm.read()[0]
            await life.set_posture("normal", security, channel="cli")
            log(f"  walk over {n} grants, none refused: {walk_kept_s:.2f} s "
                f"({walk_kept_s / n * 1e6:.0f} µs wall, {walk_kept_cpu / n * 1e6:.0f} µs CPU per grant)")

            # 2. lag at introspection, epoch path
            random.shuffle(tokens)
            rs = _Introspector(stack, broker.url, trials * 40 + 100)
            lags = []
            try:
                for i in range(trials):
                    lags.append(await _lag_trial(here.store, rs, tokens[i]))
            finally:
                await rs.close()
            lag = summary(lags)
            log(f"  introspection after the change (epoch path), {trials} trials: "
                f"p50 {lag['p50_ms']} ms p99 {lag['p99_ms']} ms max {lag['max_ms']} ms")
        finally:
            await shutdown(here)

        # 3. the real change under introspection load
        probe = tokens[trials:trials + sample]
        rs = _Introspector(stack, broker.url, sample * 200 + 1000, concurrency=2)
        calls: list[tuple[float, float, bool]] = []  # (sent, answered, active), wall clock
        stop = asyncio.Event()

        async def sampler(share: list[str]) -> None:
            while not stop.is_set():
                for tok in share:
                    sent = time.time()
                    active = await rs.active(tok)
                    calls.append((sent, time.time(), active))
                    if stop.is_set():
                        return

        try:
            workers = [asyncio.create_task(sampler(probe[k::2])) for k in range(2)]
            await asyncio.sleep(0.3)
            if not all(a for _, _, a in calls):
                raise HarnessError("sampled tokens went inactive before the change")
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "broker.cli", "posture", "incident", "--as", SECURITY,
                env=stack.env(), cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(cli.communicate(), timeout=600)
            if cli.returncode != 0:
                raise HarnessError(f"jitgate posture failed: {err.decode()[-1000:]}")
            stop.set()
            await asyncio.gather(*workers)
        finally:
            stop.set()
            await rs.close()
        events = await _audit(r, {"posture.changed", "requests.redecided"})
        changed_at = max(_epoch(e["at"]) for e in events if e["type"] == "posture.changed"
                         and e["data"]["posture"] == "incident")
        batches = [e for e in events if e["type"] == "requests.redecided" and _epoch(e["at"]) >= changed_at - 1
                   and e["data"]["posture"] == "incident"]
        revoked = sum(len(e["data"]["requests"]) for e in batches)
        walk_s = max(_epoch(e["at"]) for e in batches) - changed_at if batches else float("nan")
        left = await r.zcard(PREFIX + "deadlines")
        # The audit time is taken just before the posture and epoch commit (a few ms later):
        # a call sent 50 ms after it that still answers active is a stale answer.
        after = [(sent, answered, active) for sent, answered, active in calls if sent >= changed_at + 0.05]
        stale = sum(1 for _, _, active in after if active)
        during = summary([answered - sent for sent, answered, _ in after if sent <= changed_at + walk_s])
        log(f"  jitgate posture incident: {revoked} revoked by the walk in {walk_s:.2f} s "
            f"({walk_s / max(1, revoked) * 1e6:.0f} µs per grant); {len(after)} introspections after the change, "
            f"{stale} answered active; their latency during the walk p50 {during['p50_ms']} ms p99 {during['p99_ms']} ms")
        return {
            "grants": n,
            "seed_seconds": round(seed_s, 1),
            "walk_none_refused": {"seconds": round(walk_kept_s, 3), "us_per_grant_wall": round(walk_kept_s / n * 1e6, 1),
                                  "us_per_grant_cpu_broker": round(walk_kept_cpu / n * 1e6, 1),
                                  "us_per_grant_cpu_redis": round(redis_kept_cpu / n * 1e6, 1)},
            "lag_epoch_path": lag,
            "introspections_after_change": len(after),
            "introspections_after_change_answered_active": stale,
            "introspection_latency_during_walk": during,
            "sampled_tokens": len(probe),
            "walk_all_refused": {"seconds": round(walk_s, 3), "revoked": revoked,
                                 "us_per_grant_wall": round(walk_s / max(1, revoked) * 1e6, 1),
                                 "batches": len(batches), "left_open": left},
            "load_cpus": sorted(os.sched_getaffinity(0)),
        }
    finally:
        await r.aclose()
