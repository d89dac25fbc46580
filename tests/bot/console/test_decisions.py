"""Approve, approve for less time, deny with a reason and revoke from the console: the
lifecycle decides who may, exactly as for a chat click."""

from __future__ import annotations


async def _restart(console) -> str:
    r = await console.h.propose(action="restart", duration_s=300)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_approval_from_the_console_is_counted_and_attributed(console):
    """An approval is recorded with channel 'console' and the session it came from; N of M applies."""
    rid = (await console.h.propose()).json()["id"]  # prod deploy: 2 sre approvals
    bob = await console.signed_in("bob")
    r = await bob.act(rid, "approve")
    assert r.status_code == 303
    assert "Your approval is recorded (1 of 2)" in (await bob.page()).text
    req = await console.h.life.get(rid)
    assert req.status == "pending" and req.approvals[0]["approver"] == "bob"
    assert req.approvals[0]["channel"] == "console" and req.approvals[0]["platform_user"].startswith("console:")
    erin = await console.signed_in("erin")
    assert (await erin.act(rid, "approve")).status_code == 303
    assert "Approved for 10 min" in (await erin.page()).text
    assert (await console.h.life.get(rid)).status == "approved"
    body = (await console.h.status(rid)).json()
    assert body["status"] == "approved" and [a["approver"] for a in body["approvals"]] == ["bob", "erin"]


async def test_approve_for_less_time_shortens_the_grant(console):
    """'Approve for less time' grants the shorter duration the approver chose."""
    rid = await _restart(console)
    bob = await console.signed_in("bob")
    assert (await bob.act(rid, "approve", duration_min="2")).status_code == 303
    req = await console.h.life.get(rid)
    assert req.status == "approved" and req.approved_duration_s == 120
    assert req.approvals[0]["duration_s"] == 120


async def test_approving_for_longer_than_policy_allows_is_refused(console):
    """A duration beyond what policy allows is refused with the bound, and nothing is recorded."""
    rid = await _restart(console)  # prod-restart: at most 300 s
    bob = await console.signed_in("bob")
    r = await bob.act(rid, "approve", duration_min="30")
    assert r.status_code == 400 and "duration must be between 1 and 300 seconds" in r.text
    r = await bob.act(rid, "approve", duration_min="soon")
    assert r.status_code == 400 and "number of minutes" in r.text
    assert (await console.h.life.get(rid)).approvals == []


async def test_deny_with_reason_reaches_the_agent(console):
    """A denial carries the approver and the reason to the agent's status call."""
    rid = await _restart(console)
    bob = await console.signed_in("bob")
    assert (await bob.act(rid, "deny", reason="change freeze until 18:00")).status_code == 303
    body = (await console.h.status(rid)).json()
    assert body["status"] == "denied"
    assert body["denial"]["by"] == "bob" and body["denial"]["reason"] == "change freeze until 18:00"
    assert body["denial"]["channel"] == "console"


async def test_deny_without_a_reason_is_refused(console):
    """Denying needs a reason; an empty one is refused and the request stays pending."""
    rid = await _restart(console)
    bob = await console.signed_in("bob")
    r = await bob.act(rid, "deny", reason="   ")
    assert r.status_code == 400 and "a reason is required to deny" in r.text
    assert (await console.h.life.get(rid)).status == "pending"


async def test_approver_outside_the_required_group_is_refused(console):
    """Security (same checks as chat): dave (platform) cannot approve or deny a prod restart needing sre."""
    rid = await _restart(console)
    dave = await console.signed_in("dave")
    page = (await dave.page()).text
    assert f'id="approve-{rid}"' not in page
    assert "You cannot decide this request: only members of &#39;sre&#39; may decide this request" in page
    r = await dave.act(rid, "approve")
    assert r.status_code == 403 and "only members of &#39;sre&#39; may decide this request" in r.text
    r = await dave.act(rid, "deny", reason="no")
    assert r.status_code == 403
    req = await console.h.life.get(rid)
    assert req.status == "pending" and req.approvals == []


async def test_owner_of_the_agent_cannot_approve_its_request(console):
    """Security (separation of duties): alice is sre but owns deploy-bot, so she cannot approve its request."""
    rid = await _restart(console)  # deploy-bot, owner alice
    alice = await console.signed_in("alice")
    assert f'id="approve-{rid}"' not in (await alice.page()).text
    r = await alice.act(rid, "approve")
    assert r.status_code == 403 and "owns agent deploy-bot" in r.text
    assert (await console.h.life.get(rid)).approvals == []


async def test_deciding_a_closed_request_says_what_happened(console):
    """A late click gets the lifecycle's conflict ('already denied by bob: …'), not a second outcome."""
    rid = await _restart(console)
    bob, erin = await console.signed_in("bob"), await console.signed_in("erin")
    erin_csrf = await erin.csrf()
    assert (await bob.act(rid, "deny", reason="not now")).status_code == 303
    r = await erin.post(f"/console/requests/{rid}/approve", {"csrf": erin_csrf})
    assert r.status_code == 409 and "already denied by bob: not now" in r.text
    assert (await console.h.life.get(rid)).status == "denied"


async def test_repeated_approval_is_a_no_op(console):
    """The same approver approving twice (a double click) counts once."""
    rid = (await console.h.propose()).json()["id"]
    bob = await console.signed_in("bob")
    csrf = await bob.csrf()
    for _ in range(2):
        assert (await bob.post(f"/console/requests/{rid}/approve", {"csrf": csrf})).status_code == 303
    req = await console.h.life.get(rid)
    assert req.status == "pending" and req.approvers == ["bob"]


async def test_revoke_from_the_console_ends_the_grant(console):
    """Revoke ends an active grant at once; the agent's token stops introspecting as active."""
    rid = await _restart(console)
    await console.h.approve(rid, "bob")
    token = (await console.h.collect(rid)).json()["access_token"]
    erin = await console.signed_in("erin")
    page = (await erin.page()).text
    assert f'id="grant-{rid}"' in page and "active: the agent holds a token" in page
    assert (await erin.act(rid, "revoke", reason="done by hand")).status_code == 303
    req = await console.h.life.get(rid)
    assert req.status == "revoked" and req.closed_by == "erin" and req.close_reason == "done by hand"
    assert (await console.h.introspect(token)).json() == {"active": False}
    page = (await erin.page()).text
    assert f'id="grant-{rid}"' not in page and f'id="hist-{rid}"' in page


async def test_revoke_by_someone_without_rights_is_refused(console):
    """Security (revocation rights): frank (on-call only) may not revoke an sre-approved grant."""
    rid = await _restart(console)
    await console.h.approve(rid, "bob")
    frank = await console.signed_in("frank")
    r = await frank.act(rid, "revoke", reason="mine now")
    assert r.status_code == 403 and "may revoke this grant" in r.text
    assert (await console.h.life.get(rid)).status == "approved"


async def test_decision_on_an_unknown_request_is_a_404(console):
    """A malformed or unknown request id is a plain 404 page, never an error trace."""
    bob = await console.signed_in("bob")
    assert (await bob.act("not-an-id!", "approve")).status_code == 404
    r = await bob.act("A" * 22, "approve")
    assert r.status_code == 404 and "no escalation" in r.text
    assert (await bob.page("/console/requests/" + "A" * 22)).status_code == 404
