"""``/jit``: list, status, revoke, posture, help; acked within 3 s, answered ephemerally."""

from __future__ import annotations

import time

from bot.slack.blocks import APPROVE


async def _jit(slack, user: str, text: str):
    started = time.monotonic()
    r = await slack.jit(user, text)
    assert r.status_code == 200
    assert time.monotonic() - started < 3  # Slack's limit for the ack
    return r


async def test_help_and_usage_come_in_the_ack(slack):
    """Requirement 7: help and bad arguments are answered right in the ack, ephemerally, with usage text."""
    r = await _jit(slack, "U0BOB", "help")
    assert r.json()["response_type"] == "ephemeral" and "/jit revoke &lt;id&gt; [reason]" in r.json()["text"]
    r = await _jit(slack, "U0BOB", "")
    assert "/jit list" in r.json()["text"]
    r = await _jit(slack, "U0BOB", "status")
    assert r.json()["text"] == ":warning: Usage: `/jit status &lt;id&gt;`"
    r = await _jit(slack, "U0BOB", "posture panic")
    assert "Usage: `/jit posture [normal|elevated|incident]`" in r.json()["text"]
    r = await _jit(slack, "U0BOB", "list everything")
    assert "Usage: `/jit list`" in r.json()["text"]
    r = await _jit(slack, "U0BOB", "launch <!channel>")
    assert "Unknown sub-command `launch`" in r.json()["text"] and r.json()["response_type"] == "ephemeral"


async def test_list_shows_what_waits_for_me(slack):
    """Requirement 7: list shows the pending requests this person may still decide, not others'."""
    rid = await slack.propose()
    r = await _jit(slack, "U0BOB", "list")
    assert r.content == b""  # acked at once; the answer follows through response_url
    answer = await slack.answer("U0BOB")
    assert answer["response_type"] == "ephemeral" and rid in answer["text"] and "deploy-bot" in answer["text"]
    await _jit(slack, "U0ALICE", "list")  # alice owns deploy-bot: nothing for her
    assert rid not in (await slack.answer("U0ALICE"))["text"]
    await slack.click("U0BOB", APPROVE, rid)
    await slack.ephemerals("U0BOB")
    await _jit(slack, "U0BOB", "list")
    assert "Nothing is waiting for you" in (await slack.answer("U0BOB", 2))["text"]


async def test_status_and_unbound_users(slack):
    """Requirement 7: status shows where a request stands; an unbound Slack user is told they are not an approver."""
    rid = await slack.propose()
    await _jit(slack, "U0ERIN", f"status {rid}")
    text = (await slack.answer("U0ERIN"))["text"]
    assert "Pending" in text and "needs 2 approvals from sre" in text
    await _jit(slack, "U0NOBODY", f"status {rid}")
    assert "not bound to an approver" in (await slack.answer("U0NOBODY"))["text"]
    await _jit(slack, "U0ERIN", "status nosuchrequest0")
    assert "no escalation nosuchrequest0" in (await slack.answer("U0ERIN", 2))["text"]


async def test_revoke_by_approver_not_by_others(slack):
    """Requirement 7: revoke works for the request's approver group and is refused to others; the message says so."""
    rid = await slack.propose()
    ref = await slack.message_ref(rid)
    await slack.click("U0BOB", APPROVE, rid)
    await slack.click("U0ERIN", APPROVE, rid)
    await slack.status(rid, "approved")
    await _jit(slack, "U0DAVE", f"revoke {rid} because")
    assert "may not do that" in (await slack.answer("U0DAVE"))["text"]
    assert (await slack.life.get(rid)).status == "approved"
    await _jit(slack, "U0ERIN", f"revoke {rid} wrong target after all")
    assert "Revoked" in (await slack.answer("U0ERIN"))["text"]
    req = await slack.status(rid, "revoked")
    assert req.closed_by == "erin" and req.close_reason == "wrong target after all"
    await slack.fake.wait_for(lambda: "Revoked by erin: wrong target after all" in slack.message_text(ref),
                              what="message shows the revocation")
    await slack.settle()
    assert any("Revoked by erin" in t for t in slack.fake.thread(*ref))
    dms = [c.args["text"] for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "U0ALICE"]
    assert any("was revoked by erin: wrong target after all" in t for t in dms)  # the owner hears of it


async def test_posture_is_for_the_security_group(slack):
    """Requirement 7: only the security group sets the posture; it reaches the next policy decision."""
    await _jit(slack, "U0BOB", "posture incident")
    assert "may not do that" in (await slack.answer("U0BOB"))["text"]
    assert await slack.life.posture() == "normal"
    await _jit(slack, "U0CAROL", "posture incident")
    assert "now *incident*" in (await slack.answer("U0CAROL"))["text"]
    slack.life._posture = (0.0, "normal")  # skip the 1 s cache instead of sleeping
    await _jit(slack, "U0BOB", "posture")
    assert "*incident*" in (await slack.answer("U0BOB", 2))["text"]
    r = await slack.h.propose()
    assert r.json()["status"] == "denied" and "incident-freeze" in r.json()["decision"]["policies"]


async def test_posture_incident_from_slack_ends_what_policy_no_longer_permits_and_updates_the_messages(slack):
    """Issue 16, item 1: security sets the posture to incident with /jit; the policies decide
    every open request again, so a pending request and an approved one are denied by policy
    (incident-freeze) and their Slack messages say so, through the outbox like any denial."""
    pending = await slack.propose()
    approved = await slack.propose()
    refs = {rid: await slack.message_ref(rid) for rid in (pending, approved)}
    await slack.click("U0BOB", APPROVE, approved)
    await slack.click("U0ERIN", APPROVE, approved)
    await slack.status(approved, "approved")
    await _jit(slack, "U0CAROL", "posture incident")
    assert "now *incident*" in (await slack.answer("U0CAROL"))["text"]
    for rid in (pending, approved):
        req = await slack.status(rid, "denied")
        assert req.denial["by"] == "policy" and req.denial["policies"] == ["incident-freeze"]
        await slack.fake.wait_for(lambda rid=rid: "Denied by policy" in slack.message_text(refs[rid])
                                  and "incident-freeze" in slack.message_text(refs[rid]),
                                  what="message shows the denial by policy")
