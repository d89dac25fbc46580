"""Issue 16, item 5 in Slack: ``/jit revoke agent|owner|target <name> <reason>`` and ``/jit revoke all
<reason>`` (security group), confirmed with ``/jit revoke confirm CODE``; a suspended approver's click is
refused. Signed requests against the Slack stand-in."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.slack.blocks import APPROVE
from tests.bot.slack.conftest import APPROVERS, running


def _code(text: str) -> str:
    m = re.search(r"/jit revoke confirm ([A-Z2-7]{10})", text)
    assert m, text
    return m[1]


async def test_slack_kill_switch_needs_the_code_from_the_same_person_then_ends_everything_of_the_agent(slack):
    """Issue 16.5 "the same for the security group in Slack (/jit revoke …), with a confirmation and a reason":
    the first command changes nothing and answers a one-time code; another person's `confirm` with it is refused
    and does not spend it; carol's confirm denies the agent's pending requests, the proposal message shows it,
    and the security channel is told once."""
    rid = await slack.propose()
    ref = await slack.message_ref(rid)
    await slack.jit("U0CAROL", "revoke agent deploy-bot key leaked (INC-7)")
    asked = (await slack.answer("U0CAROL"))["text"]
    assert "would revoke 0 grant(s) and deny 1 pending request(s)" in asked and "key leaked (INC-7)" in asked
    code = _code(asked)
    assert (await slack.life.get(rid)).status == "pending"

    await slack.jit("U0BOB", f"revoke confirm {code}")
    assert "no such confirmation code for you" in (await slack.answer("U0BOB"))["text"]
    assert (await slack.life.get(rid)).status == "pending"

    await slack.jit("U0CAROL", f"revoke confirm {code}")
    done = (await slack.answer("U0CAROL", 2))["text"]
    assert "1 pending request(s) denied" in done
    req = await slack.status(rid, "denied")
    assert req.denial["by"] == "carol" and req.denial["channel"] == "slack" and req.denial["reason"] == "key leaked (INC-7)"
    await slack.fake.wait_for(lambda: "key leaked (INC-7)" in slack.message_text(ref), what="message shows the denial")
    await slack.settle()
    alerts = [c.args["text"] for c in slack.fake.of("chat.postMessage")
              if c.args["channel"] == "#security" and "kill switch" in c.args["text"]]
    assert len(alerts) == 1 and "carol" in alerts[0]

    await slack.jit("U0CAROL", f"revoke confirm {code}")  # taken once
    assert "no such confirmation code" in (await slack.answer("U0CAROL", 3))["text"]


async def test_slack_kill_switch_is_for_the_security_group_and_needs_a_reason(slack):
    """Issue 16.5 "the security group": bob (sre) gets no code and nothing changes; no reason is a usage answer."""
    rid = await slack.propose()
    await slack.jit("U0BOB", "revoke all because")
    assert "may not do that" in (await slack.answer("U0BOB"))["text"]
    r = await slack.jit("U0CAROL", "revoke all")
    assert "Usage: `/jit revoke" in r.json()["text"]
    r = await slack.jit("U0CAROL", "revoke agent deploy-bot")
    assert "Usage: `/jit revoke" in r.json()["text"]
    assert (await slack.life.get(rid)).status == "pending"


async def test_suspended_approver_cannot_approve_in_slack(tmp_path, redis_url, prefix, redis, fake_slack):
    """Issue 16.5 "A suspended person cannot approve": bob, marked suspended: true, clicks Approve and is told he
    may not; no approval is counted."""
    doc = yaml.safe_load(Path(APPROVERS).read_text())
    for a in doc["approvers"]:
        if a["id"] == "bob":
            a["suspended"] = True
    path = tmp_path / "approvers.yaml"
    path.write_text(yaml.safe_dump(doc))
    async with running(tmp_path, redis_url, prefix, fake_slack, approvers_file=path) as s:
        rid = await s.propose()
        await s.click("U0BOB", APPROVE, rid)
        texts = await s.ephemerals("U0BOB")
        assert any("suspended" in t for t in texts), texts
        assert (await s.life.get(rid)).approvals == []


async def test_slack_kill_switch_on_a_break_glass_grant_is_said_in_its_alert(slack):
    """Issue 16.5 "and the desks told": when the kill switch ends only a break-glass grant, its security alert is
    kept true and the kill switch's message is said once (in its thread), not lost."""
    g = await slack.h.broker.breakglass.grant(slack.h.approver("alice"), subject="me", action="rollback",
                                              target="prod/payments-api", duration_s=600, reason="outage",
                                              channel="cli")
    await slack.settle()
    await slack.jit("U0CAROL", "revoke owner alice laptop stolen")
    code = _code((await slack.answer("U0CAROL"))["text"])
    await slack.jit("U0CAROL", f"revoke confirm {code}")
    assert "1 grant(s) revoked" in (await slack.answer("U0CAROL", 2))["text"]
    await slack.status(g.request.id, "revoked")
    await slack.settle()

    def summaries():
        return [c for c in slack.fake.of("chat.postMessage") if "grant(s) revoked" in c.args.get("text", "")]
    await slack.fake.wait_for(summaries, what="the kill switch said in the security channel")
    await slack.settle()
    (said,) = summaries()
    assert said.args["channel"] == "C0SECURITY" and said.args.get("thread_ts")  # in the grant's alert thread
    assert "laptop stolen" in said.args["text"] and "carol" in said.args["text"]
