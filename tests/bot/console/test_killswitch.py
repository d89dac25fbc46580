"""Issue 16, item 5 in the console: the kill switch page (security group), a confirmation page that
changes nothing, then the confirmation that ends everything matched."""

from __future__ import annotations


async def test_console_kill_switch_previews_then_confirms(console):
    """Issue 16.5 "the console (a page with confirmation)": carol's first post shows how many would end and
    changes nothing; the confirmation denies the agent's pending request and revokes its active grant, and the
    console says what was done."""
    h = console.h
    pending = (await h.propose("reader-bot", action="deploy")).json()["id"]
    grant = (await h.propose("reader-bot", action="read", target="staging/payments-api", duration_s=300)).json()["id"]
    assert (await h.collect(grant, "reader-bot")).status_code == 200
    other = (await h.propose("deploy-bot")).json()["id"]
    carol = await console.signed_in("carol")
    page = await carol.page("/console/killswitch")
    assert page.status_code == 200 and 'id="kill-form"' in page.text
    r = await carol.post("/console/killswitch", {"scope": "agent", "value": "reader-bot", "reason": "rogue agent"})
    assert r.status_code == 200 and 'id="confirm-form"' in r.text
    assert 'id="grants">1<' in r.text and 'id="pending">1<' in r.text
    assert (await h.life.get(pending)).status == "pending"
    r = await carol.post("/console/killswitch/confirm", {"scope": "agent", "value": "reader-bot", "reason": "rogue agent"})
    assert r.status_code == 303
    assert "1 grant(s) revoked, 1 pending request(s) denied" in (await carol.page()).text
    assert (await h.life.get(pending)).status == "denied" and (await h.life.get(grant)).status == "revoked"
    assert (await h.life.get(other)).status == "pending"
    assert (await h.life.get(grant)).closed_by == "carol"


async def test_console_kill_switch_is_refused_to_others_and_needs_csrf_and_a_reason(console):
    """Only the security group; the form's CSRF token is required; no reason changes nothing."""
    h = console.h
    rid = (await h.propose()).json()["id"]
    bob = await console.signed_in("bob")
    page = await bob.page("/console/killswitch")
    assert "only members of &#39;security&#39; may use the kill switch" in page.text and 'id="kill-form"' not in page.text
    r = await bob.post("/console/killswitch/confirm", {"scope": "all", "reason": "x"})
    assert r.status_code == 403
    carol = await console.signed_in("carol")
    r = await carol.post("/console/killswitch/confirm", {"scope": "all", "reason": "x"}, csrf=False)
    assert r.status_code == 403
    r = await carol.post("/console/killswitch", {"scope": "all", "reason": " "})
    assert r.status_code == 400 and "a reason is required" in r.text
    r = await carol.post("/console/killswitch/confirm", {"scope": "everything", "reason": "x"})
    assert r.status_code == 400
    assert (await h.life.get(rid)).status == "pending"
