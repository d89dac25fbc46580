"""The whole flow through Slack: propose → message with buttons → two signed clicks →
the agent's long-poll returns approved → token collected → expiry; the message shows each step."""

from __future__ import annotations

import asyncio

from bot.slack.blocks import APPROVE, APPROVE_FOR, DENY


def _action_ids(message: dict) -> list[str]:
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


async def test_propose_approve_twice_collect_expire(slack):
    """N-of-M through signed clicks: the long-poll wakes on the second approval; every step edits the message in place."""
    rid = await slack.propose()
    ref = await slack.message_ref(rid)
    post = slack.fake.of("chat.postMessage")[0]
    assert post.args["channel"] == "#approvals" and post.args["unfurl_links"] is False
    assert set(_action_ids(slack.message(ref))) == {APPROVE, APPROVE_FOR, DENY}
    text = slack.message_text(ref)
    assert "deploy-bot" in text and "prod/payments-api" in text and "roll out fix for INC-42" in text
    assert "needs 2 approvals from sre; decided by policy prod-deploy" in text
    assert "https://tickets.example.com/INC-42" in text and "5xx rate 12% since 10:02" in text

    waiter = asyncio.create_task(slack.h.status(rid, wait=10))
    r = await slack.click("U0BOB", APPROVE, rid)
    assert r.status_code == 200
    await slack.fake.wait_for(lambda: "Waiting for 1 more approval (1 of 2 so far: bob)" in slack.message_text(ref),
                              what="message shows bob's approval")
    assert set(_action_ids(slack.message(ref))) == {APPROVE, APPROVE_FOR, DENY}  # still open
    assert not waiter.done()

    r = await slack.click("U0ERIN", APPROVE, rid)
    assert r.status_code == 200
    polled = (await asyncio.wait_for(waiter, 5)).json()
    assert polled["status"] == "approved" and [a["approver"] for a in polled["approvals"]] == ["bob", "erin"]
    assert all(a["channel"] == "slack" for a in polled["approvals"])
    await slack.fake.wait_for(lambda: "Approved by bob, erin" in slack.message_text(ref), what="approved message")
    assert _action_ids(slack.message(ref)) == []  # buttons removed once decided

    tok = await slack.h.collect(rid)
    assert tok.status_code == 200
    await slack.fake.wait_for(lambda: "token collected" in slack.message_text(ref), what="collected message")

    slack.h.clock.advance(601)
    await slack.status(rid, "expired")
    await slack.fake.wait_for(lambda: "Expired: grant ended" in slack.message_text(ref), what="expired message")
    await slack.settle()
    thread = slack.fake.thread(*ref)
    assert any("bob approved (1 of 2)" in t for t in thread)
    assert any("Approved by bob, erin" in t for t in thread)
    assert any("collected its token" in t for t in thread)
    assert any("reached its time limit" in t for t in thread)
    # The owner (alice) was told the outcome in a DM, once.
    dms = [c for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "U0ALICE"]
    assert len(dms) == 1 and "approved by bob, erin" in dms[0].args["text"]
    timeline = slack.message_text(ref)
    for step in ("proposed by deploy-bot", "bob approved (1 of 2)", "erin approved (2 of 2)",
                 "token collected by deploy-bot", "expired by scheduler"):
        assert step in timeline


async def test_withdrawal_and_completion_edit_the_message(slack):
    """Requirement 5: cancelled (withdrawn by the agent) and completed also edit the message in place and are said in its thread."""
    rid = await slack.propose()
    ref = await slack.message_ref(rid)
    r = await slack.h.client.delete(f"/v1/escalations/{rid}", headers=slack.h.auth("deploy-bot"))
    assert r.status_code == 200, r.text
    await slack.fake.wait_for(lambda: "Withdrawn by the agent" in slack.message_text(ref), what="withdrawn message")
    assert _action_ids(slack.message(ref)) == []
    await slack.settle()
    assert any("deploy-bot withdrew the request" in t for t in slack.fake.thread(*ref))
    await slack.click("U0BOB", APPROVE, rid)  # a click on the old message: nothing to decide
    assert "already cancelled" in (await slack.ephemerals("U0BOB"))[0]

    rid = await slack.propose(justification="second")
    ref = await slack.message_ref(rid)
    await slack.click("U0BOB", APPROVE, rid)
    await slack.click("U0ERIN", APPROVE, rid)
    await slack.status(rid, "approved")
    assert (await slack.h.collect(rid)).status_code == 200
    assert (await slack.h.complete(rid)).status_code == 200
    await slack.fake.wait_for(lambda: "Completed: the agent reported the task done" in slack.message_text(ref),
                              what="completed message")
    await slack.settle()
    assert any("reported the task done" in t for t in slack.fake.thread(*ref))
