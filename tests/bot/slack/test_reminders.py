"""Nobody answers: reminders in the thread, escalation to the backup group with mentions,
expiry at the deadline (deny by default), and the message says so."""

from __future__ import annotations

import pytest

from broker.notify import Audience, Kind, MessageRef, Notice
from bot.slack.blocks import APPROVE
from tests.bot.slack.conftest import running


@pytest.fixture
async def slow_slack(tmp_path, redis_url, prefix, redis, fake_slack):
    """The Slack desk with reminders every 60 s and escalation after 120 s."""
    async with running(tmp_path, redis_url, prefix, fake_slack, reminder_interval_s=60, escalate_after_s=120) as driver:
        yield driver


async def test_reminder_then_escalation_to_backup_group(slow_slack):
    """Requirement 6: a reminder mentions who may still decide; escalation mentions the backup group, who may then approve."""
    slack = slow_slack
    # prod-rollback: 1 sre approval, backup group on-call; ops-bot is owned by bob.
    rid = await slack.propose("ops-bot", action="rollback")
    ref = await slack.message_ref(rid)
    await slack.click("U0FRANK", APPROVE, rid)  # on-call before escalation: not yet
    assert "only members of 'sre'" in (await slack.ephemerals("U0FRANK"))[0]

    slack.h.clock.advance(61)
    await slack.life.remind_due()  # (the scheduler may get there first: same outcome)
    reminder = (await slack.fake.wait_for(lambda: slack.fake.thread(*ref), what="reminder"))[0]
    assert reminder.startswith(":bell: Reminder:") and "1 more approval from sre" in reminder
    assert "<@U0ALICE>" in reminder and "<@U0ERIN>" in reminder
    assert "<@U0BOB>" not in reminder  # the owner is not asked

    slack.h.clock.advance(60)
    await slack.life.remind_due()
    escalation = (await slack.fake.wait_for(
        lambda: [t for t in slack.fake.thread(*ref) if "Escalated" in t], what="escalation"))[0]
    await slack.settle()
    assert len([t for t in slack.fake.thread(*ref) if "Escalated" in t]) == 1
    assert "on-call" in escalation
    assert "<@U0FRANK>" in escalation and "<@U0ALICE>" in escalation and "<@U0BOB>" not in escalation
    call = [c for c in slack.fake.of("chat.postMessage") if c.args.get("text") == escalation][0]
    assert call.args["reply_broadcast"] is True  # seen in the channel, not only in the thread
    assert "escalated to on-call" in slack.message_text(ref)

    await slack.click("U0FRANK", APPROVE, rid)
    req = await slack.status(rid, "approved")
    assert req.approvers == ["frank"]


async def test_no_decision_expires_and_denies_by_default(slack):
    """Requirement 6: at the deadline the request expires; the message, the thread and the owner say so."""
    rid = await slack.propose()
    ref = await slack.message_ref(rid)
    slack.h.clock.advance(901)
    await slack.status(rid, "expired")
    await slack.fake.wait_for(lambda: "denied by default" in slack.message_text(ref), what="expired message")
    await slack.settle()
    assert not [b for b in slack.message(ref)["blocks"] if b.get("block_id") == "jit_decide"]
    assert any("nobody decided before the deadline" in t for t in slack.fake.thread(*ref))
    dms = [c.args["text"] for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "U0ALICE"]
    assert len(dms) == 1 and "expired" in dms[0]
    await slack.click("U0BOB", APPROVE, rid)  # too late
    assert "already expired" in (await slack.ephemerals("U0BOB"))[0]


async def test_reminder_for_a_decided_request_says_nothing(slack):
    """A reminder delivered after the decision posts nothing (rendered from the request as it is now)."""
    rid = await slack.propose("ops-bot", action="rollback")
    ref = await slack.message_ref(rid)
    await slack.click("U0ERIN", APPROVE, rid)
    req = await slack.status(rid, "approved")
    await slack.settle()
    before = len(slack.fake.calls)
    notifier = slack.h.broker.desks[0].notifier
    await notifier.remind(Notice(Kind.REMIND, req, refs=(MessageRef("slack", *ref),)))
    assert len(slack.fake.calls) == before


async def test_a_reminder_mentions_the_audience_the_core_resolved(slack):
    """Issue 15 "where a desk re-derives who to mention, it takes notice.audience instead": the reminder
    @mentions exactly the notice's deciders (and the user groups bound to its groups), nobody the desk picks."""
    rid = await slack.propose("ops-bot", action="rollback")
    ref = await slack.message_ref(rid)
    req = await slack.life.get(rid)
    assert {"alice", "erin"} <= {a.id for a in slack.life.deciders(req)}
    notifier = slack.h.broker.desks[0].notifier
    who = Audience(deciders=(slack.h.approver("erin"),), decider_groups=("sre",))
    await notifier.remind(Notice(Kind.REMIND, req, who, (MessageRef("slack", *ref),)))
    (reminder,) = [t for t in slack.fake.thread(*ref) if t.startswith(":bell:")]
    assert "<@U0ERIN>" in reminder and "<@U0ALICE>" not in reminder
