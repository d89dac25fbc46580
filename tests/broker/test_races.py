"""Racing transitions inside one broker (issue 14 items 0 and 1): concurrent tasks on one
event loop read the request before either script runs, which is exactly the window two
replicas race through. The cross-process versions are in tests/scenarios/test_races_processes.py."""

from __future__ import annotations

import asyncio
import random

import jwt
import orjson

from broker.audit import verify
from broker.model import APPROVED
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
