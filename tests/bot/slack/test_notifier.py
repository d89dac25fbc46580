"""The Slack notifier: where proposals go, retries with backoff honouring Retry-After,
failures that never lose the request, and idempotent updates."""

from __future__ import annotations

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from broker.notices import audience
from broker.notify import Kind, MessageRef, Notice
from bot.slack.api import SlackApi
from tests.bot.slack import slackreq
from tests.bot.slack.conftest import running
from tests.support.harness import FIXTURES


async def test_rate_limit_is_honoured_then_posted(slack):
    """Requirement 9: a 429 on posting waits the Retry-After and posts; the request is never lost."""
    slack.fake.fail("chat.postMessage", 1, status=429, retry_after=1)
    rid = await slack.propose()
    attempts = [c for c in slack.fake.calls if c.method == "chat.postMessage"]
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 0.95
    assert (await slack.life.get(rid)).messages[-1]["transport"] == "slack"


async def test_server_errors_are_retried_with_backoff(slack):
    """Requirement 9: 5xx answers are retried (bounded) and the proposal still arrives."""
    slack.fake.fail("chat.postMessage", 2, status=503)
    rid = await slack.propose()
    assert [c.status for c in slack.fake.calls if c.method == "chat.postMessage"] == [503, 503, 200]
    assert (await slack.h.status(rid)).json()["status"] == "pending"


async def test_failing_slack_never_loses_the_request(slack):
    """Requirement 9: with Slack refusing every post the request stays pending, visible through the API and the other desks."""
    slack.fake.fail("chat.postMessage", 50, error="channel_not_found")
    r = await slack.h.propose()
    rid = r.json()["id"]
    await slack.fake.wait_for(lambda: slack.fake.of("chat.postMessage", ok=False), what="a refused post")
    assert (await slack.h.status(rid)).json()["status"] == "pending"
    await slack.fake.wait_for(lambda: ("post", rid, "pending") in slack.h.notifier.sent, what="the log desk posted")
    assert (await slack.life.get(rid)).status == "pending"


async def test_retry_budget_is_bounded(fake_slack):
    """STYLE 11: a Retry-After beyond the budget is not slept through; the error goes up for the outbox to retry later."""
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    api = SlackApi(AsyncWebClient(token=slackreq.BOT_TOKEN, base_url=fake_slack.api_url, retry_handlers=[]),
                   budget_s=10, sleep=sleep)
    fake_slack.fail("chat.postMessage", 1, status=429, retry_after=120)
    with pytest.raises(SlackApiError):
        await api.call("chat_postMessage", channel="#approvals", text="hi")
    assert slept == []
    fake_slack.fail("chat.postMessage", 10, status=500)
    with pytest.raises(SlackApiError):
        await api.call("chat_postMessage", channel="#approvals", text="hi")
    assert len(slept) == 3 and slept == sorted(slept)  # attempts - 1 waits, growing


async def test_updates_are_idempotent(slack):
    """A repeated delivery re-renders the message but says nothing twice in the thread or to the owner."""
    rid = await slack.propose()
    ref = await slack.message_ref(rid)
    await slack.click("U0BOB", "jit_approve", rid)
    await slack.click("U0ERIN", "jit_approve", rid)
    req = await slack.status(rid, "approved")
    await slack.settle()
    updates, thread = len(slack.fake.of("chat.update")), list(slack.fake.thread(*ref))
    notifier = slack.h.broker.desks[0].notifier
    for event in ("approval", "approved"):
        await notifier.update(Notice(Kind(event), req, refs=(MessageRef("slack", *ref),)))
    assert len(slack.fake.of("chat.update")) == updates + 2
    assert slack.fake.thread(*ref) == thread
    assert len([c for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "U0ALICE"]) == 1


async def test_policy_channel_obligation(tmp_path, redis_url, prefix, redis, fake_slack):
    """Requirement 1: a policy's @channel obligation decides where the proposal goes."""
    policies = tmp_path / "policies"
    policies.mkdir()
    text = (FIXTURES / "policies" / "test.cedar").read_text()
    assert '@id("prod-restart")' in text
    (policies / "test.cedar").write_text(text.replace('@id("prod-restart")', '@id("prod-restart") @channel("#prod-access")'))
    async with running(tmp_path, redis_url, prefix, fake_slack, policy_dir=policies) as slack:
        rid = await slack.propose(action="restart")
        assert await slack.message_ref(rid) == ("C0PRODACCESS", fake_slack.of("chat.postMessage")[0].response["ts"])
        assert fake_slack.of("chat.postMessage")[0].args["channel"] == "#prod-access"
        await slack.click("U0BOB", "jit_approve", rid)
        await slack.status(rid, "approved")


async def test_security_alerts_and_announcements(slack):
    """Security alerts go to SLACK_SECURITY_CHANNEL; announcements mention the group; both escape the text."""
    rid = await slack.propose()
    req = await slack.life.get(rid)
    notifier = slack.h.broker.desks[0].notifier
    who = audience(Kind.BG_GRANTED, req, slack.h.broker.directory, security_group="security", bypassed_group="sre")
    await notifier.alert_security(Notice(Kind.BG_GRANTED, req, who, text="break-glass used <!channel>"))
    await notifier.announce(Notice(Kind.BG_GRANTED, req, who, announcement="break-glass bypassed approval <@U0BOB>"))
    alert = [c for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "#security"][0].args["text"]
    assert "break-glass used &lt;!channel&gt;" in alert and rid in alert
    note = [c for c in slack.fake.of("chat.postMessage") if "bypassed" in c.args.get("text", "")][0].args
    assert note["channel"] == "#approvals" and "&lt;@U0BOB&gt;" in note["text"]
    assert "<@U0BOB>" in note["text"] and "<@U0ERIN>" in note["text"] and "<@U0ALICE>" not in note["text"]  # owner left out
