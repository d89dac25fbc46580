"""The hash-chained audit log: appended atomically with every transition, verifiable,
and a failed append fails the transition (fail closed)."""

from __future__ import annotations

import io

import orjson
import pytest

from broker import audit
from broker.errors import AuditError, Conflict, InvalidRequest


async def _flow(harness) -> str:
    rid = (await harness.propose()).json()["id"]
    await harness.approve(rid, "bob")
    await harness.approve(rid, "erin")
    await harness.broker.outbox.drain()
    return rid


async def _verify(harness):
    s = harness.broker.store
    return await audit.verify(s.redis, s.audit_stream, s.audit_head)


async def _rebuild(s, entries, victim=None) -> None:
    """Streams cannot be edited in place: an attacker rebuilds the stream from ``entries``,
    with ``victim``'s event rewritten to name someone else."""
    await s.redis.delete(s.audit_stream)
    for sid, f in entries:
        if sid == victim:
            event = orjson.loads(f[b"event"])
            event["actor"] = {"approver": "mallory"}
            f = {**f, b"event": orjson.dumps(event, option=orjson.OPT_SORT_KEYS)}
        await s.redis.xadd(s.audit_stream, f, id=sid)


async def test_chain_verifies(harness):
    """An untouched chain verifies and counts every entry."""
    await _flow(harness)
    result = await _verify(harness)
    assert result.ok and result.entries >= 5


async def test_modified_entry_is_detected(harness):
    """Tamper evidence: rewriting one entry's event is reported at that entry."""
    await _flow(harness)
    s = harness.broker.store
    entries = await s.redis.xrange(s.audit_stream)
    victim_id = entries[2][0]
    await _rebuild(s, entries, victim_id)
    result = await _verify(harness)
    assert not result.ok and result.bad_entry == victim_id.decode() and "modified" in result.problem


async def test_deleted_entry_is_detected(harness):
    """Tamper evidence: a removed entry breaks the sequence."""
    await _flow(harness)
    s = harness.broker.store
    entries = await s.redis.xrange(s.audit_stream)
    await s.redis.xdel(s.audit_stream, entries[1][0])
    result = await _verify(harness)
    assert not result.ok and result.bad_entry == entries[2][0].decode()


async def test_truncated_tail_is_detected(harness):
    """Tamper evidence: removing the newest entries disagrees with the chain head."""
    await _flow(harness)
    s = harness.broker.store
    entries = await s.redis.xrange(s.audit_stream)
    await s.redis.xdel(s.audit_stream, entries[-1][0])
    result = await _verify(harness)
    assert not result.ok and result.bad_entry == "head"


async def test_failed_audit_append_fails_the_transition(harness):
    """Fail closed: when the audit append fails, the approval does not happen and the request is unchanged."""
    rid = (await harness.propose()).json()["id"]
    await harness.broker.outbox.drain()
    s = harness.broker.store
    before = await s.redis.hgetall(s.req_key(rid))
    await s.redis.delete(s.audit_stream)
    await s.redis.set(s.audit_stream, "not a stream")  # every XADD now fails
    with pytest.raises(AuditError):
        await harness.approve(rid, "bob")
    assert await s.redis.hgetall(s.req_key(rid)) == before
    with pytest.raises(AuditError):
        await harness.life.deny(rid, harness.approver("bob"), channel="cli", reason="x")
    assert (await harness.life.get(rid)).status == "pending"


async def test_failed_audit_append_fails_submission_with_503(harness):
    """Fail closed: a proposal whose audit record cannot be written is refused (503) and not stored."""
    s = harness.broker.store
    await s.redis.set(s.audit_stream, "not a stream")
    r = await harness.propose()
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
    assert await s.scan_requests() == []


async def test_export_writes_json_lines(harness):
    """audit export writes one JSON object per entry, with the hash fields."""
    await _flow(harness)
    s = harness.broker.store
    out = io.StringIO()
    n = await audit.export(s.redis, s.audit_stream, out, s.audit_head)
    lines = out.getvalue().splitlines()
    assert n == len(lines) >= 5
    first = orjson.loads(lines[0])
    assert first["seq"] == 1 and first["prev"] == audit.GENESIS and first["event"]["type"] == "proposal.received"
    # The stream does not store ``prev`` (memory, issue 8); the export carries it, each line's
    # ``prev`` being the line before's ``hash``, so an export verifies on its own.
    rows = [orjson.loads(line) for line in lines]
    assert all(b["prev"] == a["hash"] for a, b in zip(rows, rows[1:]))
    assert all(audit.entry_hash(r["prev"], orjson.dumps(r["event"], option=orjson.OPT_SORT_KEYS), r["seq"]) == r["hash"] for r in rows)
    _sid, fields = (await s.redis.xrange(s.audit_stream, count=1))[0]
    assert set(fields) == {b"seq", b"hash", b"event"}


def test_entry_hash_matches_lua():
    """The Python verifier and the Lua appender define the same hash (known vector)."""
    import hashlib

    prev, ev, seq = "ab" * 32, b'{"type":"x"}', 7
    expected = hashlib.sha256(bytes.fromhex(prev) + hashlib.sha256(ev).digest() + (7).to_bytes(8, "big")).hexdigest()
    assert audit.entry_hash(prev, ev, seq) == expected


# ---------------------------------------------------------------------- retention (issue 8 item 5)
async def _export(harness) -> list[str]:
    s = harness.broker.store
    out = io.StringIO()
    await audit.export(s.redis, s.audit_stream, out, s.audit_head)
    return out.getvalue().splitlines()


async def _trim(harness, before, lines):
    s = harness.broker.store
    plan = await audit.plan_trim(s.redis, s.audit_stream, s.audit_head, before, lines)
    await audit.trim(s.redis, s.audit_stream, s.audit_head, plan, at="2026-11-30T12:00:00.000Z",
                     actor={"operator": "os:test", "channel": "cli"})
    return plan


async def test_trim_after_export_keeps_the_chain_verifiable_from_the_anchor(harness):
    """Audit retention: entries an export holds are removed; verify then starts at the anchor
    (the last removed entry), says how many were trimmed and where the retained chain starts,
    and the trim itself is an entry of the chain."""
    await _flow(harness)
    await _flow(harness)
    s = harness.broker.store
    lines = await _export(harness)
    rows = [orjson.loads(line) for line in lines]
    plan = await _trim(harness, 6, lines)  # seq 1..5 go
    assert (plan.first_seq, plan.last_seq, plan.last_hash) == (1, 5, rows[4]["hash"])
    kept = await s.redis.xrange(s.audit_stream)
    assert [int(f[b"seq"]) for _, f in kept] == list(range(6, len(rows) + 2))  # + the audit.trimmed entry
    assert await audit.anchor(s.redis, s.audit_head) == audit.Anchor(5, rows[4]["hash"])
    result = await _verify(harness)
    assert result.ok and result.trimmed == 5 and result.base == rows[4]["hash"]
    assert result.entries == len(rows) - 5 + 1 and result.seq == len(rows) + 1
    assert "5 older entries trimmed" in str(result) and rows[4]["hash"] in str(result)
    last = orjson.loads(kept[-1][1][b"event"])
    assert last["type"] == "audit.trimmed" and last["data"]["through_seq"] == 5
    assert last["data"]["through_hash"] == rows[4]["hash"] and last["actor"]["operator"] == "os:test"
    # A second trim, with the export made after the first (it starts at the anchor).
    again = await _export(harness)
    assert orjson.loads(again[0])["prev"] == rows[4]["hash"] and orjson.loads(again[0])["seq"] == 6
    await _trim(harness, 8, again)
    result = await _verify(harness)
    assert result.ok and result.trimmed == 7


async def test_trim_without_a_covering_export_is_refused_and_removes_nothing(harness):
    """Audit retention: nothing is removed that the given export does not hold: an export that
    ends too early, one that starts too late, and one of another log are all refused."""
    await _flow(harness)
    s = harness.broker.store
    lines = await _export(harness)
    before = await s.redis.xrange(s.audit_stream)
    head = await s.redis.hgetall(s.audit_head)
    with pytest.raises(InvalidRequest, match="does not cover.*ends at seq 3.*--before 4"):
        await _trim(harness, 6, lines[:3])
    with pytest.raises(InvalidRequest, match="does not cover.*starts at seq 2"):
        await _trim(harness, 4, lines[1:])
    other = [orjson.loads(line) for line in lines]
    other[0]["event"]["at"] = "1999-01-01T00:00:00.000Z"  # a different log, self-consistent
    prev = audit.GENESIS
    for r in other:
        r["prev"] = prev
        r["hash"] = prev = audit.entry_hash(prev, orjson.dumps(r["event"], option=orjson.OPT_SORT_KEYS), r["seq"])
    with pytest.raises(InvalidRequest, match="does not match the audit log at seq 1"):
        await _trim(harness, 3, [orjson.dumps(r).decode() for r in other])
    forged = orjson.loads(lines[1])
    forged["event"]["actor"] = {"approver": "mallory"}  # an edited export does not verify on its own
    with pytest.raises(InvalidRequest, match="line 2 .*does not match its hash"):
        await _trim(harness, 3, [lines[0], orjson.dumps(forged).decode(), *lines[2:]])
    with pytest.raises(InvalidRequest, match="nothing to trim"):
        await _trim(harness, 1, lines)
    assert await s.redis.xrange(s.audit_stream) == before and await s.redis.hgetall(s.audit_head) == head


async def test_trim_by_time_removes_the_entries_appended_before_it(harness):
    """--before TIME: the entries whose stream id (Redis's clock at the append) is earlier go."""
    from datetime import datetime, timezone

    import asyncio

    await _flow(harness)
    await asyncio.sleep(0.01)  # the second flow is appended in a later millisecond
    await _flow(harness)
    s = harness.broker.store
    times = [int(sid.decode().split("-")[0]) for sid, _ in await s.redis.xrange(s.audit_stream)]
    ms = sorted(set(times))[1]
    expected = sum(1 for t in times if t < ms)
    plan = await _trim(harness, datetime.fromtimestamp(ms / 1000, timezone.utc), await _export(harness))
    assert plan.last_seq == expected and (await _verify(harness)).trimmed == expected
    assert audit.parse_before("2026-10-01T00:00:00Z") == datetime(2026, 10, 1, tzinfo=timezone.utc)
    assert audit.parse_before("2026-10-01") == datetime(2026, 10, 1, tzinfo=timezone.utc)
    assert audit.parse_before("120") == 120
    with pytest.raises(InvalidRequest, match="--before takes a seq"):
        audit.parse_before("last tuesday")


async def test_tampering_after_a_trim_is_still_detected(harness):
    """Tamper evidence survives retention: a modified retained entry, a removed first retained
    entry, and an anchor moved by hand (entries removed without `audit trim`) are all reported."""
    await _flow(harness)
    await _flow(harness)
    s = harness.broker.store
    await _trim(harness, 4, await _export(harness))
    kept = await s.redis.xrange(s.audit_stream)
    victim_id = kept[1][0]
    await _rebuild(s, kept, victim_id)
    result = await _verify(harness)
    assert not result.ok and result.bad_entry == victim_id.decode() and "modified" in result.problem
    assert result.trimmed == 3  # it checked from the anchor

    await _rebuild(s, kept[1:])  # the first retained entry removed
    result = await _verify(harness)
    assert not result.ok and result.bad_entry == kept[1][0].decode() and "sequence" in result.problem

    # Someone with Redis access removes entries from the start and moves the anchor to fit:
    # the chain then fits, but no audit.trimmed entry records that anchor.
    await _rebuild(s, kept)
    assert (await _verify(harness)).ok
    await s.redis.xdel(s.audit_stream, kept[0][0], kept[1][0])
    await s.redis.hset(s.audit_head, mapping={"base_seq": kept[1][1][b"seq"], "base_hash": kept[1][1][b"hash"]})
    result = await _verify(harness)
    assert not result.ok and result.bad_entry == "anchor" and "no 'audit.trimmed' entry" in result.problem


async def test_export_after_a_trim_verifies_from_the_anchor_and_continues_the_old_export(harness):
    """An export made after a trim starts at the anchor: on its own it verifies, and its first
    `prev` is the last hash of the export made before the trim (an auditor chains the files)."""
    await _flow(harness)
    first = await _export(harness)
    await _trim(harness, len(first) + 1, first)  # everything exported goes
    s = harness.broker.store
    assert (await _verify(harness)).ok and await s.redis.xlen(s.audit_stream) == 1  # the audit.trimmed entry
    await _flow(harness)
    second = await _export(harness)
    old, new = audit.verify_export(first), audit.verify_export(second)
    assert (old.first_seq, old.start, old.last_seq) == (1, audit.GENESIS, len(first))
    assert new.first_seq == len(first) + 1 and new.start == old.end
    assert new.end == (await _verify(harness)).head and "chained from the genesis" in str(old)
    assert f"chained from hash {old.end}" in str(new)
    # Appends go on from the head as before: the chain grew past the trim and verifies.
    assert (await _verify(harness)).seq == new.last_seq


async def test_a_trim_racing_another_is_refused(harness):
    """Two operators trimming at once: the second plan no longer fits the log and changes nothing."""
    await _flow(harness)
    s = harness.broker.store
    lines = await _export(harness)
    plan_a = await audit.plan_trim(s.redis, s.audit_stream, s.audit_head, 3, lines)
    plan_b = await audit.plan_trim(s.redis, s.audit_stream, s.audit_head, 4, lines)
    await audit.trim(s.redis, s.audit_stream, s.audit_head, plan_a, at="x", actor={"operator": "a"})
    before = await s.redis.xrange(s.audit_stream)
    with pytest.raises(Conflict, match="changed since the check"):
        await audit.trim(s.redis, s.audit_stream, s.audit_head, plan_b, at="x", actor={"operator": "b"})
    assert await s.redis.xrange(s.audit_stream) == before and (await _verify(harness)).trimmed == 2


async def test_a_broken_chain_is_not_trimmed(harness):
    """Fail closed: while the chain does not verify, trim refuses (the evidence stays)."""
    await _flow(harness)
    s = harness.broker.store
    lines = await _export(harness)
    entries = await s.redis.xrange(s.audit_stream)
    await s.redis.xdel(s.audit_stream, entries[-1][0])
    with pytest.raises(Conflict, match="does not verify"):
        await _trim(harness, 3, lines)
    assert await s.redis.xlen(s.audit_stream) == len(entries) - 1


async def test_entries_appended_during_a_verify_do_not_break_it(harness):
    """Verify reads the head first: an append landing while the stream is read is checked
    too, not mistaken for a chain whose head disagrees (the console's header ran into this)."""
    await _flow(harness)
    s = harness.broker.store
    state = await audit._head(s.redis, s.audit_head)  # the head as verify reads it first ...
    await _flow(harness)  # ... then appends land before it reads the stream
    result = await audit._verify(s.redis, s.audit_stream, *state)
    assert result.ok and result.seq == int(await s.redis.hget(s.audit_head, "seq")) > state[1]


async def test_an_export_racing_a_trim_still_chains_from_the_anchor(harness, monkeypatch):
    """A trim landing between the export's read of the anchor and of the stream: the first
    line still carries the anchor it follows, so the export verifies on its own."""
    await _flow(harness)
    await _trim(harness, 3, await _export(harness))
    s = harness.broker.store
    real, calls = audit.anchor, []

    async def before_the_trim(redis, head_key):
        calls.append(head_key)
        return audit.Anchor() if len(calls) == 1 else await real(redis, head_key)

    monkeypatch.setattr(audit, "anchor", before_the_trim)
    lines = await _export(harness)
    assert len(calls) == 2 and audit.verify_export(lines).start == (await real(s.redis, s.audit_head)).hash


async def test_an_event_recorded_outside_a_transition_is_chained_and_read_back_newest_first(harness):
    """"Audit code in one place" (issue 15): what the console records goes through
    ``audit.record`` into the same chain, and ``audit.newest`` links each entry to the one
    before it, as ``verify`` does."""
    await _flow(harness)
    s = harness.broker.store
    before = await audit.length(s.redis, s.audit_head)
    await audit.record(s, "console.signed_in", "2026-12-01T10:00:00.000Z", {"approver": "bob", "channel": "console"},
                       session="abc")
    assert await audit.length(s.redis, s.audit_head) == before + 1
    rows = await audit.newest(s.redis, s.audit_stream, 3)
    assert rows[0].seq == before + 1 and rows[0].body() == {
        "type": "console.signed_in", "at": "2026-12-01T10:00:00.000Z",
        "actor": {"approver": "bob", "channel": "console"}, "data": {"session": "abc"}}
    assert rows[0].prev == rows[1].hash and audit.entry_hash(rows[0].prev, rows[0].event, rows[0].seq) == rows[0].hash
    assert (await _verify(harness)).ok


async def test_extending_a_verified_chain_checks_only_the_new_entries_and_refuses_a_forged_one(harness):
    """Tamper evidence for the console's cheap check (``audit.extend``): appended entries that
    chain on extend the last verified result; an appended entry whose hash does not fit is not
    accepted (None: a full verification decides)."""
    await _flow(harness)
    s = harness.broker.store
    good = await _verify(harness)
    await audit.record(s, "console.signed_out", "2026-12-01T10:00:00.000Z", {"approver": "bob"})
    longer = await audit.extend(s.redis, s.audit_stream, s.audit_head, good)
    assert longer is not None and longer.entries == good.entries + 1 and longer == await _verify(harness)
    # A forged entry appended at the end, with the head moved along so only the hash is wrong.
    await s.redis.xadd(s.audit_stream, {"seq": longer.seq + 1, "hash": "0" * 64, "event": b'{"type":"forged"}'})
    await s.redis.hset(s.audit_head, mapping={"seq": longer.seq + 1, "hash": "0" * 64})
    assert await audit.extend(s.redis, s.audit_stream, s.audit_head, longer) is None
    assert not (await _verify(harness)).ok
