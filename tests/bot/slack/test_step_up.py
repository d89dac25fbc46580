"""Step-up from Slack (issue 19, item 6): pressing Approve on a request whose approval needs a
security key records nothing and answers that person alone with a single-use console link."""

from __future__ import annotations

import re

from bot.kit.stepup import StepUpLinks
from bot.slack.blocks import APPROVE, APPROVE_FOR
from broker.notify import KeySpace
from tests.bot.slack.conftest import running
from tests.broker.test_step_up import step_up_policies

LINK = re.compile(r"https://jitgate\.test/console/step-up\?token=([A-Za-z0-9_-]+)")


async def _nothing_recorded(slack, rid: str, version: int) -> None:
    await slack.settle()
    req = await slack.life.get(rid)
    assert req.version == version and req.approvals == [] and req.status == "pending"


async def test_a_plain_click_on_a_step_up_request_records_nothing_and_answers_with_a_link(
        tmp_path, redis_url, prefix, redis, fake_slack):
    """Issue 19.6: "a test that a plain chat click on a step-up request changes nothing" — through Slack's
    signed request path; the clicker alone gets a link bound to them and this request."""
    async with running(tmp_path, redis_url, prefix, fake_slack, policy_dir=step_up_policies(tmp_path),
                       console=True) as slack:
        rid = await slack.propose()
        version = (await slack.life.get(rid)).version
        r = await slack.click("U0BOB", APPROVE, rid)
        assert r.status_code == 200
        (text,) = await slack.ephemerals("U0BOB")
        assert "security key" in text and "Nothing was recorded" in text
        token = LINK.search(text).group(1)
        await _nothing_recorded(slack, rid, version)
        # "Approve for less time" is an approval too: the same answer, nothing recorded.
        r = await slack.click("U0BOB", APPROVE_FOR, rid, selected=f"{rid}:60")
        assert r.status_code == 200
        texts = await slack.ephemerals("U0BOB", 2)
        other = LINK.search(texts[1]).group(1)
        assert other != token  # a fresh link per click
        await _nothing_recorded(slack, rid, version)
        links = StepUpLinks(KeySpace(slack.h.broker.redis, slack.h.settings.redis_prefix))
        bound = await links.peek(token, now=slack.h.clock.now())
        assert bound is not None and (bound.approver, bound.request_id, bound.platform_user) == ("bob", rid, "U0BOB")
        assert await links.consume(token, now=slack.h.clock.now()) == bound
        assert await links.consume(token, now=slack.h.clock.now()) is None  # single use
        slack.h.clock.advance(601)
        assert await links.peek(other, now=slack.h.clock.now()) is None  # ten minutes at most


async def test_no_link_for_someone_who_may_not_approve(tmp_path, redis_url, prefix, redis, fake_slack):
    """Issue 19.6: a link is only for someone who may still decide; others get the usual refusal."""
    async with running(tmp_path, redis_url, prefix, fake_slack, policy_dir=step_up_policies(tmp_path),
                       console=True) as slack:
        rid = await slack.propose()
        version = (await slack.life.get(rid)).version
        await slack.click("U0CAROL", APPROVE, rid)  # security, not sre
        (text,) = await slack.ephemerals("U0CAROL")
        assert "You may not do that" in text and not LINK.search(text)
        await _nothing_recorded(slack, rid, version)


async def test_with_the_console_off_the_click_says_so_and_records_nothing(tmp_path, redis_url, prefix, redis,
                                                                          fake_slack):
    """Issue 19.6, fail closed: with no console to ask for the key, no link and no approval."""
    async with running(tmp_path, redis_url, prefix, fake_slack, policy_dir=step_up_policies(tmp_path)) as slack:
        rid = await slack.propose()
        version = (await slack.life.get(rid)).version
        await slack.click("U0BOB", APPROVE, rid)
        (text,) = await slack.ephemerals("U0BOB")
        assert "console is off" in text and not LINK.search(text)
        await _nothing_recorded(slack, rid, version)


async def test_a_step_up_group_in_the_approvers_file_applies_to_slack_clicks(tmp_path, redis_url, prefix, redis,
                                                                            fake_slack):
    """Issue 19.6: `step_up: webauthn` on sre in the approvers file: an sre click on an ordinary request
    gets a link; a member of a group without it (on-call, after escalation) is not affected."""
    from tests.bot.slack.conftest import APPROVERS

    approvers = tmp_path / "approvers.yaml"
    approvers.write_text(APPROVERS.read_text() + "groups:\n  - id: sre\n    step_up: webauthn\n")
    approvers.chmod(0o644)
    async with running(tmp_path, redis_url, prefix, fake_slack, approvers_file=approvers, console=True) as slack:
        rid = await slack.propose(action="restart")
        version = (await slack.life.get(rid)).version
        await slack.click("U0BOB", APPROVE, rid)
        (text,) = await slack.ephemerals("U0BOB")
        assert LINK.search(text)
        await _nothing_recorded(slack, rid, version)
