"""The Slack stand-in refuses what Slack refuses, so the desk's tests can trust an ``ok``."""

from __future__ import annotations

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.bot.slack import slackreq

PLAIN = {"type": "plain_text", "text": "ok"}
SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "ok"}}


def _button(**kw) -> dict:
    return {"type": "button", "action_id": "a", "text": PLAIN, **kw}


@pytest.mark.parametrize(("blocks", "why"), [
    ([SECTION] * 51, "more than 50 blocks"),
    ([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}], "a text over 3000 characters"),
    ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}], "more than 10 fields"),
    ([{"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}], "a header that is not plain_text"),
    ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "a header over 150 characters"),
    ([{**SECTION, "block_id": "b"}, {**SECTION, "block_id": "b"}], "a block_id twice"),
    ([{"type": "actions", "elements": [_button(), _button()]}], "an action_id twice in a block"),
    ([{"type": "actions", "elements": [_button(text={"type": "mrkdwn", "text": "*x*"})]}], "a mrkdwn button"),
    ([{"type": "actions", "elements": [_button(value="v" * 2001)]}], "a button value over 2000"),
    ([{"type": "actions", "elements": [_button(style="loud")]}], "an unknown button style"),
    ([{"type": "actions", "elements": [_button(confirm={"title": {"type": "plain_text", "text": "t" * 101},
                                                         "text": PLAIN, "confirm": PLAIN, "deny": PLAIN})]}],
     "a confirmation title over 100"),
    ([{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}], "a context of more than 10"),
    ([{"type": "image", "image_url": "https://x.example/i.png", "alt_text": "i"}], "a block kind jitgate never sends"),
])
async def test_stand_in_enforces_block_kit_limits(fake_slack, blocks, why):
    """Slack's Block Kit limits: the stand-in answers invalid_blocks where Slack does (and ok just after)."""
    client = AsyncWebClient(token=slackreq.BOT_TOKEN, base_url=fake_slack.api_url, retry_handlers=[])
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel="#approvals", text="t", blocks=blocks)
    assert caught.value.response["error"] == "invalid_blocks", why
    ok = await client.chat_postMessage(channel="#approvals", text="t", blocks=[SECTION])
    assert ok["ok"]


async def test_stand_in_enforces_modal_limits(fake_slack):
    """views.open: a title over 24 characters or more than 100 blocks is refused; a trigger id is required."""
    client = AsyncWebClient(token=slackreq.BOT_TOKEN, base_url=fake_slack.api_url, retry_handlers=[])
    good = {"type": "modal", "title": {"type": "plain_text", "text": "Evidence"}, "blocks": [SECTION]}
    for view in ({**good, "title": {"type": "plain_text", "text": "t" * 25}}, {**good, "blocks": [SECTION] * 101},
                 {**good, "submit": {"type": "mrkdwn", "text": "go"}}):
        with pytest.raises(SlackApiError):
            await client.views_open(trigger_id="t", view=view)
    with pytest.raises(SlackApiError):
        await client.views_open(trigger_id="", view=good)
    assert (await client.views_open(trigger_id="t", view=good))["ok"]
