"""Deny opens a modal asking for the reason; the reason reaches the agent and the audit log."""

from __future__ import annotations

from broker.audit import entries
from bot.slack.blocks import DENY, DENY_VIEW, REASON_BLOCK
from tests.bot.slack import slackreq


async def test_deny_with_reason_reaches_agent_audit_message_and_owner(slack):
    """Requirement 4: the modal carries only the request id; the submitted reason reaches the agent and the audit log."""
    rid = await slack.propose()
    ref = await slack.message_ref(rid)
    await slack.click("U0BOB", DENY, rid)
    (call,) = await slack.fake.wait_for(lambda: slack.fake.of("views.open"), what="deny modal")
    view = call.args["view"]
    assert view["callback_id"] == DENY_VIEW and view["private_metadata"] == rid
    assert (await slack.life.get(rid)).status == "pending"  # opening the modal decides nothing

    r = await slack.submit_deny("U0BOB", rid, "  change freeze until Monday  ")
    assert r.status_code == 200 and r.content in (b"", b"{}")  # the modal closes
    await slack.status(rid, "denied")
    body = (await slack.h.status(rid)).json()
    assert body["denial"]["by"] == "bob" and body["denial"]["reason"] == "change freeze until Monday"
    await slack.settle()
    store = slack.h.broker.store
    events = [e.body() async for e in entries(store.redis, store.audit_stream)]
    denied = [e for e in events if e["type"] == "request.denied" and e.get("request_id") == rid]
    assert denied and denied[0]["data"]["reason"] == "change freeze until Monday"
    assert denied[0]["actor"]["channel"] == "slack" and denied[0]["actor"]["platform_user"] == "U0BOB"

    text = slack.message_text(ref)
    assert "Denied by bob: change freeze until Monday" in text
    assert not [b for b in slack.message(ref)["blocks"] if b["type"] == "actions" and b.get("block_id") == "jit_decide"]
    assert any("Denied by bob" in t for t in slack.fake.thread(*ref))
    dms = [c.args["text"] for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "U0ALICE"]
    assert len(dms) == 1 and "denied by bob: change freeze until Monday" in dms[0]


async def test_blank_reason_keeps_the_modal_open(slack):
    """A reason of only spaces is answered with a field error in the modal; nothing is denied."""
    rid = await slack.propose()
    r = await slack.submit_deny("U0BOB", rid, "   ")
    assert r.status_code == 200
    answer = r.json()
    assert answer["response_action"] == "errors" and REASON_BLOCK in answer["errors"]
    await slack.settle()
    assert (await slack.life.get(rid)).status == "pending"


async def test_deny_submission_by_someone_not_allowed(slack):
    """Requirement 2: a deny submitted by a user who may not decide changes nothing and is explained."""
    rid = await slack.propose()
    await slack.submit_deny("U0ALICE", rid, "I own it and want it gone")  # the owner
    await slack.submit_deny("U0NOBODY", rid, "who am I")
    texts = await slack.ephemerals("U0ALICE") + await slack.ephemerals("U0NOBODY")
    assert "owns agent deploy-bot" in texts[0] and "not bound" in texts[1]
    await slack.settle()
    assert (await slack.life.get(rid)).status == "pending"


async def test_deny_modal_private_metadata_is_only_a_pointer(slack):
    """A submission naming a malformed id is refused; nothing is looked up by it."""
    rid = await slack.propose()
    body = slackreq.form_payload(slackreq.view_submission("U0BOB", "not an id!", "no"))
    r = await slack.post(body)
    assert r.status_code == 200
    text = await slack.fake.wait_for(
        lambda: [c.args["text"] for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "U0BOB"],
        what="DM with the error")
    assert "malformed escalation id" in text[0]
    assert (await slack.life.get(rid)).status == "pending"


async def test_modal_that_slack_refuses_is_explained(slack):
    """A deny modal Slack will not open (the trigger expired) leaves the clicker a note and changes nothing."""
    rid = await slack.propose()
    slack.fake.fail("views.open", 1, error="expired_trigger_id")
    await slack.click("U0BOB", DENY, rid)
    assert "please click again" in (await slack.ephemerals("U0BOB"))[0]
    assert (await slack.life.get(rid)).status == "pending"
