"""Issue 16, item 5: the kill switch at scale. ``n`` active grants are revoked once one by one
(``Lifecycle.revoke`` per grant, as a loop over ``jitgate requests revoke`` would, minus the
process start: one script call and one audit entry each) and once with the kill switch
(``Lifecycle.kill_switch`` with ``all``: batches of ``broker.killswitch.BATCH`` per script
call, one audit entry per batch and one naming all). Both run in this process against the
bench Redis, on grants seeded the same way (bench/seed.py, the real submit and collect); the
figure is the ratio of the two wall times in the same run.

Each revoked grant gets its own state change and outbox entry in both ways, so the desks'
and signal receivers' work is the same; it is not measured here (no broker consumes).
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from broker.app import build, shutdown
from broker.config import Settings
from broker.directory import Approver
from broker.killswitch import BATCH, Selector

from .load import HarnessError
from .procs import CpuMeter
from .revocation import seed
from .stack import PREFIX


async def _entries(r) -> int:
    return int(await r.xlen(PREFIX + "audit"))


async def measure(stack, n: int, log) -> dict:
    settings = Settings.from_env(stack.env())
    client = aioredis.from_url(settings.redis_url)
    broker = await build(settings, redis=client, notifiers=[], desks=[], start_background=False)
    life = broker.lifecycle
    security = Approver(id="bench-security", groups=frozenset({settings.security_group}))
    redis_cpu = CpuMeter(stack.redis_pid)
    out: dict = {"grants": n, "batch": BATCH}
    try:
        for way in ("one_by_one", "kill_switch"):
            log(f"  seeding {n} active grants for the {way.replace('_', ' ')} run …")
            ids, seed_s = await seed(stack, n, log)
            if await client.zcard(PREFIX + "deadlines") != n:
                raise HarnessError(f"expected {n} open grants before the {way} run")
            before = await _entries(client)
            redis_cpu.reset()
            cpu0, t0 = time.process_time(), time.perf_counter()
            if way == "one_by_one":
                for rid in ids:
                    await life.revoke(rid, by="bench-security", reason="bench: one by one", channel="bench")
                ended = n
            else:
                result = await life.kill_switch(Selector.of("all"), security, reason="bench: kill switch", channel="bench")
                ended = len(result.revoked)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            r_cpu, _ = redis_cpu.read()
            left = await client.zcard(PREFIX + "deadlines")
            if ended != n or left:
                raise HarnessError(f"{way}: {ended} of {n} revoked, {left} still open")
            out[way] = {"seconds": round(wall, 3), "us_per_grant": round(wall / n * 1e6, 1),
                        "broker_cpu_us_per_grant": round(cpu / n * 1e6, 1),
                        "redis_cpu_us_per_grant": round(r_cpu / n * 1e6, 1),
                        "audit_entries": await _entries(client) - before, "seed_seconds": round(seed_s, 1)}
            log(f"  {way.replace('_', ' ')}: {n} grants revoked in {wall:.2f} s "
                f"({out[way]['us_per_grant']} µs each, {out[way]['audit_entries']} audit entries)")
    finally:
        await shutdown(broker)
    out["speedup"] = round(out["one_by_one"]["seconds"] / max(1e-9, out["kill_switch"]["seconds"]), 1)
    log(f"  kill switch: {out['speedup']}x faster than one by one at {n} grants")
    return out
