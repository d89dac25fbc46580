"""The console in a real browser (Debian's Chromium driven by Playwright), on a broker set
up as `make run` does it: sign in with the printed link, watch the demo request appear,
approve it from the keyboard, see the agent's long poll return approved, revoke the grant,
see it revoked — and take the screenshot in README.md and docs/console.md.

The browser is the one `.ci/find-browser` finds (JITGATE_TEST_BROWSER, else Chrome or Chromium on
PATH or in the usual places). Without one this test FAILS and says how to get one; set
JITGATE_SKIP_BROWSER=1 to skip it deliberately (the skip reason is then listed by pytest -ra).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.bot.console.firstrun import FirstRun
from tests.support.browser import CHROMIUM_ARGS, browser_for_tests
from tests.support.process import ROOT

SCREENSHOT = ROOT / "docs" / "console.png"


def _screenshot_path(tmp_path: Path) -> Path:
    """docs/console.png when missing or when JITGATE_UPDATE_SCREENSHOTS=1; else a scratch file
    (the picture holds fresh ids and times, so rewriting it on every run would churn the repo)."""
    if not SCREENSHOT.exists() or os.environ.get("JITGATE_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        return SCREENSHOT
    return tmp_path / "console.png"


async def test_console_in_a_real_browser(tmp_path, prefix, redis_url, redis):
    """Sign in with the link, approve the demo request, the agent gets its token, revoke it, see it revoked."""
    chromium = browser_for_tests()
    from playwright.async_api import async_playwright, expect

    run = FirstRun(tmp_path, prefix, redis_url)
    try:
        link = run.start()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                await page.goto(link)
                await page.get_by_role("button", name="Sign in as alice").click()
                await expect(page.locator("header")).to_contain_text("signed in as alice")
                await expect(page.locator("#pending")).to_contain_text("Nothing is waiting for a decision.")
                await page.evaluate("window.__sameDocument = true")

                # The demo agent proposes; the request appears without a reload (live update).
                demo = run.demo("--work", "60")
                rid = demo.request_id()
                card = page.locator(f"#req-{rid}")
                await expect(card).to_be_visible(timeout=10_000)
                assert await page.evaluate("window.__sameDocument === true"), "the page reloaded instead of updating"
                for text in ("demo-agent", "restart", "prod/payments-api", "OOM-killed", "prod-restart",
                             "https://tickets.example.com/INC-1234", "1 approval from sre"):
                    await expect(card).to_contain_text(text)
                shot = _screenshot_path(tmp_path)
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 20_000

                # Approve from the keyboard.
                demo.wait_for("waiting for 1 approval(s) from 'sre'")
                await page.locator(f"#approve-{rid}").focus()
                await page.keyboard.press("Enter")
                await expect(page.locator("#flash")).to_contain_text("Approved for 5 min")
                demo.wait_for("approved by alice; collecting the token")
                demo.wait_for('"sub": "demo-agent"')
                grant = page.locator(f"#grant-{rid}")
                await expect(grant).to_contain_text("active: the agent holds a token", timeout=10_000)

                # Revoke, again from the keyboard: open the form, type a reason, submit.
                await page.locator(f"#revoke-{rid}").focus()
                await page.keyboard.press("Enter")
                await page.keyboard.press("Tab")
                await page.keyboard.type("demo over")
                await page.keyboard.press("Tab")
                await page.keyboard.press("Enter")
                await expect(page.locator("#flash")).to_contain_text("Revoked")
                await expect(page.locator(f"#hist-{rid}")).to_contain_text("revoked by alice: demo over")
                await expect(grant).to_have_count(0)
                demo.wait_for("the grant ended under me: revoked by alice: demo over")
                assert demo.finish() == 0, demo.output()

                # The audit trail of the request, on its own page.
                await page.locator(f"#hist-{rid} a").first.click()
                trail = page.locator("ol.trail")
                for kind in ("proposal.received", "approval.recorded", "token.collected", "grant.revoked"):
                    await expect(trail).to_contain_text(kind)
                await expect(page.locator("header")).to_contain_text("audit chain verified")
            finally:
                await browser.close()
    finally:
        run.stop()
