"""What the console shows: the full proposal, pending/grants/history sections, audit
trails, posture, the audit chain's verdict, break-glass reviews and the change counter."""

from __future__ import annotations

import asyncio

import re

from bot.console import ConsoleNotifier
from broker.model import iso


async def test_pending_request_shows_the_full_proposal(console):
    """Agent, owner, action, target, duration, confidence, delegation, justification, evidence URLs, verdict, deadline."""
    rid = (await console.h.propose(ticket="INC-42")).json()["id"]
    html = (await (await console.signed_in("bob")).page()).text
    card = html[html.index(f'id="req-{rid}"'):]
    for text in ("<code>deploy-bot</code>", "<dd>alice</dd>", "<code>deploy</code>", "<code>prod/payments-api</code>",
                 "10 min", "90 %", "none: the agent acts for itself", "roll out fix for INC-42", "INC-42",
                 ">https://tickets.example.com/INC-42</a>", "5xx rate 12% since 10:02", "<code>prod-deploy</code>",
                 "2 approvals from <strong>sre</strong>", "Policy maximum</dt><dd>15 min", "Decide before"):
        assert text in card, text
    req = await console.h.life.get(rid)
    assert req.proposal_sha256 in card
    deadline = re.search(r'Decide before</dt><dd><time datetime="([^"]+)"', card).group(1)
    assert deadline == iso(req.deadline)


async def test_requests_i_can_decide_come_first(console):
    """Requests the signed-in approver may decide are listed before those they may not."""
    mine = (await console.h.propose(action="restart", duration_s=60)).json()["id"]  # deploy-bot, owner alice
    theirs = (await console.h.propose(agent_id="ops-bot", action="restart", duration_s=60)).json()["id"]  # owner bob
    html = (await (await console.signed_in("bob")).page()).text
    assert html.index(f'id="req-{mine}"') < html.index(f'id="req-{theirs}"')
    assert f'id="approve-{mine}"' in html and f'id="approve-{theirs}"' not in html
    assert "bob owns agent ops-bot" in html


async def test_header_shows_posture_and_audit_chain_verdict(console, redis):
    """The header shows the risk posture, and says plainly when the audit chain no longer verifies."""
    carol = await console.signed_in("carol")
    html = (await carol.page()).text
    assert "posture: <strong>normal</strong>" in html and "audit chain verified" in html
    await console.h.life.set_posture("incident", console.h.approver("carol"), channel="cli")
    html = (await carol.page()).text
    assert "posture: <strong>incident</strong>" in html
    stream = console.h.broker.store.audit_stream
    sid, fields = (await redis.xrange(stream, count=1))[0]
    await redis.xadd(stream, {b"seq": b"999", b"prev": b"0" * 64, b"hash": b"0" * 64, b"event": b"{}"})
    html = (await carol.page()).text
    assert "audit chain BROKEN at entry" in html and "audit chain verified" not in html


async def test_history_lists_closed_requests_with_their_audit_trail(console):
    """A closed request moves to the history, with who closed it, why, and its audit events."""
    rid = (await console.h.propose(action="restart", duration_s=60)).json()["id"]
    bob = await console.signed_in("bob")
    await bob.act(rid, "deny", reason="use the runbook")
    html = (await bob.page()).text
    entry = html[html.index(f'id="hist-{rid}"'):]
    entry = entry[: entry.index("</li>\n  {") if "</li>\n  {" in entry else len(entry)]
    assert "denied" in entry and "<strong>bob</strong>" in entry and "use the runbook" in entry
    for kind in ("proposal.received", "policy.decision", "request.denied"):
        assert f"<code>{kind}</code>" in entry, kind
    assert f'id="req-{rid}"' not in html  # no longer pending


async def test_request_page_shows_the_whole_audit_trail_in_order(console):
    """The request page lists every audit event of the request, oldest first, with actor and channel."""
    rid = (await console.h.propose()).json()["id"]
    bob, erin = await console.signed_in("bob"), await console.signed_in("erin")
    await bob.act(rid, "approve")
    await erin.act(rid, "approve", duration_min="5")
    await console.h.collect(rid)
    await console.h.complete(rid)
    html = (await bob.page(f"/console/requests/{rid}")).text
    kinds = re.findall(r"<code>([a-z]+\.[a-z]+)</code>", html[html.index('id="h-trail"'):])
    kinds = [k for k in kinds if not k.startswith("notification.")]  # the log desk posts when the outbox runs
    assert kinds == ["proposal.received", "policy.decision", "approval.recorded", "approval.recorded",
                     "request.approved", "token.collected", "grant.completed"]
    assert "<strong>erin</strong> via console: approval 2 of 2, for at most 300 s" in html
    assert "Status: <strong>completed</strong>" in html


async def test_break_glass_reviews_section_is_labelled_and_empty_without_grants(console):
    """The break-glass review section is shown, labelled, and says plainly that nothing waits."""
    html = (await (await console.signed_in("carol")).page()).text
    assert 'id="h-reviews">Break-glass reviews awaiting acknowledgement' in html
    assert "No break-glass grant waits for a review." in html


async def _break_glass(console, subject="ops-bot"):
    g = await console.h.broker.breakglass.grant(
        console.h.approver("alice"), subject=subject, action="rollback", target="prod/payments-api",
        duration_s=600, reason="pods <b>crash</b>-looping", incident="INC-7", channel="cli")
    return g.request.id


async def test_break_glass_grant_awaits_review_and_security_acknowledges_it(console):
    """A break-glass grant is listed for review (who, why, incident, due); a security member acknowledges it with a comment."""
    rid = await _break_glass(console)
    carol = await console.signed_in("carol")
    html = (await carol.page()).text
    review = html[html.index(f'id="review-{rid}"'):]
    review = review[:review.index("</article>")]
    assert "BREAK-GLASS</strong> by <strong>alice</strong>, incident INC-7" in review
    assert "pods &lt;b&gt;crash&lt;/b&gt;-looping" in review and "Security review due" in review
    assert f'id="grant-{rid}"' in html and "badge-bg" in html  # also an open grant
    r = await carol.act(rid, "acknowledge", comment="   ")
    assert r.status_code == 400 and "a comment is required" in r.text
    assert (await carol.act(rid, "acknowledge", comment="checked the rollback in the incident log")).status_code == 303
    html = (await carol.page()).text
    assert f'id="review-{rid}"' not in html and "Review acknowledged: break-glass by alice" in html
    req = await console.h.life.get(rid)
    assert req.reviewed_by == "carol" and req.review_comment == "checked the rollback in the incident log"
    detail = (await carol.page(f"/console/requests/{rid}")).text
    assert "Review acknowledged by <strong>carol</strong>" in detail and "break-glass review acknowledged" in detail


async def test_only_security_may_acknowledge_a_break_glass_review(console):
    """Security (review rights): an sre approver cannot acknowledge a break-glass review; it stays open."""
    rid = await _break_glass(console)
    bob = await console.signed_in("bob")
    r = await bob.act(rid, "acknowledge", comment="looks fine to me")
    assert r.status_code == 403 and "only members of &#39;security&#39; may acknowledge" in r.text
    assert (await console.h.life.get(rid)).reviewed_by is None
    assert f'id="review-{rid}"' in (await bob.page()).text


async def test_break_glass_for_oneself_names_the_engineer(console):
    """A break-glass grant an engineer took for themself shows the engineer, not an empty agent."""
    rid = await _break_glass(console, subject="me")
    html = (await (await console.signed_in("carol")).page()).text
    row = html[html.index(f'id="grant-{rid}"'):]
    assert row.startswith(f'id="grant-{rid}">\n      <td><strong>alice</strong> (for themself)')


async def test_change_counter_moves_with_every_state_change(console):
    """The counter the page polls grows when anything changes (here: a proposal and an approval)."""
    bob = await console.signed_in("bob")
    first = (await bob.http.get("/console/changes")).json()["seq"]
    rid = (await console.h.propose(action="restart", duration_s=60)).json()["id"]
    second = (await bob.http.get("/console/changes")).json()["seq"]
    assert second > first
    await console.h.approve(rid, "erin")
    assert (await bob.http.get("/console/changes")).json()["seq"] > second


async def test_console_notifier_posts_nothing_and_stores_no_message_refs(console):
    """The console's notifier is honest: it posts nothing, so the request stores no console message refs."""
    rid = (await console.h.propose(action="restart", duration_s=60)).json()["id"]
    await console.h.broker.outbox.drain()
    req = await console.h.life.get(rid)
    assert [m["transport"] for m in req.messages] == ["log"]
    assert await ConsoleNotifier().post_proposal(req) == []
    assert "console" in [n.name for n in console.h.life.notifiers]


async def test_chain_status_stays_current_between_full_checks(console, redis):
    """Between full verifications new entries are checked incrementally; a bad new entry still shows BROKEN."""
    from bot.console.queries import ChainStatus

    from broker.audit import verify

    b = console.h.broker
    chain = ChainStatus(ttl_s=3600)
    first = await chain.get(b)
    assert first.ok
    await console.h.propose(action="restart", duration_s=60)
    await b.outbox.drain()  # its delivery appends the message refs entry: let it land first
    # The sealer runs beside the test: compare the two once it has sealed the new entries, or one
    # reading may see them unsealed and the other sealed (another head).
    for _ in range(100):
        if (await verify(b.redis, b.store.audit_stream, b.store.audit_head)).unsealed == 0:
            break
        await asyncio.sleep(0.05)
    second = await chain.get(b)
    full = await verify(b.redis, b.store.audit_stream, b.store.audit_head)
    assert second.ok and second.entries == full.entries > first.entries and second.head == full.head
    await redis.xadd(b.store.audit_stream, {b"seq": str(full.entries + 1).encode(), b"event": b"{}"})
    third = await chain.get(b)
    assert not third.ok and "outside the transition scripts" in third.problem


async def test_redis_unreachable_is_said_plainly(console):
    """When Redis does not answer, the console shows a 503 page saying so (not a stack trace or a blank page)."""
    import redis.asyncio as aioredis

    from broker.embedded_redis import free_port

    bob = await console.signed_in("bob")
    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    live, console.desk.views.sessions.redis = console.desk.views.sessions.redis, dead
    try:
        r = await bob.page()
    finally:
        console.desk.views.sessions.redis = live
        await dead.aclose()
    assert r.status_code == 503 and "Redis did not answer" in r.text and "Traceback" not in r.text
    assert (await bob.page()).status_code == 200


async def test_header_still_says_the_chain_verifies_after_a_trim(console, redis):
    """After `audit trim` the header still says the chain verifies (from the anchor, naming the
    trimmed entries), and the incremental check goes on from there."""
    import io

    from bot.console.queries import ChainStatus

    from broker import audit

    b = console.h.broker
    s = b.store
    await console.h.propose(action="restart", duration_s=60)
    await b.outbox.drain()  # its delivery appends the message refs entry: let it land first
    chain = ChainStatus(ttl_s=3600)
    assert (await chain.get(b)).ok
    await b.lifecycle.audit.seal()  # a trim removes only what a signed checkpoint covers
    out = io.StringIO()
    await audit.export(s.redis, s.audit_stream, out, s.audit_head)
    plan = await audit.plan_trim(s.redis, s.audit_stream, s.audit_head, 3, out.getvalue().splitlines())
    await audit.trim(s.redis, s.audit_stream, s.audit_head, plan, at=iso(console.h.clock.now()),
                     actor={"operator": "os:test", "channel": "cli"})
    html = (await (await console.signed_in("carol")).page()).text
    assert "audit chain verified (" in html and "after 2 trimmed once exported" in html
    after_trim = await chain.get(b)  # the cached result predates the trim: a full check from the anchor
    assert after_trim.ok and after_trim.trimmed == 2
    await console.h.propose(action="restart", duration_s=60)
    await b.outbox.drain()
    extended = await chain.get(b)
    full = await audit.verify(s.redis, s.audit_stream, s.audit_head)
    assert extended.ok and (extended.seq, extended.head, extended.trimmed) == (full.seq, full.head, 2)
    await redis.xadd(s.audit_stream, {b"seq": str(full.seq + 1).encode(), b"event": b"{}"})
    assert not (await chain.get(b)).ok
