"""Issue 19, item 1 on Slack: a repeated proposal posts no second message; what the agent says
anew is shown on the message and once in its thread."""

from __future__ import annotations

from tests.bot.slack.conftest import running


async def test_a_repeat_posts_nothing_new_and_a_new_justification_is_shown(tmp_path, redis_url, prefix, redis, fake_slack):
    async with running(tmp_path, redis_url, prefix, fake_slack, dedupe=True) as slack:
        await _repeat_posts_nothing_new(slack)


async def _repeat_posts_nothing_new(slack) -> None:
    rid = await slack.propose()
    ref = await slack.message_ref(rid)
    posts = len(slack.fake.of("chat.postMessage"))
    for _ in range(5):
        r = await slack.h.propose()
        assert r.status_code == 200 and r.json()["id"] == rid
    await slack.settle()
    assert len(slack.fake.of("chat.postMessage")) == posts  # no second message, no thread noise
    r = await slack.h.propose(justification="customers are affected now")
    assert r.json()["id"] == rid
    await slack.settle()
    assert "customers are affected now" in slack.message_text(ref)
    assert "proposed the same again (6 times so far" in slack.message_text(ref)
    replies = [c for c in slack.fake.of("chat.postMessage") if c.args.get("thread_ts") == ref[1]]
    assert len(replies) == 1 and "customers are affected now" in replies[0].args["text"]
    await slack.h.propose(justification="customers are affected now")  # said before: no new reply
    await slack.settle()
    assert len([c for c in slack.fake.of("chat.postMessage") if c.args.get("thread_ts") == ref[1]]) == 1
