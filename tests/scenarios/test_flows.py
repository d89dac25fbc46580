"""End-to-end flows through the HTTP API against a real Redis (issue #2 scenarios)."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from broker.audit import verify
from broker.errors import Conflict, NotApprover


async def test_auto_grant_path(harness):
    """A proposal inside the pre-approved envelope is approved at once; the token is scoped and completion revokes it."""
    r = await harness.propose("reader-bot", action="read", target="staging/payments-api", duration_s=1200)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "approved"
    assert body["decision"]["outcome"] == "auto_grant"
    assert body["decision"]["policies"] == ["staging-read"]
    assert body["approved_duration_s"] == 600  # capped by @max_duration
    rid = body["id"]

    t = await harness.collect(rid, "reader-bot")
    assert t.status_code == 200, t.text
    tok = t.json()
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == 600
    claims = jwt.decode(tok["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "reader-bot" and claims["aud"] == "staging/payments-api"
    assert claims["approval"]["request_id"] == rid
    assert claims["approval"]["proposal_sha256"] == body["proposal_sha256"]

    assert (await harness.introspect(tok["access_token"])).json()["active"] is True
    done = await harness.complete(rid, "reader-bot")
    assert done.json()["status"] == "completed"
    assert (await harness.introspect(tok["access_token"])).json() == {"active": False}


async def test_two_approvals_needed(harness):
    """prod-deploy needs two sre approvals: the first leaves it pending, the second approves it."""
    r = await harness.propose()
    body = r.json()
    assert body["status"] == "pending"
    assert body["decision"]["approvals_required"] == 2 and body["decision"]["approver_group"] == "sre"
    rid = body["id"]
    after_one = await harness.approve(rid, "bob")
    assert after_one.status == "pending" and after_one.approvers == ["bob"]
    after_two = await harness.approve(rid, "erin")
    assert after_two.status == "approved" and after_two.approvers == ["bob", "erin"]
    tok = (await harness.collect(rid)).json()
    claims = jwt.decode(tok["access_token"], options={"verify_signature": False})
    assert claims["approval"]["approvers"] == ["bob", "erin"]
    assert claims["approval"]["policies"] == ["prod-deploy"]


async def test_deny_reaches_agent(harness):
    """An approver's denial ends the request and the agent reads the reason."""
    rid = (await harness.propose()).json()["id"]
    await harness.life.deny(rid, harness.approver("bob"), channel="cli", reason="change freeze until Monday")
    body = (await harness.status(rid)).json()
    assert body["status"] == "denied"
    assert body["denial"]["by"] == "bob" and body["denial"]["reason"] == "change freeze until Monday"
    assert (await harness.collect(rid)).status_code == 409


async def test_policy_deny_returns_reason_and_ids(harness):
    """A forbid returns the reason and the deciding policy ids to the agent."""
    r = await harness.propose(action="db.export", target="prod/payments-api")
    body = r.json()
    assert body["status"] == "denied"
    assert body["decision"]["outcome"] == "deny"
    assert "no-export" in body["decision"]["policies"]
    assert body["denial"]["by"] == "policy" and body["denial"]["reason"]


async def test_owner_may_not_approve(harness):
    """DESIGN policy: an approver may not approve a request of an agent they own."""
    rid = (await harness.propose()).json()["id"]  # deploy-bot is owned by alice
    with pytest.raises(NotApprover):
        await harness.approve(rid, "alice")
    with pytest.raises(NotApprover):
        await harness.approve(rid, "carol")  # not in sre
    assert (await harness.status(rid)).json()["approvals"] == []


async def test_same_approval_twice_is_a_noop(harness):
    """The same approval arriving twice counts once."""
    rid = (await harness.propose()).json()["id"]
    await harness.approve(rid, "bob")
    again = await harness.approve(rid, "bob")
    assert again.status == "pending" and again.approvers == ["bob"]


async def test_racing_approvals_yield_one_outcome(harness):
    """Two approvals and a denial racing from separate tasks: exactly one outcome, counted once each."""
    rid = (await harness.propose()).json()["id"]
    await harness.approve(rid, "bob")
    results = await asyncio.gather(
        harness.approve(rid, "erin"),
        harness.life.deny(rid, harness.approver("erin"), channel="cli", reason="no"),
        return_exceptions=True,
    )
    final = await harness.life.get(rid)
    assert final.status in ("approved", "denied")
    outcomes = [r for r in results if not isinstance(r, Exception)]
    assert outcomes, results
    if final.status == "approved":
        assert final.approvers == ["bob", "erin"]
    else:
        assert final.approvers == ["bob"]


async def test_many_parallel_approvals_count_once(harness):
    """Ten concurrent identical approvals by two people record exactly two approvals."""
    rid = (await harness.propose()).json()["id"]
    await asyncio.gather(*[harness.approve(rid, who) for who in ["bob", "erin"] * 5], return_exceptions=True)
    final = await harness.life.get(rid)
    assert final.status == "approved"
    assert sorted(final.approvers) == ["bob", "erin"]


async def test_pending_request_expires(harness):
    """A pending request expires at its deadline and can no longer be approved."""
    rid = (await harness.propose()).json()["id"]
    assert await harness.expire_after(harness.settings.request_ttl_s + 1) == 1
    body = (await harness.status(rid)).json()
    assert body["status"] == "expired"
    with pytest.raises(Conflict, match="already expired"):
        await harness.approve(rid, "bob")


async def test_grant_revoked_by_scheduler_at_end(harness):
    """An active grant is expired by the scheduler at its end and introspection reports it inactive."""
    rid = (await harness.propose("reader-bot", action="read", target="staging/payments-api", duration_s=120)).json()["id"]
    token = (await harness.collect(rid, "reader-bot")).json()["access_token"]
    assert (await harness.introspect(token)).json()["active"] is True
    assert await harness.expire_after(121) == 1
    assert (await harness.status(rid, "reader-bot")).json()["status"] == "expired"
    assert (await harness.introspect(token)).json() == {"active": False}


async def test_uncollected_approval_expires(harness):
    """An approved request not collected within the collection window expires."""
    rid = (await harness.propose("reader-bot", action="read", target="staging/payments-api")).json()["id"]
    harness.clock.advance(harness.settings.collect_ttl_s + 1)
    await harness.broker.scheduler.sweep()
    assert (await harness.status(rid, "reader-bot")).json()["status"] == "expired"
    assert (await harness.collect(rid, "reader-bot")).status_code == 409


async def test_token_collected_only_once(harness):
    """The token is issued once; a second collection is a 409."""
    rid = (await harness.propose("reader-bot", action="read", target="staging/payments-api")).json()["id"]
    assert (await harness.collect(rid, "reader-bot")).status_code == 200
    second = await harness.collect(rid, "reader-bot")
    assert second.status_code == 409
    assert "only once" in second.json()["detail"]


async def test_only_requesting_agent_sees_and_collects(harness):
    """Another agent gets a 404 for someone else's request (no existence leak)."""
    rid = (await harness.propose("reader-bot", action="read", target="staging/payments-api")).json()["id"]
    assert (await harness.status(rid, "deploy-bot")).status_code == 404
    assert (await harness.collect(rid, "deploy-bot")).status_code == 404


async def test_withdraw_pending(harness):
    """DELETE withdraws a pending request; approving it afterwards is a clear conflict."""
    rid = (await harness.propose()).json()["id"]
    r = await harness.client.delete(f"/v1/escalations/{rid}", headers=harness.auth("deploy-bot"))
    assert r.json()["status"] == "cancelled"
    with pytest.raises(Conflict, match="cancelled"):
        await harness.approve(rid, "bob")


async def test_idempotency_key_returns_same_request(harness):
    """Retries with the same Idempotency-Key return the same request; a different body is refused."""
    first = await harness.propose(headers={"Idempotency-Key": "k-1"})
    again = await harness.propose(headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = await harness.propose(headers={"Idempotency-Key": "k-1"}, justification="something else")
    assert other.status_code == 409


async def test_long_poll_wakes_on_approval(harness):
    """GET ?wait=N returns as soon as the state changes, long before N seconds."""
    rid = (await harness.propose()).json()["id"]
    await harness.approve(rid, "bob")
    poll = asyncio.create_task(harness.status(rid, wait=30))
    await asyncio.sleep(0.1)
    assert not poll.done()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await harness.approve(rid, "erin")
    body = (await asyncio.wait_for(poll, 5)).json()
    assert body["status"] == "approved"
    assert loop.time() - started < 1.0


async def test_long_poll_times_out_with_current_state(harness):
    """With no change, a long poll returns the unchanged state after the wait."""
    rid = (await harness.propose()).json()["id"]
    body = (await harness.status(rid, wait=0.2)).json()
    assert body["status"] == "pending"


async def test_audit_chain_records_flow_and_verifies(harness):
    """Every step of a flow is in the audit chain, which verifies."""
    rid = (await harness.propose()).json()["id"]
    await harness.approve(rid, "bob")
    await harness.approve(rid, "erin")
    await harness.collect(rid)
    await harness.complete(rid)
    await harness.broker.outbox.drain()
    store = harness.broker.store
    result = await verify(store.redis, store.audit_stream, store.audit_head)
    assert result.ok, str(result)
    entries = await store.redis.xrange(store.audit_stream)
    import orjson

    kinds = [orjson.loads(f[b"event"])["type"] for _, f in entries]
    assert kinds[0] == "policy.loaded"  # the serving broker's start-up (issue 18, item 5)
    kinds = kinds[1:]
    assert kinds[:3] == ["proposal.received", "policy.decision", "notification.posted"] or kinds[:2] == ["proposal.received", "policy.decision"]
    for k in ("approval.recorded", "request.approved", "token.collected", "grant.completed"):
        assert k in kinds
    token_events = [orjson.loads(f[b"event"]) for _, f in entries if orjson.loads(f[b"event"])["type"] == "token.collected"]
    assert "jti" in token_events[0]["data"] and "access_token" not in str(token_events[0])


async def test_closed_requests_expire_from_redis_but_open_ones_do_not(harness):
    """Retention: closed requests get a TTL (memory stays bounded); pending ones never do."""
    s = harness.broker.store
    pending = (await harness.propose()).json()["id"]
    denied = (await harness.propose(action="db.export")).json()["id"]
    done = (await harness.propose("reader-bot", action="read", target="staging/payments-api")).json()["id"]
    await harness.complete(done, "reader-bot")
    assert await s.redis.ttl(s.req_key(pending)) == -1
    assert await s.redis.ttl(s.req_key(denied)) > 86400
    assert await s.redis.ttl(s.req_key(done)) > 86400


async def test_long_poll_with_known_status_answers_a_missed_change_at_once(harness):
    """A decision that landed between the agent's last read and its long poll is returned at once with `known`."""
    rid = (await harness.propose()).json()["id"]
    await harness.approve(rid, "bob")
    await harness.approve(rid, "erin")  # approved before the agent polls again
    loop = asyncio.get_running_loop()
    started = loop.time()
    r = await harness.client.get(f"/v1/escalations/{rid}", params={"wait": 5, "known": "pending"},
                                 headers=harness.auth("deploy-bot"))
    assert r.json()["status"] == "approved" and loop.time() - started < 1.0
    bad = await harness.client.get(f"/v1/escalations/{rid}", params={"wait": 1, "known": "maybe"},
                                   headers=harness.auth("deploy-bot"))
    assert bad.status_code == 400
