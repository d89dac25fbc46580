"""Clicks: verified by Bolt, authorized by the broker on every click; refusals change nothing."""

from __future__ import annotations

import time

from bot.slack.blocks import APPROVE, APPROVE_FOR, DENY, EVIDENCE
from tests.bot.slack import slackreq
from tests.bot.slack.conftest import running


async def _unchanged(slack, rid: str, version: int) -> None:
    await slack.settle()
    req = await slack.life.get(rid)
    assert req.version == version and req.approvals == [] and req.status == "pending"


async def test_bad_signature_is_refused(slack):
    """Requirement 2: a body signed with another secret gets 401 and changes nothing."""
    rid = await slack.propose()
    channel, ts = await slack.message_ref(rid)
    version = (await slack.life.get(rid)).version
    body = slackreq.form_payload(slackreq.block_actions("U0BOB", APPROVE, value=rid, channel=channel, ts=ts))
    r = await slack.post(body, slackreq.signed(body, secret="not-the-secret"))
    assert r.status_code == 401
    await _unchanged(slack, rid, version)
    assert slack.fake.of("chat.postEphemeral") == []


async def test_tampered_body_is_refused(slack):
    """Requirement 2: the signature covers the body; a body changed after signing is refused."""
    rid = await slack.propose()
    channel, ts = await slack.message_ref(rid)
    version = (await slack.life.get(rid)).version
    good = slackreq.form_payload(slackreq.block_actions("U0CAROL", APPROVE, value=rid, channel=channel, ts=ts))
    headers = slackreq.signed(good)
    forged = good.replace("U0CAROL", "U0BOB")
    r = await slack.post(forged, headers)
    assert r.status_code == 401
    await _unchanged(slack, rid, version)


async def test_stale_timestamp_is_refused(slack):
    """Requirement 2: a correctly signed request older than 5 minutes is refused (replay window)."""
    rid = await slack.propose()
    channel, ts = await slack.message_ref(rid)
    version = (await slack.life.get(rid)).version
    body = slackreq.form_payload(slackreq.block_actions("U0BOB", APPROVE, value=rid, channel=channel, ts=ts))
    r = await slack.post(body, slackreq.signed(body, timestamp=int(time.time()) - 301))
    assert r.status_code == 401
    await _unchanged(slack, rid, version)


async def test_non_numeric_timestamp_is_a_401_not_a_500(slack, caplog):
    """Issue 14.11: "A non-numeric X-Slack-Request-Timestamp ... must be 401 like any bad signature" (it was a
    500 with a traceback); a missing one too. Nothing changes and nothing is logged as an error."""
    rid = await slack.propose()
    channel, ts = await slack.message_ref(rid)
    version = (await slack.life.get(rid)).version
    body = slackreq.form_payload(slackreq.block_actions("U0BOB", APPROVE, value=rid, channel=channel, ts=ts))
    good = slackreq.signed(body)
    for stamp in ("abc", "1.5e9", str(int(time.time())) + "x", "\u0661\u0662".encode(), "", " " + good["X-Slack-Request-Timestamp"]):
        r = await slack.post(body, {**good, "X-Slack-Request-Timestamp": stamp})
        assert r.status_code == 401, stamp
    headers = {k: v for k, v in good.items() if k != "X-Slack-Request-Timestamp"}
    assert (await slack.post(body, headers)).status_code == 401
    await _unchanged(slack, rid, version)
    assert not [rec for rec in caplog.records if rec.levelname in ("ERROR", "CRITICAL")]


async def test_timestamp_from_the_future_is_refused(slack):
    """Requirement 2: the replay window is five minutes either way; a signature dated 301 s ahead is refused too."""
    rid = await slack.propose()
    channel, ts = await slack.message_ref(rid)
    version = (await slack.life.get(rid)).version
    body = slackreq.form_payload(slackreq.block_actions("U0BOB", APPROVE, value=rid, channel=channel, ts=ts))
    r = await slack.post(body, slackreq.signed(body, timestamp=int(time.time()) + 301))
    assert r.status_code == 401
    await _unchanged(slack, rid, version)


async def test_bad_signature_on_a_modal_or_a_slash_command_is_refused(slack):
    """Requirement 2: view_submission and slash-command bodies are verified like clicks; forged ones change nothing."""
    rid = await slack.propose()
    version = (await slack.life.get(rid)).version
    deny = slackreq.form_payload(slackreq.view_submission("U0BOB", rid, "forged"))
    r = await slack.post(deny, slackreq.signed(deny, secret="not-the-secret"))
    assert r.status_code == 401
    await _unchanged(slack, rid, version)
    await slack.click("U0BOB", APPROVE, rid)
    await slack.click("U0ERIN", APPROVE, rid)
    approved = await slack.status(rid, "approved")
    revoke = slackreq.slash("U0ERIN", f"revoke {rid} forged", response_url=slack.fake.response_url("U0ERIN"))
    r = await slack.post(revoke, slackreq.signed(revoke, secret="not-the-secret"))
    assert r.status_code == 401
    await slack.settle()
    assert (await slack.life.get(rid)).version == approved.version and slack.fake.responses == []


async def test_unbound_user_gets_an_explanation(slack):
    """Requirement 2: a Slack user not bound in the approvers file is told why, and nothing changes."""
    rid = await slack.propose()
    version = (await slack.life.get(rid)).version
    r = await slack.click("U0NOBODY", APPROVE, rid)
    assert r.status_code == 200
    (text,) = await slack.ephemerals("U0NOBODY")
    assert "not bound to an approver" in text and "U0NOBODY" in text
    await _unchanged(slack, rid, version)


async def test_owner_cannot_approve_own_agent(slack):
    """Requirement 2: the agent's owner (alice owns deploy-bot) may not approve its request."""
    rid = await slack.propose()
    version = (await slack.life.get(rid)).version
    await slack.click("U0ALICE", APPROVE, rid)
    (text,) = await slack.ephemerals("U0ALICE")
    assert "owns agent deploy-bot" in text
    await _unchanged(slack, rid, version)


async def test_wrong_group_cannot_approve_or_deny(slack):
    """Requirement 2: only the policy's approver group may decide (dave is in platform, not sre)."""
    rid = await slack.propose()
    version = (await slack.life.get(rid)).version
    await slack.click("U0DAVE", APPROVE, rid)
    await slack.click("U0DAVE", DENY, rid)
    texts = await slack.ephemerals("U0DAVE", 2)
    assert all("only members of 'sre'" in t for t in texts)
    assert slack.fake.of("views.open") == []  # no deny modal for someone who may not deny
    await _unchanged(slack, rid, version)


async def test_button_value_pointing_at_another_request(slack):
    """Requirement 2: a button value is only a pointer; one naming another request than the message's changes neither."""
    rid_a = await slack.propose()
    rid_b = await slack.propose(justification="another one")
    ref_a = await slack.message_ref(rid_a)
    va, vb = (await slack.life.get(rid_a)).version, (await slack.life.get(rid_b)).version
    await slack.click("U0BOB", APPROVE, rid_a, value=rid_b, ref=ref_a)
    await slack.click("U0BOB", APPROVE_FOR, rid_a, selected=f"{rid_b}:60", ref=ref_a)
    texts = await slack.ephemerals("U0BOB", 2)
    assert all("does not belong to that request" in t for t in texts)
    await _unchanged(slack, rid_a, va)
    await _unchanged(slack, rid_b, vb)


async def test_malformed_request_id_in_value(slack):
    """A value that is not a request id is refused as such; nothing is looked up by it."""
    rid = await slack.propose()
    await slack.click("U0BOB", APPROVE, rid, value="../../etc")
    (text,) = await slack.ephemerals("U0BOB")
    assert "malformed escalation id" in text


async def test_one_person_counts_once(slack):
    """Requirement 3: a second click by the same approver is a no-op that says so."""
    rid = await slack.propose()
    await slack.click("U0BOB", APPROVE, rid)
    await slack.ephemerals("U0BOB")
    await slack.click("U0BOB", APPROVE, rid)
    texts = await slack.ephemerals("U0BOB", 2)
    assert "already approved" in texts[1]
    req = await slack.life.get(rid)
    assert req.approvers == ["bob"] and req.status == "pending"


async def test_replayed_click_after_decision_changes_nothing(slack):
    """Requirement 2: a click replayed (same signed body) after the decision changes nothing; a click after a deny is refused."""
    rid = await slack.propose()
    channel, ts = await slack.message_ref(rid)
    body = slackreq.form_payload(slackreq.block_actions("U0BOB", APPROVE, value=rid, channel=channel, ts=ts))
    headers = slackreq.signed(body)
    await slack.post(body, headers)
    await slack.click("U0ERIN", APPROVE, rid)
    approved = await slack.status(rid, "approved")
    await slack.settle()
    r = await slack.post(body, headers)  # the replay
    assert r.status_code == 200
    texts = await slack.ephemerals("U0BOB", 2)
    assert "already approved" in texts[1]
    await slack.settle()
    after = await slack.life.get(rid)
    assert after.version == approved.version and after.approvers == ["bob", "erin"]

    rid2 = await slack.propose(justification="second")
    await slack.submit_deny("U0ERIN", rid2, "not during the freeze")
    denied = await slack.status(rid2, "denied")
    await slack.settle()
    await slack.click("U0BOB", APPROVE, rid2)
    texts = await slack.ephemerals("U0BOB", 3)
    assert "already denied by erin: not during the freeze" in texts[2]
    await slack.settle()
    assert (await slack.life.get(rid2)).version == denied.version


async def test_approve_for_less_time_caps_the_grant(slack):
    """"Approve for less time" offers only durations below the approvable maximum and caps the grant."""
    rid = await slack.propose()
    ref = await slack.message_ref(rid)
    (select,) = [e for b in slack.message(ref)["blocks"] if b["type"] == "actions"
                 for e in b["elements"] if e["action_id"] == APPROVE_FOR]
    offered = [int(o["value"].split(":")[1]) for o in select["options"]]
    assert offered == [60, 300]  # requested 600 s: only shorter choices
    await slack.click("U0BOB", APPROVE_FOR, rid, selected=f"{rid}:300")
    await slack.click("U0ERIN", APPROVE, rid)
    req = await slack.status(rid, "approved")
    assert req.approved_duration_s == 300
    assert req.approvals[0]["duration_s"] == 300


async def test_forged_longer_duration_is_refused(slack):
    """A select value asking for more than the approvable maximum is refused by the broker."""
    rid = await slack.propose()
    await slack.click("U0BOB", APPROVE_FOR, rid, selected=f"{rid}:86400")
    (text,) = await slack.ephemerals("U0BOB")
    assert "duration must be between 1 and 600 seconds" in text
    await _unchanged(slack, rid, (await slack.life.get(rid)).version)


async def test_view_all_evidence_opens_a_modal(slack):
    """More evidence than the message shows: the button opens a modal with every item."""
    evidence = [{"kind": "log", "title": f"item {i}", "excerpt": f"line {i}"} for i in range(8)]
    rid = await slack.propose(evidence=evidence)
    ref = await slack.message_ref(rid)
    text = slack.message_text(ref)
    assert "item 4" in text and "item 5" not in text
    await slack.click("U0DAVE", EVIDENCE, rid)  # reading evidence needs no approval right
    call = (await slack.fake.wait_for(lambda: slack.fake.of("views.open"), what="views.open"))[0]
    modal_text = str(call.args["view"])
    assert call.args["trigger_id"] == "trigger-1"
    assert all(f"item {i}" in modal_text and f"line {i}" in modal_text for i in range(8))


async def test_request_body_limit(slack):
    """A request body over the limit is refused before Bolt parses it."""
    body = "payload=" + "x" * (1024 * 1024 + 1)
    r = await slack.post(body, slackreq.signed(body))
    assert r.status_code == 413


async def test_email_binding_is_opt_in_and_uses_the_verified_address(tmp_path, redis_url, prefix, redis, fake_slack):
    """STYLE 5: with e-mail binding on, a user without a Slack id binds through the address Slack verified; never otherwise."""
    fake_slack.users["U0GINA"] = {"id": "U0GINA", "team_id": "T0TEST", "is_email_confirmed": True,
                                  "profile": {"email": "gina@example.com"}}
    fake_slack.users["U0FAKE"] = {"id": "U0FAKE", "team_id": "T0TEST", "is_email_confirmed": False,
                                  "profile": {"email": "gina@example.com"}}
    async with running(tmp_path, redis_url, prefix, fake_slack) as off:
        rid = await off.propose()
        await off.click("U0GINA", APPROVE, rid)
        assert "not bound" in (await off.ephemerals("U0GINA"))[0]
        assert fake_slack.of("users.info", ok=None) == []  # not even asked
    fake_slack.calls.clear()
    async with running(tmp_path / "on", redis_url, prefix + "on:", fake_slack, email_binding=True) as on:
        rid = await on.propose()
        await on.click("U0FAKE", APPROVE, rid)
        assert "not bound" in (await on.ephemerals("U0FAKE"))[0]
        await on.click("U0GINA", APPROVE, rid)
        await on.ephemerals("U0GINA")
        req = await on.life.get(rid)
        assert req.approvers == ["gina"] and req.approvals[0]["platform_user"] == "U0GINA"
