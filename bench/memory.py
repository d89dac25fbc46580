"""Item 5: Redis bytes per pending request (three evidence items) and per closed request,
and what bounds the total."""

from __future__ import annotations

import asyncio
import itertools

import orjson

from broker.config import DEFAULT_RETENTION_S

from .autogrant import JSON, grant_operation, mint_triples
from .load import Client, HarnessError, Recorder, closed_loop

PENDING_PROPOSAL = orjson.dumps({
    "action": "deploy",
    "target": "prod/payments-api",
    "justification": "roll out the fix for INC-42",
    "duration_s": 600,
    "confidence": 0.9,
    "evidence": [
        {"kind": "ticket", "title": "INC-42", "url": "https://tickets.example.com/INC-42"},
        {"kind": "log", "title": "error rate", "excerpt": "5xx rate 12% since 10:02"},
        {"kind": "diff", "title": "fix", "url": "https://git.example.com/pr/7"},
    ],
})


async def _used(r) -> int:
    return int((await r.info("memory"))["used_memory"])


async def _usage(r, key: str) -> int:
    return int(await r.memory_usage(key, samples=0) or 0)


async def _quiet(r, prefix: str, timeout: float = 60) -> None:
    """Wait until the broker delivered every queued notification (the outbox is empty)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await r.xlen(prefix + "outbox") == 0:
            await asyncio.sleep(0.3)
            if await r.xlen(prefix + "outbox") == 0:
                return
        await asyncio.sleep(0.1)
    raise HarnessError("the outbox did not drain")


async def _entries(r, prefix: str, rid: str) -> list[str]:
    """The audit event types written for one request (read back from the stream)."""
    kinds = []
    for _sid, fields in await r.xrevrange(prefix + "audit", count=20000):
        ev = orjson.loads(fields[b"event"])
        if ev.get("request_id") == rid:
            kinds.append(ev["type"])
    return kinds[::-1]


async def _keys(r, pattern: str) -> list[bytes]:
    return [k async for k in r.scan_iter(match=pattern, count=1000)]


async def _snapshot(r, prefix: str) -> dict:
    return {
        "used": await _used(r),
        "audit": await _usage(r, prefix + "audit"),
        "indexes": await _usage(r, prefix + "deadlines") + await _usage(r, prefix + "reminders"),
        "outbox": await _usage(r, prefix + "outbox"),
    }


def _figures(n: int, before: dict, after: dict, hashes: list[int], jti_bytes: float, jti_count: int) -> dict:
    """Bytes per request: each part from MEMORY USAGE, their sum, and the INFO memory delta."""
    parts = {
        "request_hash_bytes": round(sum(hashes) / n),
        "audit_bytes": round((after["audit"] - before["audit"]) / n),
        "index_bytes": round((after["indexes"] - before["indexes"]) / n),
        "outbox_bytes": round((after["outbox"] - before["outbox"]) / n),
        "replay_key_bytes": round(jti_bytes * jti_count / n),
    }
    return {"total_bytes": sum(parts.values()), **parts,
            "used_memory_delta_bytes": round((after["used"] - before["used"]) / n)}


async def measure(stack, broker, n: int, log) -> dict:
    from .stack import PREFIX  # noqa: PLC0415

    r = stack.client()
    out: dict = {"requests": n}
    try:
        await _quiet(r, PREFIX)
        # ---------------------------------------------------------------- pending
        before = await _snapshot(r, PREFIX)
        jti_before = set(await _keys(r, PREFIX + "jti:*"))
        client = Client(16)
        ids: list[str] = []
        agents = itertools.cycle(stack.agents.ids)
        pool = [stack.agents.bearer(next(agents)) for _ in range(n)]

        async def propose(rec: Recorder) -> None:
            body = await client.call(rec, "propose", "POST", broker.url + "/v1/escalations", expect=201,
                                     data=PENDING_PROPOSAL, headers={**JSON, "Authorization": pool.pop()})
            req = orjson.loads(body)
            if req["status"] != "pending":
                raise HarnessError(f"expected pending, got {req['status']}")
            ids.append(req["id"])

        try:
            await closed_loop(propose, concurrency=16, duration_s=600, max_ops=n, warmup_s=0)
        finally:
            await client.close()
        if len(ids) != n:
            raise HarnessError(f"only {len(ids)} of {n} pending requests were created")
        await _quiet(r, PREFIX)  # the desks were told: the hash now holds its message refs
        after = await _snapshot(r, PREFIX)
        hashes = [await _usage(r, f"{PREFIX}{{req:{rid}}}") for rid in ids]
        jti = [k for k in await _keys(r, PREFIX + "jti:*") if k not in jti_before]
        jti_bytes = sum([await _usage(r, k.decode()) for k in jti[:200]]) / max(1, min(200, len(jti)))
        pending = {**_figures(n, before, after, hashes, jti_bytes, len(jti)),
                   "audit_entries": await _entries(r, PREFIX, ids[0])}
        out["pending"] = pending
        log(f"  pending: {pending['total_bytes']} B per request in all (hash {pending['request_hash_bytes']}, "
            f"audit {pending['audit_bytes']}, indexes {pending['index_bytes']}, replay keys {pending['replay_key_bytes']})")

        # ---------------------------------------------------------------- closed
        before = await _snapshot(r, PREFIX)
        jti_before = set(await _keys(r, PREFIX + "jti:*"))
        triples = mint_triples(stack.agents, n)
        client = Client(16)
        try:
            await closed_loop(grant_operation(client, [broker.url], triples), concurrency=16, duration_s=600,
                              max_ops=n, warmup_s=0)
        finally:
            await client.close()
        await _quiet(r, PREFIX)
        after = await _snapshot(r, PREFIX)
        closed_keys = []
        async for k in r.scan_iter(match=PREFIX + "{req:*", count=1000):
            if (await r.hget(k, "status")) == b"completed":
                closed_keys.append(k)
        if len(closed_keys) != n:
            raise HarnessError(f"expected {n} completed requests, found {len(closed_keys)}")
        hashes = [await _usage(r, k.decode()) for k in closed_keys]
        ttl_s = (await r.pttl(closed_keys[0])) / 1000
        jti = [k for k in await _keys(r, PREFIX + "jti:*") if k not in jti_before]
        closed = {**_figures(n, before, after, hashes, jti_bytes, len(jti)),
                  "audit_entries": await _entries(r, PREFIX, closed_keys[0].decode().split("{req:")[1].rstrip("}")),
                  "retention_days": round(ttl_s / 86400, 2),  # measured: the closed hash's PTTL
                  "retention_default_days": round(DEFAULT_RETENTION_S / 86400, 2)}  # JITGATE_RETENTION_S unset
        out["closed"] = closed
        log(f"  closed: {closed['total_bytes']} B per request in all (hash {closed['request_hash_bytes']}, "
            f"audit {closed['audit_bytes']}), kept {closed['retention_days']} days (JITGATE_RETENTION_S; default "
            f"{closed['retention_default_days']:g} days)")
        out["audit_bytes_per_entry"] = round((after["audit"]) / max(1, await r.xlen(PREFIX + "audit")))
    finally:
        await r.aclose()
    return out
