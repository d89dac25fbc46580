"""The README's picture of a Slack proposal (issue 7, item 4): the blocks the desk really
posts for the console's demo request, drawn as a Slack message and photographed in
Chromium, so the picture cannot drift from the real message.

Written to docs/slack-proposal.png when that file is missing or JITGATE_UPDATE_SCREENSHOTS=1
(as docs/console.png is); otherwise to a scratch file, so every run still draws it.
"""

from __future__ import annotations

import calendar
import html
import os
import re
import time

from bot import render
from bot.console.demo import DEMO_AGENT, DEMO_PROPOSAL
from broker.clock import ManualClock
from broker.identity import add_agent, generate_key, load_private_key
from tests.bot.slack.conftest import running
from tests.support.blockkit_html import message_page, mrkdwn
from tests.support.browser import CHROMIUM_ARGS, browser_for_tests
from tests.support.process import ROOT

PICTURE = ROOT / "docs" / "slack-proposal.png"
# A fixed moment, so the times in the picture do not change from run to run.
POSTED = calendar.timegm((2026, 11, 28, 12, 15, 25))


def _picture_path(tmp_path):
    if not PICTURE.exists() or os.environ.get("JITGATE_UPDATE_SCREENSHOTS") == "1":
        PICTURE.parent.mkdir(exist_ok=True)
        return PICTURE
    return tmp_path / "slack-proposal.png"


def test_mrkdwn_drawing_keeps_agent_text_inert():
    """The drawing shows escaped agent text as text (never as a mention, link or tag) and formats only the desk's markup."""
    out = mrkdwn("*Justification*\n&lt;!channel&gt; &lt;script&gt;x&lt;/script&gt; &lt;http://evil|docs&gt; `a&amp;b` "
                 "https://t.example.com/?a=1&amp;b=2 <!date^1764332125^{time}|2025-11-28 12:15 UTC> <@U0BOB>")
    assert "<b>Justification</b><br>" in out
    assert "&lt;!channel&gt;" in out and "&lt;script&gt;" in out and "<script" not in out
    visible = html.unescape(re.sub(r"<[^>]+>", "", out))
    assert "<http://evil|docs>" in visible  # the agent's disguised link stays visible as typed
    assert ">docs</a>" not in out
    assert "<code>a&amp;b</code>" in out
    assert '<a href="https://t.example.com/?a=1&amp;b=2">' in out
    assert "2025-11-28 12:15 UTC" in out and "!date" not in out
    assert '<span class="mention">@U0BOB</span>' in out


async def test_readme_picture_of_the_demo_proposal(tmp_path, redis_url, prefix, redis, fake_slack):
    """The picture is drawn from the chat.postMessage blocks of the demo request and shows its real fields."""
    chromium = browser_for_tests()
    from playwright.async_api import async_playwright

    pem, jwk = generate_key("Ed25519")
    add_agent(tmp_path / "agents.yaml", id=DEMO_AGENT, owner="dave", team="platform", public_jwk=jwk)
    # As `make run` sets it up: the example policies, approvers and targets.
    async with running(tmp_path, redis_url, prefix, fake_slack, clock=ManualClock(POSTED),
                       policy_dir=ROOT / "policies", approvers_file=ROOT / "examples" / "approvers.yaml",
                       targets_file=ROOT / "examples" / "targets.yaml") as slack:
        slack.h.keys[DEMO_AGENT] = load_private_key(pem)
        rid = await slack.propose(DEMO_AGENT, **DEMO_PROPOSAL)
        req = await slack.life.get(rid)
    (post,) = [c for c in fake_slack.of("chat.postMessage") if c.args.get("blocks")]
    page_html = message_page(post.args["blocks"], channel="#approvals",
                             posted=time.strftime("%H:%M UTC", time.gmtime(POSTED)))

    p = req.proposal
    must_show = [req.agent, req.owner, p.action, p.target, p.tool, p.ticket, p.justification,
                 render.fmt_duration(p.duration_s), render.fmt_confidence(p.confidence), render.verdict(req),
                 render.fmt_time(req.deadline), req.id, "Approve", "Approve for less time", "Deny"]
    for e in p.evidence:
        must_show += [e.kind, e.title] + [x for x in (e.url, e.excerpt) if x]
    assert "prod-restart" in render.verdict(req)
    for value in must_show:
        assert html.escape(value, quote=False) in page_html, value

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 900, "height": 600}, device_scale_factor=1)
            await page.set_content(page_html)
            seen = await page.inner_text(".window")
            for value in must_show:
                assert value in seen, value  # what a reader of the picture sees, not only the markup
            shot = _picture_path(tmp_path)
            await page.locator(".window").screenshot(path=str(shot))
            assert shot.stat().st_size > 20_000
        finally:
            await browser.close()
