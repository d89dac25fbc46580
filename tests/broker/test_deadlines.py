"""Late decisions and late collection (issue 14 item 4): the transition scripts check the
deadline themselves, at the broker's clock, so nothing depends on the scheduler's sweep
having run. The sweep is stopped in these tests: that is the delay the red team used."""

from __future__ import annotations

import jwt
import orjson
import pytest

from broker.audit import verify
from broker.errors import DeadlinePassed
from broker.model import EXPIRED


@pytest.fixture
async def no_sweep(harness):
    """The harness with its scheduler stopped (the sweep delayed indefinitely)."""
    await harness.broker.scheduler.stop()
    return harness


async def _events(harness, rid: str) -> list[dict]:
    s = harness.broker.store
    events = [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]
    return [e for e in events if e.get("request_id") == rid]


async def _told(harness, rid: str, kind: str) -> bool:
    await harness.broker.outbox.drain()
    return ("update", rid, kind) in harness.notifier.sent


async def test_a_late_approval_is_refused_and_the_request_expires_then(no_sweep):
    """Issue 14 item 4: "a late decision is refused and the request expires there and then" (audit entry, desk notice)."""
    h = no_sweep
    rid = (await h.propose()).json()["id"]
    await h.approve(rid, "bob")
    h.clock.advance(h.settings.request_ttl_s + 1)
    with pytest.raises(DeadlinePassed, match="deadline to decide passed"):
        await h.approve(rid, "erin")
    req = await h.life.get(rid)
    assert req.status == EXPIRED and req.approvers == ["bob"] and req.approved_duration_s is None
    assert req.closed_by == "deadline" and req.close_reason == "no decision before the deadline"
    last = (await _events(h, rid))[-1]
    assert last["type"] == "request.expired" and last["data"]["previous"] == "pending"
    assert last["data"]["refused"] == {"action": "approve", "approver": "erin", "channel": "cli"}
    assert await _told(h, rid, "expired")
    assert await h.broker.store.redis.zscore(h.broker.store.deadlines, rid) is None
    # The agent sees it expired; its collect is refused.
    assert (await h.status(rid)).json()["status"] == "expired"
    assert (await h.collect(rid)).status_code == 409


async def test_a_late_denial_is_refused_and_the_request_expires(no_sweep):
    """Issue 14 item 4: a denial is a decision too; after the deadline the request expires instead (denied by default)."""
    h = no_sweep
    rid = (await h.propose()).json()["id"]
    h.clock.advance(h.settings.request_ttl_s + 1)
    with pytest.raises(DeadlinePassed):
        await h.life.deny(rid, h.approver("bob"), channel="cli", reason="too late")
    req = await h.life.get(rid)
    assert req.status == EXPIRED and req.denial is None


async def test_an_approval_just_before_the_deadline_counts(no_sweep):
    """Issue 14 item 4 (the boundary): one millisecond before the deadline the decision is in time."""
    h = no_sweep
    rid = (await h.propose()).json()["id"]
    await h.approve(rid, "bob")
    h.clock.advance(h.settings.request_ttl_s - 0.002)
    assert (await h.approve(rid, "erin")).status == "approved"


async def test_a_late_collection_is_refused_and_the_grant_expires(no_sweep):
    """Issue 14 item 4: "a collect after the collect deadline" gets no token; the grant expires there and then."""
    h = no_sweep
    rid = (await h.propose()).json()["id"]
    await h.approve(rid, "bob")
    await h.approve(rid, "erin")
    h.clock.advance(h.settings.collect_ttl_s + 60)
    r = await h.collect(rid)
    assert r.status_code == 409 and r.json()["type"].endswith("/deadline-passed"), r.text
    assert "access_token" not in r.text
    req = await h.life.get(rid)
    assert req.status == EXPIRED and req.grant_jti is None and req.close_reason == "token not collected in time"
    last = (await _events(h, rid))[-1]
    assert last["type"] == "request.expired" and last["data"]["previous"] == "approved"
    assert last["data"]["refused"] == {"action": "collect", "agent": "deploy-bot"}
    assert await _told(h, rid, "expired")
    store = h.broker.store
    assert (await verify(store.redis, store.audit_stream, store.audit_head)).ok


async def test_a_token_never_outlives_the_end_fixed_at_approval(no_sweep):
    """Issue 14 item 4: "a token never lives past the end fixed when the grant was approved": collected
    late within the collect window, exp is that end, not now + duration."""
    h = no_sweep
    rid = (await h.propose(duration_s=600)).json()["id"]
    await h.approve(rid, "bob")
    approved = await h.approve(rid, "erin", duration_s=240)
    approved_at = h.clock.now()
    assert approved.grant_end == pytest.approx(approved_at + 240, abs=0.002)
    assert approved.deadline == pytest.approx(approved_at + 240, abs=0.002)  # the collect window ends with it
    h.clock.advance(200)
    tok = (await h.collect(rid)).json()
    claims = jwt.decode(tok["access_token"], options={"verify_signature": False})
    assert claims["exp"] == int(approved_at + 240) and tok["expires_in"] <= 41
    assert (await h.life.get(rid)).grant_exp == claims["exp"]


async def test_an_auto_grant_ends_at_its_approval_plus_duration(no_sweep):
    """Issue 14 item 4: a grant policy gave at once is approved at submission; its end is fixed then too."""
    h = no_sweep
    body = (await h.propose("reader-bot", action="read", target="staging/payments-api", duration_s=120)).json()
    created = h.clock.now()
    h.clock.advance(100)
    tok = (await h.collect(body["id"], "reader-bot")).json()
    claims = jwt.decode(tok["access_token"], options={"verify_signature": False})
    assert claims["exp"] == int(created + 120)
    h.clock.advance(21)
    assert (await h.introspect(tok["access_token"])).json() == {"active": False}


async def test_an_agent_break_glass_grant_ends_when_fixed_at_the_grant(no_sweep):
    """Issue 14 item 4: a break-glass grant for an agent is approved when granted; its token never lives past that end."""
    from bot import render

    h = no_sweep
    g = await h.broker.breakglass.grant(h.approver("alice"), subject="ops-bot", action="rollback",
                                        target="prod/payments-api", duration_s=600, reason="pods crash-looping",
                                        channel="cli")
    granted_at = h.clock.now()
    assert g.request.grant_end == pytest.approx(granted_at + 600, abs=0.002)
    assert render.bg_until(g.request, when=lambda ts: "<when>") == "<when> (collect by <when>)"
    h.clock.advance(120)
    tok = (await h.collect(g.request.id, "ops-bot")).json()
    claims = jwt.decode(tok["access_token"], options={"verify_signature": False})
    assert claims["exp"] == int(granted_at + 600)
