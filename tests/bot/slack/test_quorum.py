"""Mixed quorums on the Slack desk (issue 16, item 3): the message says what is still
missing per group, and a click from a group already counted is refused with the reason."""

from __future__ import annotations

import shutil

from bot.slack.blocks import APPROVE
from tests.bot.slack.conftest import APPROVERS, running
from tests.support.harness import FIXTURES

POLICY = """
@id("prod-scale-quorum") @approvals_from("sre:1,security:1")
permit(principal, action == Jitgate::Action::"scale", resource in Jitgate::Env::"prod");
"""


async def test_slack_shows_what_each_group_still_owes(tmp_path, redis_url, prefix, redis, fake_slack):
    """Bob (sre) approves: the message shows sre done and security missing; erin (sre) is refused; carol completes."""
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(FIXTURES / "policies" / "test.cedar", policies / "test.cedar")
    (policies / "quorum.cedar").write_text(POLICY)
    async with running(tmp_path, redis_url, prefix, fake_slack, policy_dir=policies, approvers_file=APPROVERS) as slack:
        rid = await slack.propose(action="scale", duration_s=300)
        ref = await slack.message_ref(rid)
        assert "needs 1 approval from sre and 1 from security" in slack.message_text(ref)
        assert "Waiting for 1 approval from sre and 1 from security (sre: 0 of 1; security: 0 of 1)" in slack.message_text(ref)

        await slack.click("U0BOB", APPROVE, rid)
        await slack.fake.wait_for(
            lambda: "Waiting for 1 approval from security (sre: 1 of 1 (bob); security: 0 of 1)" in slack.message_text(ref),
            what="message shows security still missing")
        assert "1 approval from security needed" in (await slack.ephemerals("U0BOB"))[0]

        await slack.click("U0ERIN", APPROVE, rid)
        refused = (await slack.ephemerals("U0ERIN"))[0]
        assert "still missing: 1 approval from security" in refused
        assert len((await slack.life.get(rid)).approvals) == 1

        await slack.click("U0CAROL", APPROVE, rid)
        await slack.status(rid, "approved")
        await slack.fake.wait_for(lambda: "Approved by bob, carol" in slack.message_text(ref), what="approved message")
        await slack.settle()
        assert any("bob approved for sre (1 of 2)" in t for t in slack.fake.thread(*ref))
        assert "carol approved for security (2 of 2)" in slack.message_text(ref)  # the timeline


async def test_slack_shows_the_tool_and_arguments_being_approved(tmp_path, redis_url, prefix, redis, fake_slack):
    """Issue 16, item 4: a large refund through the shipped payments policy shows its tool and arguments
    (escaped agent text), needs sre and security, and the token carries exactly those arguments."""
    import jwt

    repo = FIXTURES.parent.parent
    args = {"amount": 2500, "currency": "<@U0BOB> EUR & co"}  # agent text: shown inert
    async with running(tmp_path, redis_url, prefix, fake_slack, policy_dir=repo / "policies",
                       approvers_file=APPROVERS) as slack:
        rid = await slack.propose(action="refund", tool="payments-cli", arguments=args, duration_s=120)
        ref = await slack.message_ref(rid)
        text = slack.message_text(ref)
        assert "payments-cli" in text and "*Arguments*" in text
        assert '"amount": 2500' in text and "&lt;@U0BOB&gt; EUR &amp; co" in text  # inert, not a mention
        assert "Waiting for 1 approval from sre and 1 from security" in text
        await slack.click("U0CAROL", APPROVE, rid)
        await slack.fake.wait_for(lambda: "security: 1 of 1 (carol)" in slack.message_text(ref), what="carol counted")
        await slack.click("U0BOB", APPROVE, rid)
        await slack.status(rid, "approved")
        tok = await slack.h.collect(rid)
        claims = jwt.decode(tok.json()["access_token"], options={"verify_signature": False})
        assert claims["authorization_details"][0]["arguments"] == args
