"""Deciding again (issue 16, items 1 and 2): the policies decide at every step (an approval,
collection, introspection after a change) and whenever the posture or the policies change,
from a context that carries the approval state and the agent's use of grants."""

from __future__ import annotations

import shutil

import orjson
import pytest

from broker.clock import ManualClock
from broker.errors import PolicyDenied
from tests.support.harness import FIXTURES, Harness, make_settings, write_agents

# The scenario of the issue: the fixture policies without their own incident freeze, so
# the posture alone changes nothing until a security engineer adds a forbid policy.
INCIDENT_FORBID = """
@id("no-prod-changes-in-incident")
forbid(principal, action, resource in Jitgate::Env::"prod") when { context.posture == "incident" };
"""


@pytest.fixture
async def quiet(tmp_path, redis_url, prefix, redis):
    """A broker on a copy of the fixture policies (without ``incident-freeze``), with no
    background jobs: every reload and re-evaluation happens when the test says."""
    policies = tmp_path / "policies"
    shutil.copytree(FIXTURES / "policies", policies)
    text = (policies / "test.cedar").read_text()
    cut = text.index('@id("incident-freeze")')
    (policies / "test.cedar").write_text(text[:cut] + text[cut:].split(";", 1)[1])
    settings = make_settings(tmp_path, redis_url, prefix, policy_dir=policies)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start(background=False)
    h.policies = policies
    yield h
    await h.stop()


async def _audit(h) -> list[dict]:
    s = h.broker.store
    return [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]


async def _approved_restart(h, agent="deploy-bot") -> str:
    rid = (await h.propose(agent, action="restart", target="prod/payments-api", duration_s=300)).json()["id"]
    await h.approve(rid, "erin")
    return rid


async def _active_token(h, agent="deploy-bot") -> tuple[str, str]:
    rid = await _approved_restart(h, agent)
    r = await h.collect(rid, agent)
    assert r.status_code == 200, r.text
    return rid, r.json()["access_token"]


async def test_incident_scenario_collection_refused_and_active_token_inactive(quiet):
    """Issue 16 "done when": an approved prod restart, then posture incident and a forbid
    policy: collection is refused naming the policy (403 policy-denied), an already active
    token is inactive at its next introspection, and the audit log says why."""
    h = quiet
    approved = await _approved_restart(h)
    active, token = await _active_token(h, "ops-bot")
    assert (await h.introspect(token)).json()["active"] is True

    await h.life.set_posture("incident", h.approver("carol"), channel="cli")
    # The posture alone: no policy forbids anything in it yet, so nothing ends.
    assert (await h.introspect(token)).json()["active"] is True
    assert (await h.life.get(approved)).status == "approved"

    # The new policy is loaded (the reload job's step) and the epoch moves, but the walk over
    # the open requests has not run: introspection alone must decide again.
    (h.policies / "incident.cedar").write_text(INCIDENT_FORBID)
    assert h.broker.gate.reload_if_changed()
    await h.broker.store.bump_epoch()
    assert (await h.introspect(token)).json() == {"active": False}
    closed = await h.life.get(active)
    assert closed.status == "revoked" and closed.closed_by == "policy"
    assert "no-prod-changes-in-incident" in closed.close_reason

    r = await h.collect(approved)
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"].endswith("/policy-denied")
    assert "no-prod-changes-in-incident" in problem["detail"] and problem["policies"] == ["no-prod-changes-in-incident"]
    seen = (await h.status(approved)).json()
    assert seen["status"] == "denied" and seen["denial"]["by"] == "policy"
    assert seen["denial"]["policies"] == ["no-prod-changes-in-incident"]

    events = await _audit(h)
    revoked = [e for e in events if e["type"] == "grant.revoked" and e["request_id"] == active]
    assert revoked and revoked[0]["actor"] == {"policy": ["no-prod-changes-in-incident"]}
    assert revoked[0]["data"]["stage"] == "recheck"
    denied = [e for e in events if e["type"] == "request.denied" and e["request_id"] == approved]
    assert denied and denied[0]["data"]["stage"] == "collect" and denied[0]["data"]["previous"] == "approved"
    assert [e["data"]["posture"] for e in events if e["type"] == "posture.changed"] == ["incident"]


async def test_a_posture_change_decides_every_open_request_again_in_one_batch(quiet):
    """Security requirement (issue 16, item 1): after a posture change every pending, approved
    and active grant is decided again; refused ones are denied or revoked in one batched step
    with one audit entry naming each and the policy, each desk message is updated through the
    outbox like a single denial or revocation, and break-glass grants are left alone."""
    h = quiet
    (h.policies / "incident.cedar").write_text(INCIDENT_FORBID)
    assert h.broker.gate.reload_if_changed()
    pending = (await h.propose(action="restart", target="prod/payments-api")).json()["id"]
    approved = await _approved_restart(h, "ops-bot")
    active, token = await _active_token(h)
    staging = (await h.propose("reader-bot", action="read", target="staging/payments-api")).json()["id"]
    g = await h.broker.breakglass.grant(h.approver("alice"), subject="ops-bot", action="rollback",
                                        target="prod/payments-api", duration_s=600, reason="pods crash-looping",
                                        incident="INC-7", channel="cli")
    bg_token = (await h.collect(g.request.id, "ops-bot")).json()["access_token"]
    h.notifier.sent.clear()

    await h.life.set_posture("incident", h.approver("carol"), channel="cli")

    statuses = {rid: (await h.life.get(rid)).status for rid in (pending, approved, active, staging, g.request.id)}
    assert statuses == {pending: "denied", approved: "denied", active: "revoked", staging: "approved",
                        g.request.id: "active"}
    assert (await h.introspect(token)).json() == {"active": False}
    assert (await h.introspect(bg_token)).json()["active"] is True  # on-call's emergency access stays
    batch = [e for e in await _audit(h) if e["type"] == "requests.redecided"]
    assert len(batch) == 1 and batch[0]["data"]["trigger"] == "posture normal -> incident"
    listed = {r["request_id"]: r for r in batch[0]["data"]["requests"]}
    assert set(listed) == {pending, approved, active}
    assert listed[active]["type"] == "grant.revoked" and listed[pending]["type"] == "request.denied"
    assert all(r["policies"] == ["no-prod-changes-in-incident"] for r in listed.values())
    s = h.broker.store
    queued = [(f[b"id"].decode(), f[b"kind"].decode()) for _, f in await s.redis.xrange(s.outbox)]
    # One entry per request, of the kind a single denial or revocation queues.
    assert {(pending, "denied"), (approved, "denied"), (active, "revoked")} <= set(queued)
    # Once closed, a request leaves the open set: a second change costs nothing for it.
    again = await h.life.reevaluate_open(trigger="test")
    assert again["closed"] == 0 and again["checked"] == 1  # the staging grant; break-glass is skipped


async def test_a_policy_reload_decides_again_through_the_reload_job(quiet):
    """A policy file edited in place is followed by the reload job, which re-evaluates the
    open grants: an active token is revoked without anyone introspecting it."""
    h = quiet
    await h.life.set_posture("incident", h.approver("carol"), channel="cli")
    active, _token = await _active_token(h)
    (h.policies / "incident.cedar").write_text(INCIDENT_FORBID)
    h.broker.maybe_reload()
    import asyncio

    await asyncio.wait(set(h.broker._closing), timeout=10)
    req = await h.life.get(active)
    assert req.status == "revoked" and "no-prod-changes-in-incident" in req.close_reason
    batch = [e for e in await _audit(h) if e["type"] == "requests.redecided"]
    assert batch and batch[-1]["data"]["trigger"] == "policy folder reloaded"


LATE_SECOND_APPROVAL = """
@id("late-second-approval-needs-security")
forbid(principal, action, resource in Jitgate::Env::"prod")
when { context.approval_count >= 2 && context.approval_last_at - context.approval_first_at > 600
       && !context.approval_groups.contains("security") };
"""


async def test_an_approval_is_decided_with_the_approval_state(quiet):
    """Issue 16, item 2: an approval is decided with the approvals so far plus itself; a
    second approval more than ten minutes after the first that brings nobody from security
    denies the request (the approver is told the policy), one within ten minutes approves."""
    h = quiet
    (h.policies / "late.cedar").write_text(LATE_SECOND_APPROVAL)
    assert h.broker.gate.reload_if_changed()
    rid = (await h.propose()).json()["id"]  # prod-deploy: two from sre
    await h.approve(rid, "bob")
    h.clock.advance(601)
    with pytest.raises(PolicyDenied) as e:
        await h.approve(rid, "erin")
    assert e.value.extra["policies"] == ["late-second-approval-needs-security"]
    req = await h.life.get(rid)
    assert req.status == "denied" and req.denial["stage"] == "approval" and req.approvers == ["bob"]

    quick = (await h.propose()).json()["id"]
    await h.approve(quick, "bob")
    h.clock.advance(599)
    assert (await h.approve(quick, "erin")).status == "approved"


CONCURRENT_CAP = """
@id("at-most-3-concurrent-staging-grants")
forbid(principal, action, resource in Jitgate::Env::"staging") when { context.agent_grants_active_env >= 3 };

@id("at-most-5-per-hour")
forbid(principal, action, resource) when { context.agent_grants_last_hour >= 5 };
"""


async def test_grant_use_counts_other_grants_from_the_indexes(quiet):
    """Issue 16, item 2: the agent's active grants (in the target's environment) and those
    collected in the last hour reach the policies, never counting the grant being decided,
    from indexes the transition scripts keep."""
    h = quiet
    (h.policies / "cap.cedar").write_text(CONCURRENT_CAP)
    assert h.broker.gate.reload_if_changed()

    async def read() -> tuple[int, str]:
        r = await h.propose("reader-bot", action="read", target="staging/payments-api")
        body = r.json()
        if body["status"] == "approved":
            t = await h.collect(body["id"], "reader-bot")
            assert t.status_code == 200, t.text
        return body["id"], body["status"]

    ids = [await read() for _ in range(3)]
    assert [s for _, s in ids] == ["approved"] * 3
    fourth, status = await read()
    assert status == "denied"
    assert (await h.status(fourth, "reader-bot")).json()["denial"]["policies"] == ["at-most-3-concurrent-staging-grants"]
    # Deciding the three active ones again does not count each against itself.
    assert (await h.life.reevaluate_open(trigger="test"))["closed"] == 0
    s = h.broker.store
    assert await s.redis.scard(s.agent_key("reader-bot", "active:staging")) == 3
    assert (await h.complete(ids[0][0], "reader-bot")).status_code == 200
    assert await s.redis.scard(s.agent_key("reader-bot", "active:staging")) == 2
    assert (await read())[1] == "approved"  # the 4th collected this hour, 3 active
    assert (await h.complete(ids[1][0], "reader-bot")).status_code == 200
    assert (await read())[1] == "approved"  # the 5th this hour
    assert (await h.complete(ids[2][0], "reader-bot")).status_code == 200
    sixth, status = await read()
    assert status == "denied"
    assert (await h.status(sixth, "reader-bot")).json()["denial"]["policies"] == ["at-most-5-per-hour"]
    h.clock.advance(3601)  # an hour later the window is empty, but two are still active
    assert await s.redis.scard(s.agent_key("reader-bot", "active")) == 2


async def test_seconds_since_approval_reaches_collection(quiet):
    """Issue 16, item 2: collection is decided with the time since the grant was approved."""
    h = quiet
    (h.policies / "fresh.cedar").write_text("""
@id("collect-within-a-minute")
forbid(principal, action, resource) when { context.stage == "collect" && context.seconds_since_approved > 60 };
""")
    assert h.broker.gate.reload_if_changed()
    rid = await _approved_restart(h)
    h.clock.advance(61)
    r = await h.collect(rid)
    assert r.status_code == 403 and r.json()["policies"] == ["collect-within-a-minute"]
    fresh = await _approved_restart(h)
    h.clock.advance(30)
    assert (await h.collect(fresh)).status_code == 200


async def test_a_batch_with_a_request_that_moved_writes_nothing(quiet):
    """Fail closed (issue 16, item 1): the batch closes only what is still as it was read; if
    one request moved meanwhile, nothing is written (no audit entry, no state change) and
    the caller is told which, to read it again."""
    h = quiet
    a, _ = await _active_token(h)
    b = await _approved_restart(h, "ops-bot")
    s = h.broker.store
    before = await s.redis.xlen(s.audit_stream)
    from broker.audit import event

    ev = event("requests.redecided", "2026-12-04T00:00:00.000Z", None, {"by": "policy"}, requests=[])
    out = await s.close_batch([(a, "active", "revoked", {"close_reason": "x"}, "revoked"),
                               (b, "pending", "denied", {"close_reason": "x"}, "denied")],  # b is approved
                              [ev], int(h.clock.now() * 1000), None)
    assert (out.result, out.status) == ("retry", "2")
    assert await s.redis.xlen(s.audit_stream) == before
    assert (await h.life.get(a)).status == "active" and (await h.life.get(b)).status == "approved"
    assert await s.redis.sismember(s.agent_key("deploy-bot", "active"), a)


async def test_a_grant_that_expires_leaves_the_agent_index(quiet):
    """Issue 16, item 2: the sweep's batch expiry keeps the per-agent index true, so an
    expired grant no longer counts as held."""
    h = quiet
    rid, _ = await _active_token(h)
    s = h.broker.store
    assert await s.redis.scard(s.agent_key("deploy-bot", "active:prod")) == 1
    h.clock.advance(301)
    assert await h.life.expire_due([rid]) == 1
    assert (await h.life.get(rid)).status == "expired"
    assert await s.redis.scard(s.agent_key("deploy-bot", "active")) == 0
    assert await s.redis.scard(s.agent_key("deploy-bot", "active:prod")) == 0
