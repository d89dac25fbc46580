"""Item 1: auto-grant throughput and latency — propose (granted at once by policy
``staging-read``), collect the token, complete — per endpoint, at fixed concurrencies."""

from __future__ import annotations

import itertools
import os
import time

import orjson

from .load import Client, HarnessError, Recorder, closed_loop, summary
from .procs import BusyMeter, CpuMeter

# Three evidence items, as the memory figure uses.
PROPOSAL = orjson.dumps({
    "action": "read",
    "target": "staging/payments-api",
    "justification": "check config drift after the 10:02 deploy",
    "duration_s": 300,
    "evidence": [
        {"kind": "ticket", "title": "OPS-1", "url": "https://tickets.example.com/OPS-1"},
        {"kind": "log", "title": "error rate", "excerpt": "5xx rate 12% since 10:02"},
        {"kind": "diff", "title": "fix", "url": "https://git.example.com/pr/7"},
    ],
})
JSON = {"Content-Type": "application/json"}


def mint_triples(agents, n: int) -> list[tuple[str, str, str, str]]:
    """``n`` × (agent, three bearer assertions): one grant's worth each, agents in turn."""
    ids = itertools.cycle(agents.ids)
    out = []
    for _ in range(n):
        a = next(ids)
        out.append((a, agents.bearer(a), agents.bearer(a), agents.bearer(a)))
    return out


def grant_operation(client: Client, urls: list[str], pool: list):
    """One complete grant against the brokers in turn."""
    turn = itertools.cycle(urls)

    async def op(rec: Recorder) -> None:
        if not pool:
            raise HarnessError("assertion pool exhausted")
        _agent, a1, a2, a3 = pool.pop()
        base = next(turn)
        started = time.perf_counter()
        body = await client.call(rec, "propose", "POST", base + "/v1/escalations", expect=201, data=PROPOSAL,
                                 headers={**JSON, "Authorization": a1})
        req = orjson.loads(body)
        if req.get("status") != "approved":
            rec.fail(f"propose: expected an auto-grant, got {req.get('status')}")
            raise HarnessError("not auto-granted")
        rid = req["id"]
        await client.call(rec, "token", "POST", f"{base}/v1/escalations/{rid}/token", headers={"Authorization": a2})
        await client.call(rec, "complete", "POST", f"{base}/v1/escalations/{rid}/complete", headers={"Authorization": a3})
        rec.add("grant", time.perf_counter() - started)

    return op


async def run_levels(stack, brokers, levels: list[int], duration_s: float, warmup_s: float, first_rate: float,
                     label: str, log) -> list[dict]:
    """Measure each concurrency in ``levels`` against ``brokers`` (round robin)."""
    urls = [b.url for b in brokers]
    rows = []
    rate_guess = first_rate
    for c in levels:
        n = int(max(rate_guess * 2, 50) * (duration_s + warmup_s)) + c
        pool = mint_triples(stack.agents, n)
        client = Client(c)
        meters = {"broker": [CpuMeter(b.pid) for b in brokers], "redis": CpuMeter(stack.redis_pid),
                  "load": CpuMeter(os.getpid())}
        machine = BusyMeter()
        stats = await stack.commandstats()
        try:
            rec, done, elapsed = await closed_loop(grant_operation(client, urls, pool), concurrency=c,
                                                   duration_s=duration_s, max_ops=n, warmup_s=warmup_s)
        finally:
            await client.close()
        wall = meters["load"].read()[1]
        broker_s, redis_s = sum(m.read()[0] for m in meters["broker"]), meters["redis"].read()[0]
        cpu = {
            "broker": round(broker_s / wall, 2),
            "redis": round(redis_s / wall, 2),
            "load": round(meters["load"].read()[0] / wall, 2),
        }
        # Anything else busy on the machine meanwhile (a shared machine is noisy).
        cpu["other"] = round(max(0.0, machine.read() / wall - cpu["broker"] - cpu["redis"] - cpu["load"]), 2)
        await stack.drain_outbox()  # the notifications of the last grants count too
        redis_per_grant = stack.per_op(stats, await stack.commandstats(), rec.ops_total)
        rate = done / elapsed
        rate_guess = max(rate_guess, rate)
        row = {
            "config": label,
            "concurrency": c,
            "grants": done,
            "seconds": round(elapsed, 2),
            "grants_per_s": round(rate, 1),
            "endpoints": {ep: summary(rec.latencies[ep]) for ep in ("propose", "token", "complete", "grant")},
            "cpu_cores": cpu,
            # Server CPU (brokers and Redis) per grant, warm-up included on both sides.
            "cpu_us_per_grant": round((broker_s + redis_s) / rec.ops_total * 1e6, 1),
            "redis_per_grant": redis_per_grant,
            "errors": rec.errors,
        }
        rows.append(row)
        ep = row["endpoints"]
        log(f"  {label} c={c}: {rate:.0f} grants/s, grant p50 {ep['grant']['p50_ms']} ms p99 {ep['grant']['p99_ms']} ms "
            f"(cpu broker {cpu['broker']} redis {cpu['redis']} load {cpu['load']})")
    return rows
