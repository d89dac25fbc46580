"""Break-glass core (issue #5): fast but time-bounded, attributable, monitored, limited
and reviewed. The chat commands on top are tested with the desks."""

from __future__ import annotations

import jwt
import orjson
import pytest

from broker.errors import Forbidden, InvalidRequest, NotApprover


def _bg(harness):
    return harness.broker.breakglass


async def _audit(harness) -> list[dict]:
    s = harness.broker.store
    return [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]


async def test_agent_break_glass_collected_through_normal_api(harness):
    """An on-call engineer grants an agent emergency access; the agent collects a token marked break-glass."""
    g = await _bg(harness).grant(harness.approver("alice"), subject="ops-bot", action="rollback",
                                 target="prod/payments-api", duration_s=600, reason="pods crash-looping",
                                 incident="INC-7", channel="cli")
    assert g.token is None and g.request.status == "approved" and g.request.break_glass
    assert g.request.approvers == ["alice"] and g.request.engineer == "alice"
    tok = (await harness.collect(g.request.id, "ops-bot")).json()
    claims = jwt.decode(tok["access_token"], options={"verify_signature": False})
    assert claims["approval"]["break_glass"] is True and claims["approval"]["approvers"] == ["alice"]
    assert claims["exp"] - claims["iat"] == 600


async def test_security_and_bypassed_approvers_are_told(harness):
    """Monitoring: the security channel hears who, what, why and until when; normal approvers hear they were bypassed."""
    g = await _bg(harness).grant(harness.approver("alice"), subject="ops-bot", action="rollback",
                                 target="prod/payments-api", duration_s=600, reason="pods crash-looping", channel="cli")
    await harness.broker.outbox.drain()
    sent = [e for e in harness.notifier.sent if e[1] == g.request.id]
    security = [t for k, _, t in sent if k == "security"]
    assert security and "BREAK-GLASS by alice" in security[0] and "pods crash-looping" in security[0]
    assert any(k == "announce" and "Approval bypassed" in t for k, _, t in sent)
    assert harness.broker.metrics.break_glass.labels(subject="agent")._value.get() == 1


async def test_break_glass_for_me_returns_token_once_never_stored(harness):
    """A grant for oneself returns the token once; the token is in no request field and no audit entry."""
    g = await _bg(harness).grant(harness.approver("alice"), subject="me", action="rollback",
                                 target="prod/payments-api", duration_s=300, reason="manual failover", channel="cli")
    assert g.token is not None and g.request.status == "active"
    token = g.token.access_token
    s = harness.broker.store
    stored = await s.redis.hgetall(s.req_key(g.request.id))
    assert all(token.encode() not in v for v in stored.values())
    entries = await s.redis.xrange(s.audit_stream)
    assert all(token.encode() not in f[b"event"] for _, f in entries)
    assert (await harness.introspect(token)).json()["active"] is True
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["client_id"] == "jitgate:break-glass"
    harness.clock.advance(301)
    await harness.broker.scheduler.sweep()
    assert (await harness.introspect(token)).json() == {"active": False}


async def test_every_audit_event_is_marked_break_glass(harness):
    """Audit events of a break-glass grant are marked as such."""
    await _bg(harness).grant(harness.approver("alice"), subject="me", action="rollback",
                             target="prod/payments-api", duration_s=300, reason="failover", channel="cli")
    events = [e for e in await _audit(harness) if e["type"].startswith(("breakglass.", "token."))]
    assert events and all(e["data"]["break_glass"] is True for e in events)


async def test_only_on_call_may_break_glass(harness):
    """Who may: only members of the on-call group."""
    with pytest.raises(NotApprover, match="on-call"):
        await _bg(harness).grant(harness.approver("bob"), subject="ops-bot", action="rollback",
                                 target="prod/payments-api", duration_s=60, reason="x", channel="cli")


async def test_reason_is_required(harness):
    """A reason is required."""
    with pytest.raises(InvalidRequest, match="reason"):
        await _bg(harness).grant(harness.approver("alice"), subject="ops-bot", action="rollback",
                                 target="prod/payments-api", duration_s=60, reason="  ", channel="cli")


async def test_duration_over_cap_is_cut_with_a_message(harness):
    """Duration is capped by the policy annotation and the engineer is told."""
    g = await _bg(harness).grant(harness.approver("alice"), subject="ops-bot", action="rollback",
                                 target="prod/payments-api", duration_s=7200, reason="long fix", channel="cli")
    assert g.request.approved_duration_s == 1800
    assert g.note and "cut to 30 min" in g.note and "break-glass" in g.note


async def test_policy_can_forbid_even_in_an_emergency(harness):
    """Cedar is still asked with break_glass=true; a forbid refuses and the attempt is audited."""
    with pytest.raises(Forbidden, match="even in an emergency"):
        await _bg(harness).grant(harness.approver("alice"), subject="ops-bot", action="db.export",
                                 target="prod/payments-api", duration_s=60, reason="need data", channel="cli")
    assert any(e["type"] == "breakglass.refused" for e in await _audit(harness))
    assert await harness.broker.store.scan_requests() == []


async def test_rate_limits(harness):
    """Abuse limits: at most 2 active grants per person, then a clear refusal."""
    bg = _bg(harness)
    for _ in range(2):
        await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                       duration_s=60, reason="x", channel="cli")
    with pytest.raises(Forbidden, match="2 active"):
        await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                       duration_s=60, reason="x", channel="cli")
    harness.clock.advance(61)  # both ended
    await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                   duration_s=60, reason="x", channel="cli")


async def test_daily_limit(harness):
    """Abuse limits: at most N break-glass grants per person per day."""
    import dataclasses

    bg = _bg(harness)
    bg.limits = dataclasses.replace(bg.limits, max_per_day=2, max_active=10)
    for _ in range(2):
        await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                       duration_s=60, reason="x", channel="cli")
    with pytest.raises(Forbidden, match="24 hours"):
        await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                       duration_s=60, reason="x", channel="cli")


async def test_review_acknowledged_by_security(harness):
    """Each break-glass opens a review only the security group can acknowledge, with a comment."""
    bg = _bg(harness)
    g = await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                       duration_s=60, reason="x", channel="cli")
    assert [r.id for r in await bg.pending_reviews()] == [g.request.id]
    with pytest.raises(NotApprover):
        await bg.acknowledge(g.request.id, harness.approver("bob"), comment="fine", channel="cli")
    with pytest.raises(InvalidRequest):
        await bg.acknowledge(g.request.id, harness.approver("carol"), comment="", channel="cli")
    req = await bg.acknowledge(g.request.id, harness.approver("carol"), comment="justified, INC-7", channel="cli")
    assert req.reviewed_by == "carol" and await bg.pending_reviews() == []
    harness.clock.advance(harness.settings.breakglass_review_s + 1)
    await bg.sweep_reviews()
    assert await bg.suspension("alice") is None


async def test_unreviewed_break_glass_suspends_until_reinstated(harness):
    """Past the review deadline unreviewed, the engineer's right is suspended; security reinstates it (audited)."""
    bg = _bg(harness)
    g = await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                       duration_s=60, reason="x", channel="cli")
    harness.clock.advance(harness.settings.breakglass_review_s / 2 + 1)
    assert await bg.sweep_reviews() == 1  # a reminder
    harness.clock.advance(harness.settings.breakglass_review_s / 2)
    await bg.sweep_reviews()
    assert (await bg.suspension("alice"))["request_id"] == g.request.id
    with pytest.raises(Forbidden, match="suspended"):
        await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                       duration_s=60, reason="again", channel="cli")
    with pytest.raises(NotApprover):
        await bg.reinstate("alice", harness.approver("bob"), channel="cli")
    await bg.reinstate("alice", harness.approver("carol"), channel="cli")
    assert await bg.suspension("alice") is None
    kinds = [e["type"] for e in await _audit(harness)]
    assert "breakglass.review_reminder" in kinds and "breakglass.suspended" in kinds and "breakglass.reinstated" in kinds
    await harness.broker.outbox.drain()
    assert any(k == "security" and "SUSPENDED" in t for k, _, t in harness.notifier.sent)
    assert any(k == "security" and "reinstated by carol" in t for k, _, t in harness.notifier.sent)


async def test_later_events_of_an_agent_break_glass_are_marked(harness):
    """Collection and the end of a break-glass grant are audited with the break-glass mark too."""
    g = await _bg(harness).grant(harness.approver("alice"), subject="ops-bot", action="rollback",
                                 target="prod/payments-api", duration_s=60, reason="x", channel="cli")
    await harness.collect(g.request.id, "ops-bot")
    await harness.life.revoke_as(g.request.id, harness.approver("alice"), reason="done", channel="cli")
    events = [e for e in await _audit(harness) if e.get("request_id") == g.request.id]
    kinds = {e["type"]: e for e in events}
    assert kinds["token.collected"]["data"]["break_glass"] is True
    assert kinds["grant.revoked"]["data"]["break_glass"] is True


async def test_an_agent_completing_its_break_glass_grant_is_marked(harness):
    """The agent's own completion of a break-glass grant is audited with the break-glass mark;
    another agent gets the same 404 as for a missing request and changes nothing."""
    g = await _bg(harness).grant(harness.approver("alice"), subject="ops-bot", action="rollback",
                                 target="prod/payments-api", duration_s=60, reason="x", channel="cli")
    await harness.collect(g.request.id, "ops-bot")
    assert (await harness.complete(g.request.id, "deploy-bot")).status_code == 404
    assert (await harness.life.get(g.request.id)).status == "active"
    r = await harness.complete(g.request.id, "ops-bot")
    assert r.status_code == 200 and r.json()["status"] == "completed"
    done = [e for e in await _audit(harness) if e.get("request_id") == g.request.id and e["type"] == "grant.completed"]
    assert len(done) == 1 and done[0]["data"]["break_glass"] is True


async def test_ending_a_grant_early_frees_its_slot(harness):
    """Abuse limits count active grants: one revoked early no longer counts."""
    bg = _bg(harness)
    grants = [await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                             duration_s=600, reason="x", channel="cli") for _ in range(2)]
    await harness.life.revoke_as(grants[0].request.id, harness.approver("alice"), reason="fixed", channel="cli")
    third = await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                           duration_s=600, reason="x", channel="cli")
    assert third.request.status == "active"


async def test_nobody_reviews_their_own_break_glass(harness):
    """Review is by someone else: an engineer in both on-call and security cannot acknowledge their own."""
    import dataclasses

    both = dataclasses.replace(harness.approver("alice"), groups=frozenset({"on-call", "security"}))
    g = await _bg(harness).grant(both, subject="me", action="rollback", target="prod/payments-api",
                                 duration_s=60, reason="x", channel="cli")
    with pytest.raises(NotApprover, match="own break-glass"):
        await _bg(harness).acknowledge(g.request.id, both, comment="fine", channel="cli")


async def test_signing_key_outlives_the_longest_break_glass_token(tmp_path, redis_url, prefix, redis):
    """Issue 24.5: retired signing keys were kept for twice the longest ordinary grant, not JITGATE_BREAKGLASS_MAX_S,
    so a long break-glass token stopped verifying before its exp. Every key is kept (published, and used by
    introspection) until the last token it signed has expired."""
    from broker.clock import ManualClock  # noqa: PLC0415
    from tests.support.harness import Harness, make_settings, write_agents  # noqa: PLC0415

    import shutil  # noqa: PLC0415

    from tests.support.harness import FIXTURES  # noqa: PLC0415

    policies = tmp_path / "policies"
    shutil.copytree(FIXTURES / "policies", policies)
    cedar = policies / "test.cedar"
    cedar.write_text(cedar.read_text().replace('@id("break-glass") @max_duration("1800")', '@id("break-glass")'))
    settings = make_settings(tmp_path, redis_url, prefix, max_duration_s=600, breakglass_max_s=7200,
                             key_rotation_s=3600, policy_dir=policies)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start(background=False)
    try:
        g = await h.broker.breakglass.grant(h.approver("alice"), subject="me", action="rollback",
                                            target="prod/payments-api", duration_s=7200, reason="long outage", channel="cli")
        token = g.token.access_token
        assert g.token.expires_in == 7200
        kid = jwt.get_unverified_header(token)["kid"]
        assert await h.broker.keyring.rotate(force=True)
        for _ in range(7):  # the scheduler's rotation job, hourly, until the token's last second
            h.clock.advance(1000)
            await h.broker.keyring.rotate()
            assert kid in [k["kid"] for k in (await h.client.get("/.well-known/jwks.json")).json()["keys"]]
            assert (await h.introspect(token)).json()["active"] is True
        h.clock.advance(199)
        assert (await h.introspect(token)).json()["active"] is True
    finally:
        await h.stop()
