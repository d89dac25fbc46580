"""Item 4: revocation at scale. ``n`` active grants whose ends fall within a ``window_s``
window; the broker's own scheduler (default sweep interval) revokes them as they end.

Seeding goes through the real ``Lifecycle.submit`` and ``Lifecycle.collect`` (the code the
HTTP handlers call, minus HTTP and the assertion check; bench/seed.py). Each grant is
collected for 600 s; then, as if it had been collected for less, its end is moved into
the window: the request's ``grant_exp`` and ``deadline_ms`` and its score in the deadline
set, exactly the three values ``collect`` writes for an end — at whole seconds, as token
``exp`` claims are, so each second of the window ends ``n / window_s`` grants at once.

Lag is each grant's ``closed_at`` (written by the scheduler's transition) minus its end.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time

from .load import HarnessError, summary
from .procs import ROOT, BusyMeter, CpuMeter, _preexec
from .profile import Profile, summarize
from .stack import PREFIX

async def seed(stack, n: int, log, workers: int = 2, tokens: list[str] | None = None) -> tuple[list[str], float]:
    """``n`` active grants through the lifecycle (bench/seed.py), in ``workers`` processes
    on every core (seeding is set-up, not measured); their ids and the seconds it took
    (their tokens appended to ``tokens`` when given, in the order of the ids)."""
    started = time.monotonic()
    r = stack.client()
    procs, files = [], []
    try:
        for i in range(workers):
            share = n // workers + (1 if i < n % workers else 0)
            out = stack.work / f"seed-{i}.txt"
            files.append(out)
            extra = [str(stack.work / f"seed-{i}.tokens")] if tokens is not None else []
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.seed", str(share), ",".join(stack.agents.ids), str(out), *extra,
                env=stack.env(), cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                preexec_fn=_preexec(stack.plan["all"])))
        waiting = [asyncio.ensure_future(p.wait()) for p in procs]
        while not all(w.done() for w in waiting):
            await asyncio.wait(waiting, timeout=10)
            log(f"    seeded {await r.zcard(PREFIX + 'deadlines')}/{n}")
        for p in procs:
            if p.returncode != 0:
                err = (await p.stderr.read()).decode()[-1500:]
                raise HarnessError(f"seeding failed: {err}")
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await r.aclose()
    ids = [line for f in files for line in f.read_text().split()]
    if tokens is not None:
        tokens.extend(line for i in range(len(files)) for line in (stack.work / f"seed-{i}.tokens").read_text().split())
    return ids, time.monotonic() - started


async def _move_ends(r, ids: list[str], window_start: int, window_s: int) -> dict[str, int]:
    ends: dict[str, int] = {}
    for chunk_start in range(0, len(ids), 2000):
        pipe = r.pipeline(transaction=False)
        for i, rid in enumerate(ids[chunk_start:chunk_start + 2000], start=chunk_start):
            exp = window_start + (i % window_s)
            ends[rid] = exp
            pipe.hset(f"{PREFIX}{{req:{rid}}}", mapping={"grant_exp": str(exp), "deadline_ms": str(exp * 1000)})
            pipe.zadd(PREFIX + "deadlines", {rid: exp * 1000})
        await pipe.execute()
    return ends


async def _idle_cpu(meter: CpuMeter, seconds: float) -> float:
    meter.reset()
    await asyncio.sleep(seconds)
    cpu, wall = meter.read()
    return round(cpu / wall, 4)


async def measure(stack, broker, n: int, window_s: int, drain_bound_s: float, profile_to, log, cpus,
                  idle_s: float = 3) -> dict:
    r = stack.client()
    bm = CpuMeter(broker.pid)
    rm = CpuMeter(stack.redis_pid)
    try:
        idle_empty = await _idle_cpu(bm, idle_s)
        log(f"  seeding {n} grants through Lifecycle.submit + collect …")
        ids, seed_s = await seed(stack, n, log)
        await stack.drain_outbox(300)
        active = await r.zcard(PREFIX + "deadlines")
        if active != n:
            raise HarnessError(f"expected {n} grants in the deadline set, found {active}")
        # Room to move the ends (about 20 µs each, far more on a busy machine) and to watch the idle broker before the first one.
        start = math.ceil(time.time() + n * 150e-6 + idle_s + 1)
        ends = await _move_ends(r, ids, start, window_s)
        if time.time() > start - idle_s - 0.5:
            raise HarnessError("moving the ends took too long; the window would have started")
        idle_full = await _idle_cpu(bm, idle_s)
        log(f"  seeded in {seed_s:.0f} s; broker idle CPU {idle_empty:.3f} cores with 0 grants, "
            f"{idle_full:.3f} with {n} grants none due")
        while time.time() < start - 0.5:
            await asyncio.sleep(0.05)
        prof = Profile(broker.pid, window_s + 3, profile_to, cpus) if profile_to else None
        bm.reset()
        rm.reset()
        machine = BusyMeter()
        stats = await stack.commandstats()
        timeline = []
        bound = start + window_s + drain_bound_s
        remaining = n
        last = (0.0, 0.0, time.monotonic())
        t0 = time.time()
        max_outbox = 0
        while remaining > 0 and time.time() < bound:
            await asyncio.sleep(0.25)
            remaining = await r.zcard(PREFIX + "deadlines")
            outbox = await r.xlen(PREFIX + "outbox")
            max_outbox = max(max_outbox, outbox)
            b_cpu, _ = bm.read()
            r_cpu, _ = rm.read()
            now = time.monotonic()
            dt = now - last[2]
            wall = time.time()
            due = sum(1 for e in range(start, start + window_s) if e <= wall) * (n / window_s)
            timeline.append({"t": round(time.time() - start, 2), "remaining": remaining, "due": int(min(n, due)),
                             "broker_cpu": round((b_cpu - last[0]) / dt, 2), "redis_cpu": round((r_cpu - last[1]) / dt, 2),
                             "outbox": outbox})
            last = (b_cpu, r_cpu, now)
        sweep_wall = time.time() - t0
        # The desks are told of each expiry too: that work is part of a revocation's cost.
        await stack.drain_outbox(drain_bound_s)
        b_cpu, cpu_wall = bm.read()
        r_cpu, _ = rm.read()
        other = max(0.0, machine.read() - b_cpu - r_cpu) / cpu_wall
        redis_per_revocation = stack.per_op(stats, await stack.commandstats(), max(1, n - remaining))
        if prof:
            prof.wait()
        # ------------------------------------------------------------ lags
        lags: list[float] = []
        closed: list[float] = []
        not_revoked = 0
        wrong = []
        for chunk_start in range(0, len(ids), 2000):
            chunk = ids[chunk_start:chunk_start + 2000]
            pipe = r.pipeline(transaction=False)
            for rid in chunk:
                pipe.hmget(f"{PREFIX}{{req:{rid}}}", "status", "closed_at", "closed_by")
            for rid, (status, closed_at, closed_by) in zip(chunk, await pipe.execute()):
                if status != b"expired":
                    not_revoked += 1
                    continue
                if closed_by != b"scheduler":
                    wrong.append(rid)
                closed.append(float(closed_at))
                lags.append(float(closed_at) - ends[rid])
        if wrong:
            raise HarnessError(f"{len(wrong)} grants were closed by someone other than the scheduler")
        busy = [p for p in timeline if p["t"] >= 0]
        result = {
            "grants": n,
            "window_s": window_s,
            "seed_seconds": round(seed_s, 1),
            "seed_path": "Lifecycle.submit + Lifecycle.collect (bench/seed.py, two processes); ends moved into the window",
            "revoked": len(lags),
            "not_revoked_within_bound": not_revoked,
            "bound_s": window_s + drain_bound_s,
            "lag": summary(lags),
            "lag_min_ms": round(min(lags) * 1000, 1) if lags else None,
            "sweep_seconds": round(sweep_wall, 1),
            "broker_cpu_cores_avg": round(b_cpu / cpu_wall, 2),
            "broker_cpu_cores_peak": max((p["broker_cpu"] for p in busy), default=0),
            "redis_cpu_cores_avg": round(r_cpu / cpu_wall, 2),
            "other_cpu_cores_avg": round(other, 2),
            "broker_cpu_seconds": round(b_cpu, 1),
            "redis_cpu_seconds": round(r_cpu, 1),
            "broker_cpu_us_per_revocation": round(b_cpu / max(1, len(lags)) * 1e6),
            "redis_cpu_us_per_revocation": round(r_cpu / max(1, len(lags)) * 1e6),
            # From the first end to the last revocation: at least n / window_s when the sweep keeps up.
            "revocations_per_s": round(len(lags) / max(1e-3, max(closed, default=start) - start), 1),
            "idle_broker_cpu_no_grants": idle_empty,
            "idle_broker_cpu_all_grants_not_due": idle_full,
            "max_outbox_backlog": max_outbox,
            "redis_per_revocation": redis_per_revocation,
            "timeline": timeline,
        }
        if prof:
            result["profile"] = summarize(profile_to) if prof.error is None else {"error": prof.error}
        log(f"  revocation: lag p50 {result['lag']['p50_ms']} ms p99 {result['lag']['p99_ms']} ms "
            f"max {result['lag']['max_ms']} ms; broker {result['broker_cpu_cores_avg']} cores, "
            f"redis {result['redis_cpu_cores_avg']} cores; {not_revoked} not revoked in time")
        return result
    finally:
        await r.aclose()
