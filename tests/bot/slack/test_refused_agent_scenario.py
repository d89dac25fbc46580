"""Issue 19, "Done when": the agent that a person refused, retrying and seeking another way.

A person denies a prod restart in Slack; the same agent then proposes the identical restart,
a rollback of the same target, and 25 more restarts in a few seconds. The identical re-ask is
denied citing the denial, the rollback is posted linked to it (with the agent's history on the
message), the 25 retries post nothing new (denied by denial memory, deduplicated or rate
limited), and the security channel gets exactly one alert."""

from __future__ import annotations

from bot.slack.blocks import DENY
from tests.bot.slack.conftest import running


def _approval_posts(slack) -> list:
    """Top-level messages in the approvals channel (proposal messages; not thread replies)."""
    return [c for c in slack.fake.of("chat.postMessage")
            if c.args.get("channel") == "#approvals" and not c.args.get("thread_ts")]


def _security_posts(slack) -> list:
    return [c for c in slack.fake.of("chat.postMessage") if c.args.get("channel") == "#security"]


async def test_a_refused_agent_retrying_and_seeking_another_path(tmp_path, redis_url, prefix, fake_slack):
    """Requirement (issue 19, items 1-5, "Done when"): the scenario of the issue end to end, with
    dedupe, denial memory, the rate limits and alternate paths on (the harness turns them off)."""
    async with running(tmp_path, redis_url, prefix, fake_slack, dedupe=True, denial_cooldown_s=1800,
                       agent_proposals_per_min=10, target_proposals_per_min=30, max_open_per_agent=10,
                       alternate_path_window_s=1800, alternate_path_alert_after=3) as slack:
        first = await slack.propose(action="restart")
        await slack.click("U0BOB", DENY, first)
        await slack.fake.wait_for(lambda: slack.fake.of("views.open"), what="deny modal")
        await slack.submit_deny("U0BOB", first, "prod restarts wait for the freeze to end")
        await slack.status(first, "denied")
        await slack.settle()
        posts = len(_approval_posts(slack))

        # The identical re-ask: denied at once, citing bob's denial; nobody is asked.
        again = (await slack.h.propose(action="restart")).json()
        assert again["status"] == "denied" and again["denial"]["by"] == "denial-memory"
        assert first in again["denial"]["reason"] and "prod restarts wait for the freeze to end" in again["denial"]["reason"]

        # The rollback: posted, linked to bob's denial, with the agent's history on the message.
        rollback = (await slack.h.propose(action="rollback")).json()
        assert rollback["status"] == "pending" and rollback["linked_to"]["request"] == first
        ref = await slack.message_ref(rollback["id"])
        await slack.settle()
        text = slack.message_text(ref)
        assert "Related to a request bob denied" in text and "prod restarts wait for the freeze to end" in text
        assert "Agent history" in text and "2 requests" in text and "2 denied" in text
        assert len(_approval_posts(slack)) == posts + 1

        # 25 more restarts within seconds: nothing new reaches the approvers.
        codes = []
        for _ in range(25):
            slack.h.clock.advance(0.3)
            r = await slack.h.propose(action="restart")
            codes.append(r.status_code)
            assert r.status_code == 429 or r.json()["status"] == "denied" or r.json()["id"] == rollback["id"]
        # And the rollback asked again joins the waiting request (dedupe), or is rate limited.
        for _ in range(5):
            r = await slack.h.propose(action="rollback")
            codes.append(r.status_code)
            assert r.status_code == 429 or r.json()["id"] == rollback["id"]
        await slack.settle()
        assert set(codes) <= {200, 201, 429}
        assert len(_approval_posts(slack)) == posts + 1

        # Security heard exactly once, naming the agent and the denial.
        alerts = _security_posts(slack)
        assert len(alerts) == 1, [c.args["text"] for c in alerts]
        assert "deploy-bot" in alerts[0].args["text"] and first in alerts[0].args["text"]

        # The approvers' load counts what the protections absorbed.
        waiting, absorbed, decided = await slack.h.broker.store.approvers_load()
        assert absorbed.get("denial_memory", 0) >= 1 and absorbed.get("dedupe", 0) + absorbed.get("rate_limit", 0) == 5
        assert waiting.get("sre") == 1 and decided["sre"][0] == 1
