"""The desk kit's break-glass commands on their own (bot/kit/breakglass.py), against a running broker on
real Redis: issue 15, "the command table and its neutral handlers returning an answer each desk formats"
(here: ``breakglass`` and ``breakglass-reinstate``). The desks' own tests check the same commands end to
end: tests/bot/slack/test_breakglass.py and tests/bot/teams/test_breakglass.py."""

from __future__ import annotations

import pytest

from broker.errors import Conflict, InvalidRequest, NotApprover

from bot.commands import Usage, parse_breakglass
from bot.kit import breakglass as bgkit
from bot.kit.confirmations import Confirmations, preview_digest

ARGS = "ops-bot rollback prod/payments-api 10m pods crash-looping --incident INC-7"


async def _audit_len(h) -> int:
    s = h.broker.store
    return await s.redis.xlen(s.audit_stream)


def test_a_person_is_exactly_one_word_as_typed():
    """breakglass-reinstate takes one person; the word is kept as typed for the desk's mention form."""
    assert bgkit.parse_person("  <@U0FRANK>  ") == "<@U0FRANK>"
    for rest in ("", "frank erin", "   "):
        with pytest.raises(Usage):
            bgkit.parse_person(rest)


def test_engineer_id_reads_an_id_an_at_id_or_the_desks_mention():
    """An approver id or @id everywhere; a desk's own mention form only through its hook; else InvalidRequest."""
    assert bgkit.engineer_id("frank") == bgkit.engineer_id("@frank") == "frank"
    slack = {"<@U0FRANK>": "frank"}.get
    assert bgkit.engineer_id("<@U0FRANK>", slack) == "frank" and bgkit.engineer_id("@erin", slack) == "erin"
    assert bgkit.engineer_id("<@U0FRANK>") == "<@U0FRANK>"  # a desk without mentions reads no mention
    with pytest.raises(InvalidRequest, match="approver id"):
        bgkit.engineer_id("@")
    with pytest.raises(InvalidRequest, match="or as"):
        bgkit.engineer_id("bad\x07id", slack, "by id or as a mention")


async def test_breakglass_previews_and_keeps_a_confirmation_but_grants_nothing(harness, redis, prefix):
    """Break-glass: "The command checks everything first (the core's preview)"; the confirmation record is
    kept for the person who typed it, with the parameters and what was shown; nothing is granted yet."""
    store = Confirmations(redis, prefix, "kit")
    args = parse_breakglass(ARGS)
    before = await _audit_len(harness)
    c = await bgkit.breakglass(harness.broker.breakglass, store, harness.approver("alice"), args, user="U1",
                               tenant="T1", where="C1")
    assert (c.preview.subject, c.preview.action, c.preview.target) == ("ops-bot", "rollback", "prod/payments-api")
    assert c.params == args.to_json() and c.review_s == harness.broker.breakglass.limits.review_s
    assert await _audit_len(harness) == before  # no grant, no audit entry
    assert (await store.take(c.nonce, "U2", "T1"))[0] == "other"
    verdict, record = await store.take(c.nonce, "U1", "T1")
    assert verdict == "ok" and Confirmations.same_engineer(record, "alice") and record["where"] == "C1"
    assert Confirmations.matches(record, shown_in=None, params=c.params)
    assert record["shown"] == preview_digest(c.preview)


async def test_breakglass_refused_by_the_core_keeps_no_confirmation(harness, redis, prefix):
    """"Only on-call may break glass": a refused preview raises and leaves no record to confirm."""
    store = Confirmations(redis, prefix, "kit")
    with pytest.raises(NotApprover):
        await bgkit.breakglass(harness.broker.breakglass, store, harness.approver("bob"), parse_breakglass(ARGS),
                               user="U1", tenant="T1", where="C1")
    assert [k async for k in redis.scan_iter(match=prefix + "kit:bg-confirm:*")] == []


async def test_reinstate_names_the_grant_that_suspended_the_right(harness):
    """Past the review deadline unreviewed, the right is suspended; security reinstates it, and the reply
    names the grant whose security thread the desk tells; others may not, and a second time is refused."""
    bg = harness.broker.breakglass
    g = await bg.grant(harness.approver("alice"), subject="me", action="rollback", target="prod/payments-api",
                       duration_s=60, reason="x", channel="cli")
    harness.clock.advance(harness.settings.breakglass_review_s + 1)
    await bg.sweep_reviews()
    await bg.sweep_reviews()
    assert (await bg.suspension("alice"))["request_id"] == g.request.id
    with pytest.raises(NotApprover):
        await bgkit.reinstate(bg, harness.approver("bob"), "alice", channel="cli")
    done = await bgkit.reinstate(bg, harness.approver("carol"), "alice", channel="cli")
    assert done == bgkit.Reinstated("alice", g.request.id) and await bg.suspension("alice") is None
    with pytest.raises(Conflict, match="not suspended"):
        await bgkit.reinstate(bg, harness.approver("carol"), "alice", channel="cli")
