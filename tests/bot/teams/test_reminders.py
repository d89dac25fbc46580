"""Requirement 6: reminders in the thread, escalation to the backup group with @mentions, and
the security channel / announcements that break-glass uses."""

from __future__ import annotations

import pytest

from broker.model import APPROVED
from broker.notices import audience
from broker.notify import Audience, Kind, MessageRef, Notice

from .conftest import APPROVALS, card_action, make_rig
from .test_cards import nodes

SECURITY = "19:security@thread.tacv2"


@pytest.fixture
async def rrig(tmp_path, redis_url, prefix, redis, fake_bf, fake_login):
    r = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login, reminder_interval_s=60, escalate_after_s=120,
                       teams_security_conversation=SECURITY)
    await r.install()
    await r.install(SECURITY)
    yield r
    await r.h.stop()


def mentioned(call) -> set[str]:
    return {e["mentioned"]["name"] for e in call.card.get("msteams", {}).get("entities", [])}


async def test_reminder_then_escalation_to_backup_group(rrig):
    """Reminders mention the approvers who may still decide; after escalate_after_s the backup group
    is @mentioned, the card is refreshed, and a backup member's click now counts."""
    h = rrig.h
    rid, card_id = await rrig.propose_posted(action="rollback")  # prod-rollback: 1 from sre, backup on-call

    h.clock.advance(61)
    await h.life.remind_due()
    await rrig.settle()
    reminders = [c for c in rrig.fake.replies(APPROVALS, card_id) if "Reminder" in str(c.card)]
    assert reminders and mentioned(reminders[-1]) == {"bob", "erin"}  # alice owns deploy-bot
    ent = {e["mentioned"]["name"]: e["mentioned"]["id"] for e in reminders[-1].card["msteams"]["entities"]}
    assert ent["bob"] == "29:bob-teams-id" and ent["erin"] == "aad-erin"  # a Teams id once seen, else the object id
    block = [t["text"] for t in nodes(reminders[-1].card, "TextBlock")][0]
    assert "<at>bob</at>" in block and "<at>erin</at>" in block

    early = await rrig.send(card_action(rid, reply_to_id=card_id, user="frank"))
    assert early.json()["statusCode"] == 403  # on-call may not decide before the escalation

    edits_before = len(rrig.fake.updates(card_id))
    h.clock.advance(60)
    await h.life.remind_due()
    await rrig.settle()
    escalations = [c for c in rrig.fake.replies(APPROVALS, card_id) if "Escalated" in str(c.card)]
    assert escalations and mentioned(escalations[-1]) == {"frank"}
    assert len(rrig.fake.updates(card_id)) > edits_before
    assert "escalated to on-call" in str(rrig.fake.updates(card_id)[-1].card)

    r = await rrig.send(card_action(rid, reply_to_id=card_id, user="frank"))
    assert r.json()["statusCode"] == 200
    assert (await h.life.get(rid)).status == APPROVED


async def test_security_alerts_and_announcements(rrig):
    """alert_security posts to TEAMS_SECURITY_CONVERSATION; announce posts where approvals are asked,
    mentioning the group; untrusted text stays plain."""
    rid, _ = await rrig.propose_posted()
    req = await rrig.h.life.get(rid)
    await rrig.desk.notifier.alert_security(Notice(Kind.BG_GRANTED, req, text="BREAK-GLASS by frank: **now**"))
    alert = rrig.fake.posts(SECURITY)[-1]
    runs = [n["text"] for n in nodes(alert.card, "TextRun")]
    assert "BREAK-GLASS by frank: **now**" in runs and nodes(alert.card, "TextBlock") == []
    who = audience(Kind.BG_GRANTED, req, rrig.h.broker.directory, security_group="security", bypassed_group="sre")
    await rrig.desk.notifier.announce(Notice(Kind.BG_GRANTED, req, who, announcement="Approval bypassed"))
    note = rrig.fake.posts(APPROVALS)[-1]
    assert "Approval bypassed" in str(note.card) and mentioned(note) == {"bob", "erin"}


async def test_break_glass_reaches_the_security_conversation(rrig):
    """The break-glass core's alerts go through this desk to the security conversation."""
    frank = rrig.h.approver("frank")
    await rrig.h.broker.breakglass.grant(frank, subject="deploy-bot", action="restart", target="prod/payments-api",
                                         duration_s=300, reason="site down", channel="teams")
    await rrig.settle()
    # One alert card per grant (tests/bot/teams/test_breakglass.py covers it in depth).
    assert any("Break-glass by frank" in str(c.card) and "Acknowledge review" in str(c.card)
               for c in rrig.fake.posts(SECURITY))
    assert any("Approval bypassed" in str(c.card) for c in rrig.fake.posts(APPROVALS))


async def test_a_reminder_mentions_the_audience_the_core_resolved(rrig):
    """Issue 15 "where a desk re-derives who to mention, it takes notice.audience instead": the reminder
    @mentions exactly the notice's deciders, not a list the desk works out for itself."""
    rid, card_id = await rrig.propose_posted()
    req = await rrig.h.life.get(rid)
    assert {a.id for a in rrig.h.life.deciders(req)} == {"bob", "erin"}
    refs = tuple(MessageRef.from_dict(m) for m in req.messages if m["transport"] == "teams")
    who = Audience(deciders=(rrig.h.approver("erin"),), decider_groups=("sre",))
    await rrig.desk.notifier.remind(Notice(Kind.REMIND, req, who, refs))
    (reminder,) = [c for c in rrig.fake.replies(APPROVALS, card_id) if "Reminder" in str(c.card)]
    assert mentioned(reminder) == {"erin"}
