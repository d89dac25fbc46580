"""Racing transitions inside one broker (issue 14 items 0 and 1): concurrent tasks on one
event loop read the request before either script runs, which is exactly the window two
replicas race through. The cross-process versions are in tests/scenarios/test_races_processes.py."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import jwt
import orjson
import pytest

from broker.audit import verify
from broker.errors import AuditError, Forbidden
from broker.model import ACTIVE, APPROVED
from broker.store import with_prelude

ROUNDS = 20


async def _events(store, rid: str) -> list[dict]:
    out = []
    for _, f in await store.redis.xrange(store.audit_stream):
        ev = orjson.loads(f[b"event"])
        if ev.get("request_id") == rid:
            out.append(ev)
    return out


def check_approval_audit(events: list[dict], caps: dict[str, int | None], granted: int) -> None:
    """Every approval entry names its approver and a distinct count 1..N; the approval names
    every approver and the smallest cap (shared with the cross-process test)."""
    recorded = [e for e in events if e["type"] == "approval.recorded"]
    assert sorted(e["data"]["count"] for e in recorded) == list(range(1, len(caps) + 1)), recorded
    assert {e["actor"]["approver"]: e["data"]["duration_s"] for e in recorded} == caps
    approved = [e for e in events if e["type"] == "request.approved"]
    assert len(approved) == 1, approved
    assert sorted(approved[0]["data"]["approvers"]) == sorted(caps)
    assert approved[0]["data"]["approved_duration_s"] == granted
    # The entry that completed the request is the one whose approval came last.
    last = max(recorded, key=lambda e: e["data"]["count"])
    assert approved[0]["actor"]["approver"] == last["actor"]["approver"]


async def test_racing_approvals_keep_the_smallest_cap_and_true_audit_facts(harness):
    """Issue 14 item 0: "the cap is the minimum over every approval recorded; the approvers and
    counts come from the hash" — two last approvals at once never drop a cap nor write count 1 twice."""
    store = harness.broker.store
    for i in range(ROUNDS):
        rid = (await harness.propose()).json()["id"]  # prod-deploy: 2 of sre; bob and erin may
        caps = {"bob": 30, "erin": None} if i % 2 else {"bob": None, "erin": 45}
        order = ["bob", "erin"] if i % 3 else ["erin", "bob"]
        await asyncio.gather(*(harness.approve(rid, who, duration_s=caps[who]) for who in order))
        req = await harness.life.get(rid)
        smallest = min(c for c in caps.values() if c)
        assert req.status == APPROVED and sorted(req.approvers) == ["bob", "erin"]
        assert req.approved_duration_s == smallest, (i, req.approvals)
        check_approval_audit(await _events(store, rid), caps, smallest)
        tok = (await harness.collect(rid)).json()
        claims = jwt.decode(tok["access_token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] <= smallest and tok["expires_in"] <= smallest
        assert sorted(claims["approval"]["approvers"]) == ["bob", "erin"]
    result = await verify(store.redis, store.audit_stream, store.audit_head)
    assert result.ok, str(result)


async def test_three_racing_approvals_of_two_needed_count_two(harness):
    """Issue 14 item 0: of three approvals racing for two slots, two count (1 and 2) and the third is told it came too late."""
    store = harness.broker.store
    rid = (await harness.propose("reader-bot")).json()["id"]  # owner dave: alice, bob and erin may approve
    results = await asyncio.gather(*(harness.approve(rid, who, duration_s=d) for who, d in
                                     (("alice", 20), ("bob", 40), ("erin", 60))), return_exceptions=True)
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 1 and "already approved" in str(refused[0])
    req = await harness.life.get(rid)
    caps = {a["approver"]: a["duration_s"] for a in req.approvals}
    assert len(caps) == 2 and req.approved_duration_s == min(caps.values())
    check_approval_audit(await _events(store, rid), caps, min(caps.values()))


ENCODE = with_prelude("return json_str(ARGV[1])")


async def test_script_json_strings_are_byte_identical_to_orjson(redis):
    """Keep the audit chain format: a string the approve script encodes is exactly what Python's event() writes."""
    rng = random.Random(14)
    samples = ["bob", "slack:U0BOB", 'a"b\\c/d', "é\u2028\x7f", "".join(chr(i) for i in range(32))]
    samples += ["".join(chr(rng.choice([rng.randrange(0, 128), rng.randrange(128, 0x3000)])) for _ in range(rng.randrange(0, 40)))
                for _ in range(200)]
    for s in samples:
        got = await redis.eval(ENCODE, 0, s.encode())
        assert got == orjson.dumps(s), s


async def test_racing_break_glass_confirmations_keep_the_active_limit(harness):
    """Issue 14 item 1: "N concurrent confirmations never exceed JITGATE_BREAKGLASS_MAX_ACTIVE" (2), and
    the active set counts exactly the grants really active."""
    bg = harness.broker.breakglass
    alice = harness.approver("alice")
    results = await asyncio.gather(*(
        bg.grant(alice, subject="me" if i % 2 else "ops-bot", action="rollback", target="prod/payments-api",
                 duration_s=300, reason=f"race {i}", channel="cli") for i in range(8)), return_exceptions=True)
    granted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(granted) == 2 and all(isinstance(r, Forbidden) and "2 active" in str(r) for r in refused), results
    await _assert_counts_match(harness, "alice", active=2, today=2)
    # A later confirmation is refused too (the set did not under-count).
    with pytest.raises(Forbidden, match="2 active"):
        await bg.grant(alice, subject="me", action="rollback", target="prod/payments-api", duration_s=300,
                       reason="one more", channel="cli")


async def test_racing_break_glass_confirmations_keep_the_daily_limit(harness):
    """Issue 14 item 1: racing confirmations never exceed the daily limit either, and the day counts them all."""
    bg = harness.broker.breakglass
    bg.limits = dataclasses.replace(bg.limits, max_active=50, max_per_day=3)
    alice = harness.approver("alice")
    results = await asyncio.gather(*(
        bg.grant(alice, subject="me", action="rollback", target="prod/payments-api", duration_s=300,
                 reason=f"race {i}", channel="cli") for i in range(8)), return_exceptions=True)
    assert len([r for r in results if not isinstance(r, Exception)]) == 3, results
    await _assert_counts_match(harness, "alice", active=3, today=3)


async def _assert_counts_match(harness, engineer: str, *, active: int, today: int) -> None:
    """The limit sets hold exactly the break-glass grants of ``engineer`` that exist and are open."""
    store = harness.broker.store
    mine = [r for r in await store.scan_requests() if r.break_glass and r.engineer == engineer]
    open_ids = sorted(r.id for r in mine if r.status in (APPROVED, ACTIVE))
    assert len(open_ids) == active and len(mine) == today
    in_set = sorted(x.decode() for x in await store.redis.zrange(f"{store.prefix}bg:active:{engineer}", 0, -1))
    assert in_set == open_ids
    assert await store.redis.zcard(f"{store.prefix}bg:day:{engineer}") == today


async def test_a_failing_audit_append_grants_no_break_glass(harness, redis):
    """Fail closed (DESIGN): if the audit append fails, no grant exists and no slot is taken."""
    store = harness.broker.store
    await redis.set(store.audit_head, "not a hash")  # HMGET on a string: the script errors before any write
    with pytest.raises(AuditError):
        await harness.broker.breakglass.grant(harness.approver("alice"), subject="me", action="rollback",
                                              target="prod/payments-api", duration_s=60, reason="x", channel="cli")
    await redis.delete(store.audit_head)
    assert await redis.zcard(f"{store.prefix}bg:active:alice") == 0
    assert [r for r in await store.scan_requests() if r.break_glass] == []
