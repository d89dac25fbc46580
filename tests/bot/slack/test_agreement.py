"""Issue 15 on the Slack desk: who may decide and the grant cap are the core's (tests/bot/agreement.py)."""

from __future__ import annotations

import re

from bot.slack.blocks import APPROVE, APPROVE_FOR
from broker.model import APPROVED
from tests.bot import agreement

from .conftest import running


async def test_slack_agrees_with_the_core_on_who_may_decide_and_the_cap(tmp_path, redis_url, prefix, redis, fake_slack):
    """Issue 15 "a test per desk shows the desks agree on it": the reminder @mentions exactly who the core says may
    still decide, the owner's click is refused in the core's words, the offered durations are those below the core's
    cap, and a plain Approve grants exactly that cap."""
    async with running(tmp_path, redis_url, prefix, fake_slack,
                       approvers_file=agreement.approvers_file(tmp_path)) as slack:
        rid = await agreement.setup(slack.h)
        ref = await slack.message_ref(rid)
        await slack.settle()
        who, cap, shorter = await agreement.expected(slack.h, rid)

        await slack.life.deliver("remind", rid)
        reminder = [t for t in slack.fake.thread(*ref) if ":bell:" in t][-1]
        directory = slack.h.broker.directory
        by_slack = {a.slack: a.id for a in directory.approvers}
        assert {by_slack[u] for u in re.findall(r"<@(U\w+)>", reminder)} == who

        select = [e for b in slack.message(ref)["blocks"] if b["type"] == "actions" for e in b["elements"]
                  if e["action_id"] == APPROVE_FOR]
        offered = [int(o["value"].rpartition(":")[2]) for o in select[0]["options"]] if select else []
        assert offered == shorter

        await slack.click("U0ALICE", APPROVE, rid, ref=ref)
        assert "alice owns agent deploy-bot" in (await slack.ephemerals("U0ALICE"))[0]
        await slack.click("U0ERIN", APPROVE, rid, ref=ref)
        req = await slack.status(rid, APPROVED)
        assert req.approved_duration_s == cap
