"""Item 3: introspection throughput (RFC 7662, as a registered resource server) and the
offline verification rate of issued tokens with the published JWKS."""

from __future__ import annotations

import itertools
import os
import time

import jwt
import orjson

from .agents import RESOURCE_SERVER
from .autogrant import JSON, PROPOSAL
from .load import Client, HarnessError, Recorder, closed_loop, summary
from .procs import ISSUER, BusyMeter, CpuMeter

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def issue_tokens(stack, url: str, n: int) -> list[str]:
    """``n`` active grants (proposed, auto-granted, collected, not completed); their tokens."""
    client = Client(16)
    rec = Recorder()
    tokens = []
    try:
        ids = itertools.cycle(stack.agents.ids)
        for _ in range(n):
            a = next(ids)
            body = await client.call(rec, "propose", "POST", url + "/v1/escalations", expect=201, data=PROPOSAL,
                                     headers={**JSON, "Authorization": stack.agents.bearer(a)})
            rid = orjson.loads(body)["id"]
            tok = await client.call(rec, "token", "POST", f"{url}/v1/escalations/{rid}/token",
                                    headers={"Authorization": stack.agents.bearer(a)})
            tokens.append(orjson.loads(tok)["access_token"])
    finally:
        await client.close()
    return tokens


async def run_levels(stack, broker, tokens: list[str], levels: list[int], duration_s: float, warmup_s: float,
                     log) -> list[dict]:
    rows = []
    rate_guess = 1000.0
    bodies = [f"token={t}".encode() for t in tokens]
    for c in levels:
        n = int(max(rate_guess * 2, 100) * (duration_s + warmup_s)) + c
        pool = stack.agents.mint(RESOURCE_SERVER, n)
        turn = itertools.cycle(bodies)
        client = Client(c)

        async def op(rec: Recorder) -> None:
            if not pool:
                raise HarnessError("assertion pool exhausted")
            body = await client.call(rec, "introspect", "POST", broker.url + "/v1/introspect", data=next(turn),
                                     headers={**FORM, "Authorization": pool.pop()})
            if b'"active":true' not in body:
                rec.fail(f"introspect: token not active: {body[:120]!r}")
                raise HarnessError("token not active")

        meters = {"broker": CpuMeter(broker.pid), "redis": CpuMeter(stack.redis_pid), "load": CpuMeter(os.getpid())}
        machine = BusyMeter()
        stats = await stack.commandstats()
        try:
            rec, done, elapsed = await closed_loop(op, concurrency=c, duration_s=duration_s, max_ops=n, warmup_s=warmup_s)
        finally:
            await client.close()
        wall = meters["load"].read()[1]
        server_s = meters["broker"].read()[0] + meters["redis"].read()[0]
        cpu = {k: round(m.read()[0] / wall, 2) for k, m in meters.items()}
        cpu["other"] = round(max(0.0, machine.read() / wall - sum(cpu.values())), 2)
        redis_per_call = stack.per_op(stats, await stack.commandstats(), rec.ops_total)
        rate = done / elapsed
        rate_guess = max(rate_guess, rate)
        rows.append({"concurrency": c, "calls": done, "seconds": round(elapsed, 2), "calls_per_s": round(rate, 1),
                     "latency": summary(rec.latencies["introspect"]), "cpu_cores": cpu,
                     "cpu_us_per_call": round(server_s / rec.ops_total * 1e6, 1),
                     "redis_per_call": redis_per_call, "errors": rec.errors})
        s = rows[-1]["latency"]
        log(f"  introspect c={c}: {rate:.0f}/s p50 {s['p50_ms']} ms p99 {s['p99_ms']} ms "
            f"(cpu broker {cpu['broker']} redis {cpu['redis']} load {cpu['load']})")
    return rows


async def offline_rate(broker_url: str, tokens: list[str], seconds: float) -> dict:
    """Tokens verified per second on one core with pyjwt and the JWKS the broker publishes
    (signature, ``iss``, ``aud``, ``exp``, ``typ``), as a resource server would."""
    client = Client(1)
    try:
        jwks = orjson.loads(await client.call(Recorder(), "jwks", "GET", broker_url + "/.well-known/jwks.json"))
    finally:
        await client.close()
    keys = {k["kid"]: jwt.PyJWK(k) for k in jwks["keys"]}

    def verify(token: str) -> dict:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt":
            raise HarnessError("token typ is not at+jwt")
        key = keys[header["kid"]]
        return jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience="staging/payments-api",
                          issuer=ISSUER, options={"require": ["exp", "iat", "jti", "sub"]})

    for t in tokens[:50]:
        verify(t)  # every token must verify before we time anything
    n = 0
    turn = itertools.cycle(tokens)
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            verify(next(turn))
        n += 100
    elapsed = time.perf_counter() - started
    return {"verifications": n, "seconds": round(elapsed, 2), "per_s_one_core": round(n / elapsed, 1),
            "us_per_verification": round(elapsed / n * 1e6, 1), "alg": next(iter(keys.values())).algorithm_name}
