"""Escaping, truncation and the neutral wording the Slack views are built from."""

from __future__ import annotations

import pytest

from bot import render
from bot.slack.text import clip, code_block, escape, mention, mrkdwn


def test_escape_exactly_the_three_control_characters():
    """PITFALLS: mrkdwn's control characters are only &, < and >; exactly those are escaped."""
    assert escape("a & b <!here> > *x* _y_ `z` |") == "a &amp; b &lt;!here&gt; &gt; *x* _y_ `z` |"


@pytest.mark.parametrize("limit", range(1, 40))
def test_clip_never_cuts_inside_an_entity(limit):
    """A cut escaped text ends with an ellipsis, fits the limit and never leaves half an entity."""
    out = mrkdwn("<&>" * 20, limit)
    assert len(out) <= limit
    assert out.endswith("…")
    body = out[:-1]
    assert body.replace("&lt;", "").replace("&amp;", "").replace("&gt;", "") == ""


def test_clip_leaves_short_text_alone():
    """Text within the limit is unchanged."""
    assert clip("abc", 3) == "abc"


def test_code_block_cannot_be_closed_by_the_agent():
    """An agent's ``` cannot end our preformatted block early."""
    out = code_block("a```b", 100)
    assert out.startswith("```") and out.endswith("```") and out.count("```") == 2


def test_mention_only_for_wellformed_ids():
    """Only ids shaped like Slack user ids become mentions."""
    assert mention("U0ALICE") == "<@U0ALICE>"
    assert mention("U0ALICE> <!channel") is None and mention(None) is None


@pytest.mark.parametrize("seconds, text", [
    (45, "45 s"), (60, "1 min"), (90, "1 min 30 s"), (600, "10 min"), (3600, "1 h"), (5400, "1 h 30 min"),
    (86400, "1 d"), (90000, "1 d 1 h"),
])
def test_durations_read_like_people_say_them(seconds, text):
    """Durations are shown in the largest sensible units."""
    assert render.fmt_duration(seconds) == text
