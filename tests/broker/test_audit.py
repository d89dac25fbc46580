"""The audit log (issue 18): events sequenced atomically with every transition, sealed outside
the scripts into an RFC 9162 Merkle tree with signed checkpoints that also leave Redis; tamper
evidence against someone who can write to Redis, proofs for one grant, fail closed, retention
and the migration of the former hash chain."""

from __future__ import annotations

import asyncio
import io

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker import audit
from broker.errors import AuditError, Conflict, InvalidRequest
from broker.notify import LoggingNotifier
from broker.translog import Checkpoint, Frontier, leaf_hash


@pytest.fixture
async def quiet(harness):
    """The harness with its scheduler (and so the background sealer) stopped: each test seals
    when it wants a checkpoint, so the checkpoints bracket exactly the entries it chose."""
    await harness.broker.scheduler.stop()
    return harness


def _log(h) -> audit.AuditLog:
    return h.broker.lifecycle.audit


async def _seal(h) -> int:
    return await _log(h).seal(force_checkpoint=True)


async def _flow(h) -> str:
    rid = (await h.propose()).json()["id"]
    await h.broker.outbox.drain()
    await _seal(h)
    await h.approve(rid, "bob")
    await _seal(h)
    await h.approve(rid, "erin")
    await h.broker.outbox.drain()
    await _seal(h)
    return rid


def _recorded(h) -> list[tuple[int, str]]:
    """The checkpoints the file sink wrote (what an auditor keeps outside Redis)."""
    with open(h.settings.audit_checkpoint_path) as f:
        return audit.read_checkpoints(f)


async def _verify(h, checkpoints=None):
    s = h.broker.store
    return await audit.verify(s.redis, s.audit_stream, s.audit_head, _log(h).key, checkpoints)


async def _rewrite(s, rows) -> None:
    """What an insider with write access to Redis does: rebuild the stream from ``rows``."""
    await s.redis.delete(s.audit_stream)
    for sid, f in rows:
        await s.redis.xadd(s.audit_stream, f, id=sid)


async def test_a_sealed_log_verifies_against_its_signed_checkpoints(quiet):
    """Issue 18.1/18.2: every sealed entry is checked, the root matches the latest signed
    checkpoint, and the log is proven consistent with every checkpoint the file sink recorded."""
    await _flow(quiet)
    result = await _verify(quiet, _recorded(quiet))
    assert result.ok, result
    assert result.entries >= 5 and result.sealed == result.entries and result.unsealed == 0
    assert result.checkpoints == len(_recorded(quiet)) >= 3
    assert "unsealed tail: none" in str(result)


async def test_the_unsealed_tail_and_its_age_are_reported(quiet):
    """Issue 18.1: `audit verify` reports entries not sealed yet and how old the oldest is."""
    await _flow(quiet)
    await quiet.propose()
    result = await _verify(quiet)
    assert result.ok and result.unsealed >= 1 and result.tail_age_ms >= 0
    assert f"unsealed tail: {result.unsealed} entries" in str(result)


async def test_the_scripts_store_no_hash_only_the_sequenced_event(quiet):
    """Issue 18.1: the transition scripts sequence the raw event and compute no hash."""
    await quiet.propose()
    s = quiet.broker.store
    _sid, fields = (await s.redis.xrange(s.audit_stream, count=1))[0]
    assert set(fields) == {b"seq", b"event"}
    assert set(await s.redis.hgetall(s.audit_head)) == {b"seq"}


async def test_the_insider_rewrite_of_an_approval_is_detected_and_named(quiet):
    """Issue 18.2 (the insider rewrite): one approval.recorded entry is edited (bob -> alice),
    the tree's compact state recomputed and the stream and state rewritten. Without the audit
    key no checkpoint can be re-signed: verify names the entry, against the checkpoint in Redis
    and against those the file sink recorded."""
    await _flow(quiet)
    s = quiet.broker.store
    rows = await s.redis.xrange(s.audit_stream)
    victim = next(i for i, (_sid, f) in enumerate(rows) if b'"approval.recorded"' in f[b"event"] and b'"bob"' in f[b"event"])
    sid, f = rows[victim]
    forged = f[b"event"].replace(b'"bob"', b'"alice"')
    rows[victim] = (sid, {**f, b"event": forged})
    await _rewrite(s, rows)
    # ... and recompute the tree's compact state from the rewritten entries.
    frontier = Frontier()
    for _sid, g in rows:
        frontier.append(leaf_hash(g[b"event"]))
    await s.redis.hset(s.audit_tree, mapping={"frontier": frontier.encode(), "size": frontier.size})
    result = await _verify(quiet)
    assert not result.ok and "latest signed checkpoint" in result.problem  # the range it brackets
    result = await _verify(quiet, _recorded(quiet))
    assert not result.ok and "changed after the checkpoint" in result.problem
    assert result.bad_entry == f"seq {victim + 1} (entry {sid.decode()})", result


async def test_a_deleted_entry_is_detected_and_named(quiet):
    """Issue 18 (done when): a removed entry breaks the sequence at the entry after it."""
    await _flow(quiet)
    s = quiet.broker.store
    rows = await s.redis.xrange(s.audit_stream)
    await s.redis.xdel(s.audit_stream, rows[1][0])
    result = await _verify(quiet)
    assert not result.ok and result.bad_entry == rows[2][0].decode() and "removed" in result.problem


async def test_a_deleted_and_renumbered_entry_is_detected(quiet):
    """Issue 18 (done when): an entry removed and the later ones renumbered no longer match the checkpoints."""
    await _flow(quiet)
    s = quiet.broker.store
    rows = await s.redis.xrange(s.audit_stream)
    kept = [(sid, {**f, b"seq": str(i + 1).encode()}) for i, (sid, f) in enumerate(rows[:1] + rows[2:])]
    await _rewrite(s, kept)
    await s.redis.hset(s.audit_head, "seq", len(kept))
    result = await _verify(quiet, _recorded(quiet))
    # seq 1 is the start-up policy.loaded entry (issue 18.5), kept: the change starts at seq 2.
    assert not result.ok and "changed after the checkpoint" in result.problem and result.bad_entry.startswith("seq 2 to ")


async def test_a_reordered_pair_is_detected_and_named(quiet):
    """Issue 18 (done when): two adjacent entries swapped (their seqs kept in order) no longer match the checkpoints."""
    await _flow(quiet)
    s = quiet.broker.store
    rows = await s.redis.xrange(s.audit_stream)
    (a_id, a), (b_id, b) = rows[0], rows[1]
    rows[0], rows[1] = (a_id, {**a, b"event": b[b"event"]}), (b_id, {**b, b"event": a[b"event"]})
    await _rewrite(s, rows)
    result = await _verify(quiet, _recorded(quiet))
    assert not result.ok and "seq 1" in result.bad_entry and "reordered" in result.problem


async def test_a_replaced_checkpoint_is_detected(quiet):
    """Issue 18 (done when): a checkpoint replaced by one not signed with the audit key is refused,
    in Redis and in the recorded file, and named."""
    await _flow(quiet)
    s = quiet.broker.store
    other = ed25519.Ed25519PrivateKey.generate()
    log = _log(quiet)
    frontier = Frontier()
    for _sid, f in await s.redis.xrange(s.audit_stream):
        frontier.append(leaf_hash(f[b"event"].replace(b'"bob"', b'"alice"')))
    forged = Checkpoint(log.key.origin, frontier.size, frontier.root(), "2026-12-04T00:00:00.000Z").sign(other)
    recorded = _recorded(quiet)
    line = recorded[1][0]
    recorded[1] = (line, forged)
    result = await _verify(quiet, recorded)
    assert not result.ok and result.bad_entry == f"checkpoint line {line}" and "replaced or forged" in result.problem
    await s.redis.hset(s.audit_tree, "checkpoint", forged)
    result = await _verify(quiet)
    assert not result.ok and result.bad_entry == "checkpoint" and "not signed by the audit key" in result.problem


async def test_a_rolled_back_log_is_detected_by_a_newer_recorded_checkpoint(quiet):
    """Issue 18.2: Redis restored to an older state (entries and checkpoint) does not extend
    what a sink recorded later."""
    await _flow(quiet)
    s = quiet.broker.store
    old_tree = await s.redis.hgetall(s.audit_tree)
    old_rows = await s.redis.xrange(s.audit_stream)
    old_head = await s.redis.hget(s.audit_head, "seq")
    await _flow(quiet)
    await _rewrite(s, old_rows)
    await s.redis.delete(s.audit_tree)
    await s.redis.hset(s.audit_tree, mapping=old_tree)
    await s.redis.hset(s.audit_head, "seq", old_head)
    assert (await _verify(quiet)).ok  # on its own the old state is self-consistent ...
    result = await _verify(quiet, _recorded(quiet))
    assert not result.ok and "rolled back" in result.problem  # ... the sink remembers more


async def test_a_proof_bundle_verifies_offline_and_fails_when_any_byte_changes(quiet):
    """Issue 18.3: `audit prove` gives one grant's entries with inclusion proofs and the
    checkpoint; it verifies with only the audit verifier key, and every changed byte fails it."""
    rid = await _flow(quiet)
    await _flow(quiet)  # another grant in the same tree
    s = quiet.broker.store
    bundle = await audit.prove(s.redis, s.audit_stream, request_id=rid)
    raw = audit.bundle_bytes(bundle)
    vkey = _log(quiet).key.verifier_key
    ok = audit.check_bundle(raw, vkey)
    assert ok.ok, ok
    assert len(bundle["entries"]) >= 4 and all(orjson.loads(e["event"])["request_id"] == rid for e in bundle["entries"])
    for i in range(len(raw)):
        changed = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:]
        assert not audit.check_bundle(changed, vkey).ok, f"byte {i} changed and the bundle still verified"
    other = ed25519.Ed25519PrivateKey.generate()
    from broker.translog import raw_public, verifier_key

    assert not audit.check_bundle(raw, verifier_key(_log(quiet).key.origin, raw_public(other.public_key()))).ok


async def test_a_bundle_by_token_id_holds_the_whole_grant(quiet):
    """Issue 18.3: `--jti` finds the grant by its token and proves all its entries."""
    rid = await _flow(quiet)
    r = await quiet.collect(rid)
    assert r.status_code == 200, r.text
    await _seal(quiet)
    jti = (await quiet.life.get(rid)).grant_jti
    s = quiet.broker.store
    bundle = await audit.prove(s.redis, s.audit_stream, jti=jti)
    assert bundle["request"] == rid and bundle["jti"] == jti
    assert audit.check_bundle(audit.bundle_bytes(bundle), _log(quiet).key.verifier_key).ok


async def test_sealing_that_lags_refuses_new_grants_with_503_and_alerts_security(quiet):
    """Issue 18.4 (fail closed, like Vault): while entries wait unsealed longer than the bound,
    a proposal gets a 503 problem with Retry-After, and security is told once through the desks."""
    seen = []

    class Recorder(LoggingNotifier):
        name = "recorder"

        async def alert_security(self, notice):
            seen.append((notice.kind, notice.text))

    quiet.broker.lifecycle.notifiers.append(Recorder())
    log = _log(quiet)
    log.max_lag_ms = 300
    await quiet.propose()  # unsealed: nobody seals (the scheduler is stopped)
    s = quiet.broker.store
    await asyncio.sleep(0.5)
    await log.refresh()
    r = await quiet.propose()
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert "audit" in r.json()["detail"] and "lags" in r.json()["detail"]
    await quiet.broker.outbox.drain()
    assert [k for k, _ in seen] == ["audit.failing"] and "new grants are refused" in seen[0][1]
    await log.refresh()  # still failing: not said twice
    await _seal(quiet)
    await log.refresh()
    await quiet.broker.outbox.drain()
    assert [k for k, _ in seen] == ["audit.failing", "audit.recovered"]
    assert (await quiet.propose()).status_code == 201
    types = [orjson.loads(f[b"event"])["type"] for _sid, f in await s.redis.xrange(s.audit_stream)]
    assert types.count("audit.failing") == 1 and types.count("audit.recovered") == 1


async def test_every_sink_failing_refuses_new_grants(quiet):
    """Issue 18.4: when no sink has accepted a checkpoint for longer than the bound, new grants are refused."""
    from broker.auditsinks import Sinks, WitnessSink

    log = _log(quiet)
    log.sinks = Sinks([WitnessSink("http://127.0.0.1:9/witness")])  # nothing listens there
    log.sink_grace_ms = 200
    await quiet.propose()
    await _seal(quiet)
    s = quiet.broker.store
    assert await s.redis.hget(s.audit_tree, "unsunk_since")
    await s.redis.hset(s.audit_tree, "unsunk_since", 1)
    await log.refresh()
    r = await quiet.propose()
    assert r.status_code == 503 and "no checkpoint sink" in r.json()["detail"]
    await log.sinks.close()


async def test_a_stream_gap_before_sealing_stops_the_sealer(quiet):
    """Issue 18.1: the sealer never seals over a removed entry; the log then fails closed."""
    await _seal(quiet)  # the start-up policy.loaded entry (issue 18.5), if the background sealer left it
    sealed = (await audit.TreeState.read(quiet.broker.redis, quiet.broker.store.audit_tree)).size
    await quiet.propose()
    await quiet.propose()
    s = quiet.broker.store
    rows = await s.redis.xrange(s.audit_stream)
    await s.redis.xdel(s.audit_stream, rows[sealed][0])  # the first entry not sealed yet
    with pytest.raises(AuditError, match=f"seq {sealed + 2} where {sealed + 1} was expected"):
        await _seal(quiet)
    h = await _log(quiet).refresh()
    assert not h.ok and "cannot be sealed" in h.reason


async def test_failed_audit_append_fails_the_transition(quiet):
    """Fail closed: when the audit append fails, the approval does not happen and the request is unchanged."""
    rid = (await quiet.propose()).json()["id"]
    await quiet.broker.outbox.drain()
    s = quiet.broker.store
    before = await s.redis.hgetall(s.req_key(rid))
    await s.redis.delete(s.audit_stream)
    await s.redis.set(s.audit_stream, "not a stream")  # every XADD now fails
    with pytest.raises(AuditError):
        await quiet.approve(rid, "bob")
    assert await s.redis.hgetall(s.req_key(rid)) == before


# ---------------------------------------------------------------------- retention
async def _export(h) -> list[str]:
    s = h.broker.store
    out = io.StringIO()
    await audit.export(s.redis, s.audit_stream, out, s.audit_head)
    return out.getvalue().splitlines()


async def _trim(h, before, lines):
    s = h.broker.store
    plan = await audit.plan_trim(s.redis, s.audit_stream, s.audit_head, before, lines, _log(h).key)
    await audit.trim(s.redis, s.audit_stream, s.audit_head, plan, at="2026-12-04T00:00:00.000Z",
                     actor={"operator": "os:test"})
    return plan


async def test_trim_keeps_the_compact_state_so_the_rest_still_proves(quiet):
    """Issue 18.8: trimmed entries leave the tree's compact state behind; the retained log still
    verifies against the checkpoints signed before and after, and a later grant still proves."""
    await _flow(quiet)
    rid = await _flow(quiet)
    lines = await _export(quiet)
    plan = await _trim(quiet, 6, lines)
    assert (plan.first_seq, plan.last_seq) == (1, 5)
    await _seal(quiet)
    result = await _verify(quiet, _recorded(quiet))
    assert result.ok, result
    assert result.trimmed == 5 and result.older >= 1
    s = quiet.broker.store
    last = orjson.loads((await s.redis.xrevrange(s.audit_stream, count=1))[0][1][b"event"])
    assert last["type"] == "audit.trimmed" and last["data"]["through_seq"] == 5
    assert last["data"]["frontier"] == plan.frontier.encode()
    bundle = await audit.prove(s.redis, s.audit_stream, request_id=rid)
    assert audit.check_bundle(audit.bundle_bytes(bundle), _log(quiet).key.verifier_key).ok
    # Tampering after a trim is still caught.
    rows = await s.redis.xrange(s.audit_stream)
    sid, f = rows[0]
    rows[0] = (sid, {**f, b"event": f[b"event"].replace(b'"at"', b'"at" ')})
    await _rewrite(s, rows)
    assert not (await _verify(quiet, _recorded(quiet))).ok


async def test_trim_refuses_what_no_checkpoint_covers(quiet):
    """Issue 18.8: `audit trim` never removes an entry no signed checkpoint covers (nor one the
    export file lacks); nothing is removed then."""
    await _flow(quiet)
    await quiet.propose()  # sequenced, not sealed
    lines = await _export(quiet)
    s = quiet.broker.store
    before = await s.redis.xrange(s.audit_stream)
    sealed = (await _verify(quiet)).sealed
    with pytest.raises(InvalidRequest, match="not covered by a signed checkpoint"):
        await _trim(quiet, sealed + 2, lines)
    with pytest.raises(InvalidRequest, match="does not cover"):
        await _trim(quiet, 4, lines[:2])
    after = await s.redis.xrange(s.audit_stream)
    assert after[:len(before)] == before  # nothing removed (the outbox may have appended since)


async def test_a_broken_log_is_not_trimmed(quiet):
    """Issue 18.8: a log that does not verify is not trimmed (investigate first)."""
    await _flow(quiet)
    lines = await _export(quiet)
    s = quiet.broker.store
    rows = await s.redis.xrange(s.audit_stream)
    await s.redis.xdel(s.audit_stream, rows[2][0])
    with pytest.raises(Conflict, match="does not verify"):
        await _trim(quiet, 2, lines)


async def test_an_export_verifies_offline_and_an_edit_is_named(quiet):
    """An export file verifies line by line on its own; an edited line is named."""
    await _flow(quiet)
    lines = await _export(quiet)
    ok = audit.verify_export(lines)
    assert ok.entries == len(lines) and ok.first_seq == 1 and ok.root
    row = orjson.loads(lines[1])
    row["event"] = row["event"].replace('"at":"', '"at":"1')
    with pytest.raises(audit.ExportError, match="line 2"):
        audit.verify_export([lines[0], orjson.dumps(row).decode(), *lines[2:]])


# ---------------------------------------------------------------------- migration
async def _legacy_log(s, n: int) -> tuple[int, str]:
    """A log as the former Lua chain wrote it: each entry with its chain hash, the head holding both."""
    prev = audit.GENESIS
    for seq in range(1, n + 1):
        ev = audit.event("proposal.received", f"2026-11-01T00:00:0{seq}.000Z", f"old{seq}", {"agent": "deploy-bot"})
        digest = audit.entry_hash(prev, ev, seq)
        await s.redis.xadd(s.audit_stream, {"seq": seq, "hash": digest, "event": ev})
        prev = digest
    await s.redis.hset(s.audit_head, mapping={"seq": n, "hash": prev})
    return n, prev


async def test_a_former_hash_chained_log_is_sealed_with_its_old_head_recorded(quiet):
    """Issue 18 (migration): an existing chain is verified once, then sealed under the new
    scheme; the audit.migrated entry, itself sealed, records the old head."""
    s = quiet.broker.store
    await s.redis.delete(s.audit_stream, s.audit_head, s.audit_tree)
    # A log from before the Merkle tree has no checkpoints (the start-up entry's, if the
    # background sealer published one, belonged to the log just removed).
    open(quiet.settings.audit_checkpoint_path, "w").close()
    seq, head = await _legacy_log(s, 4)
    await quiet.propose()  # written by the new scripts before the first seal
    await _seal(quiet)
    await _seal(quiet)
    result = await _verify(quiet, _recorded(quiet))
    assert result.ok and result.entries == result.sealed > 5, result
    events = [orjson.loads(f[b"event"]) for _sid, f in await s.redis.xrange(s.audit_stream)]
    assert [e["request_id"] for e in events[:4]] == ["old1", "old2", "old3", "old4"]
    migrated = next(e for e in events if e["type"] == "audit.migrated")
    assert migrated["data"]["old_head_seq"] == seq and migrated["data"]["old_head_hash"] == head


async def test_a_broken_former_chain_is_not_migrated(quiet):
    """Issue 18 (migration): a chain that does not verify is not sealed over; the log fails closed."""
    s = quiet.broker.store
    await s.redis.delete(s.audit_stream, s.audit_head, s.audit_tree)
    await _legacy_log(s, 3)
    rows = await s.redis.xrange(s.audit_stream)
    sid, f = rows[1]
    await _rewrite(s, [rows[0], (sid, {**f, b"event": f[b"event"].replace(b"old2", b"evil")}), rows[2]])
    with pytest.raises(AuditError, match="former hash chain does not verify"):
        await _seal(quiet)
    assert not await s.redis.exists(s.audit_tree)


async def test_the_audit_key_is_published_at_a_well_known_url(harness):
    """Issue 18.3: the audit public key is served at /.well-known/jitgate-audit-key."""
    r = await harness.client.get("/.well-known/jitgate-audit-key")
    assert r.status_code == 200
    doc = r.json()
    assert doc["alg"] == "Ed25519" and doc["verifier_key"] == _log(harness).key.verifier_key
    assert doc["origin"] == "broker.test/audit" or doc["origin"].endswith("/audit")


async def test_the_background_sealer_seals_on_its_own(harness):
    """Issue 18.1: a running broker seals new entries without being asked."""
    await harness.propose()
    s = harness.broker.store
    appended = await audit.length(s.redis, s.audit_head)
    for _ in range(100):
        if int(await s.redis.hget(s.audit_tree, "size") or 0) >= appended:
            break
        await asyncio.sleep(0.05)
    result = await _verify(harness)
    assert result.ok and result.sealed >= appended


async def test_failed_audit_append_fails_submission_with_503(quiet):
    """Fail closed: a proposal whose audit record cannot be written is refused (503) and not stored."""
    s = quiet.broker.store
    await s.redis.set(s.audit_stream, "not a stream")
    r = await quiet.propose()
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
    assert await s.scan_requests() == []


def test_audit_settings_need_a_sink_outside_redis_and_bounded_intervals():
    """Issue 18.2/18.4: start-up is refused without any checkpoint sink outside Redis, with a
    witness that is not an http(s) URL, or a seal interval that cannot checkpoint every 250 ms;
    the defaults fail closed with a file sink in the data folder."""
    from pathlib import Path

    from broker.config import Settings
    from broker.errors import ConfigError

    base = {"JITGATE_ISSUER": "https://jitgate.test", "JITGATE_KEY_ENCRYPTION_KEY": "ZmJ4cnVxc2t5b2x6Z2J3YWx1bWZ6eGthdGJ2Y3Fscmg="}
    s = Settings.from_env(base)
    assert s.audit_fail_closed and s.audit_checkpoint_path == Path(".jitgate/audit/checkpoints.jsonl")
    with pytest.raises(ConfigError, match="no audit checkpoint sink"):
        Settings.from_env({**base, "JITGATE_AUDIT_CHECKPOINT_FILE": "off"})
    assert Settings.from_env({**base, "JITGATE_AUDIT_CHECKPOINT_FILE": "off",
                              "JITGATE_AUDIT_WITNESS_URLS": "https://w.example/a, http://w2/b"}).audit_witness_urls == (
        "https://w.example/a", "http://w2/b")
    with pytest.raises(ConfigError, match="JITGATE_AUDIT_WITNESS_URLS"):
        Settings.from_env({**base, "JITGATE_AUDIT_WITNESS_URLS": "ftp://w"})
    with pytest.raises(ConfigError, match="JITGATE_AUDIT_SEAL_INTERVAL_S"):
        Settings.from_env({**base, "JITGATE_AUDIT_SEAL_INTERVAL_S": "1"})
    with pytest.raises(ConfigError, match="JITGATE_AUDIT_FAIL_CLOSED"):
        Settings.from_env({**base, "JITGATE_AUDIT_FAIL_CLOSED": "maybe"})


async def test_a_witness_receives_every_checkpoint_at_least_once(quiet):
    """Issue 18.2: an HTTP witness that fails at first still gets the checkpoints (POST, retried)."""
    from aiohttp import web

    from broker.auditsinks import Sinks, WitnessSink

    got: list[str] = []
    fails = {"n": 2}

    async def witness(request):
        if fails["n"]:
            fails["n"] -= 1
            return web.Response(status=503)
        got.append(await request.text())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/w", witness)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    log = _log(quiet)
    log.sinks = Sinks([WitnessSink(f"http://127.0.0.1:{port}/w", on_accept=log.sink_accepted)])
    try:
        await quiet.propose()
        await _seal(quiet)
        s = quiet.broker.store
        for _ in range(100):
            if got and not await s.redis.hget(s.audit_tree, "unsunk_since"):
                break
            await asyncio.sleep(0.05)
        assert got and Checkpoint.open(got[0], log.key.origin, log.key.public).size >= 1
        assert not await s.redis.hget(s.audit_tree, "unsunk_since")  # accepted: the grace clock is off
    finally:
        await log.sinks.close()
        await runner.cleanup()


async def test_entries_appended_during_a_verify_do_not_break_it(harness):
    """Issue 18.1: verifying a live log (the sealer running, proposals arriving) reports it OK,
    the newest entries as the unsealed tail."""
    async def load():
        for _ in range(15):
            await harness.propose()

    task = asyncio.create_task(load())
    results = []
    while not task.done():
        results.append(await _verify(harness))
    await task
    results.append(await _verify(harness, _recorded(harness)))
    assert results and all(r.ok for r in results), [str(r) for r in results if not r.ok]


async def test_extending_a_verified_log_hashes_only_the_new_entries_and_refuses_a_forged_one(quiet):
    """The console's cheap check: a good result carried forward over newly sealed entries equals a
    full verify; a new entry that does not match the signed checkpoint is not carried forward."""
    await _flow(quiet)
    s = quiet.broker.store
    good = await _verify(quiet)
    await _flow(quiet)
    newer = await audit.extend(s.redis, s.audit_stream, s.audit_head, good)
    full = await _verify(quiet)
    assert newer is not None and (newer.entries, newer.head, newer.sealed) == (full.entries, full.head, full.sealed)
    await _flow(quiet)
    rows = await s.redis.xrange(s.audit_stream)
    sid, f = rows[-1]
    rows[-1] = (sid, {**f, b"event": f[b"event"].replace(b'"at"', b'"at" ')})
    await _rewrite(s, rows)
    assert await audit.extend(s.redis, s.audit_stream, s.audit_head, newer) is None
    assert not (await _verify(quiet)).ok
