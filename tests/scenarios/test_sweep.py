"""The scheduler's sweep expires a batch in one step with one audit entry (issue 8: the
sweep's cost grows with what is due), and nothing of what each request's audience sees is
lost by batching: every request is expired, its agent's long poll wakes, each desk hears of
each expiry, the console's trail of each request shows it, and the chain verifies."""

from __future__ import annotations

import asyncio

import orjson

from bot.console import queries
from broker import audit


async def _stream(harness) -> list[dict]:
    s = harness.broker.store
    return [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]


async def test_sweep_expires_a_batch_with_one_audit_entry(harness):
    """Requirement: revocation at scale (issue 8) without losing per-request accountability."""
    pending = [(await harness.propose()).json()["id"] for _ in range(3)]
    grants = []
    for _ in range(4):
        rid = (await harness.propose("reader-bot", action="read", target="staging/payments-api", duration_s=60)).json()["id"]
        assert (await harness.collect(rid, "reader-bot")).status_code == 200
        grants.append(rid)
    poll = asyncio.create_task(harness.status(grants[0], "reader-bot", wait=10))
    await asyncio.sleep(0.1)
    before = len(await _stream(harness))
    assert await harness.expire_after(harness.settings.request_ttl_s + 1) == 7
    assert (await asyncio.wait_for(poll, 5)).json()["status"] == "expired"  # the long poll woke

    new = (await _stream(harness))[before:]
    assert [e["type"] for e in new] == ["requests.expired"]
    listed = {r["request_id"]: r for r in new[0]["data"]["requests"]}
    assert set(listed) == set(pending + grants)
    assert all(listed[r]["type"] == "request.expired" and listed[r]["previous"] == "pending" for r in pending)
    assert all(listed[r]["type"] == "grant.expired" and listed[r]["previous"] == "active" for r in grants)
    for rid in pending + grants:
        req = await harness.life.get(rid)
        assert (req.status, req.closed_by) == ("expired", "scheduler")
    s = harness.broker.store
    assert await s.redis.zcard(s.deadlines) == 0
    assert (await audit.verify(s.redis, s.audit_stream, s.audit_head)).ok

    # Each desk hears of each expiry (the batch's one outbox entry fans out).
    await harness.broker.outbox.drain(10)
    told = {rid for kind, rid, event in harness.notifier.sent if kind == "update" and event == "expired"}
    assert told == set(pending + grants)

    # The console's trail of one request shows its expiry as that request's own event.
    trail, _complete = await queries.trail(harness.broker, grants[1])
    assert trail[-1].type == "grant.expired" and trail[-1].request_id == grants[1]
    assert trail[-1].data["reason"] == "grant ended"


async def test_a_request_that_moves_during_the_sweep_is_not_expired(harness):
    """A request decided between the sweep's read and its write is left alone (compare-and-set)."""
    # The background sweep would race this test's own (and win on a loaded host): stop it.
    await harness.broker.scheduler.stop()
    rid = (await harness.propose()).json()["id"]
    other = (await harness.propose()).json()["id"]
    harness.clock.advance(harness.settings.request_ttl_s + 1)
    life = harness.life
    real = life.store.statuses

    async def read_then_cancel(ids):
        rows = await real(ids)
        await harness.client.delete(f"/v1/escalations/{rid}", headers=harness.auth("deploy-bot"))  # moves now
        life.store.statuses = real
        return rows

    life.store.statuses = read_then_cancel
    assert await life.expire_due([rid, other]) == 1
    assert (await life.get(rid)).status == "cancelled"
    assert (await life.get(other)).status == "expired"
    types = [e["type"] for e in await _stream(harness)]
    assert types.count("requests.expired") == 1 and types.count("request.cancelled") == 1


async def test_break_glass_grants_expire_one_by_one_and_stay_marked(harness):
    """Break-glass grants keep their own marked audit events (they are monitored apart)."""
    from broker.breakglass import BreakGlass

    bg = harness.broker.breakglass
    assert isinstance(bg, BreakGlass)
    g = await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                       duration_s=300, reason="failover", channel="cli")
    assert await harness.expire_after(301) == 1
    ev = [e for e in await _stream(harness) if e.get("request_id") == g.request.id and e["type"] == "grant.expired"]
    assert len(ev) == 1 and ev[0]["data"]["break_glass"] is True
