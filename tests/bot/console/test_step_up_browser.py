"""Step-up in a real browser (issue 19, item 6): Chromium through Playwright with a CDP virtual
authenticator (``WebAuthn.addVirtualAuthenticator``) as each person's security key, against the
console served by uvicorn on ``http://localhost`` (a secure context for WebAuthn), on a broker
whose ``prod-deploy-key`` policy says ``@step_up("webauthn")``.

Registration, a successful step-up approval, a refusal with another person's key, a replayed
assertion refused, and a chat link used twice refused; a plain console approve changes nothing.
The browser is the one the console's other browser test uses (`tests/support/browser.py`).
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import parse_qs

import jwt
import pytest
import uvicorn

from bot.console import ConsoleDesk
from bot.kit.stepup import step_up_instead
from broker import audit
from broker.app import create_app
from broker.clock import ManualClock
from broker.embedded_redis import free_port
from broker.notify import DeskContext
from tests.broker.test_step_up import step_up_policies
from tests.support.browser import CHROMIUM_ARGS, browser_for_tests
from tests.support.harness import Harness, make_settings, write_agents

AUTHENTICATOR = {"protocol": "ctap2", "transport": "usb", "hasResidentKey": False, "hasUserVerification": True,
                 "isUserVerified": True, "automaticPresenceSimulation": True}


class Rig:
    """The broker and its console on localhost, a browser, and one page (with its own key) per person."""

    def __init__(self, harness: Harness, desk: ConsoleDesk, base: str, browser) -> None:
        self.h = harness
        self.desk = desk
        self.base = base
        self.browser = browser
        self.pages: dict[str, object] = {}

    async def page(self, approver: str, *, signed_in: bool = True):
        """A fresh browser context for ``approver`` with a virtual security key of their own."""
        context = await self.browser.new_context()
        page = await context.new_page()
        cdp = await context.new_cdp_session(page)
        await cdp.send("WebAuthn.enable")
        await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
        if signed_in:
            await self.sign_in(page, approver)
        self.pages[approver] = page
        return page

    async def sign_in(self, page, approver: str) -> None:
        from playwright.async_api import expect

        link = await self.desk.views.sessions.issue_link(approver, now=self.h.clock.now(), issued_by="test")
        await page.goto(f"{self.base}/console/login?token={link.token}")
        await page.get_by_role("button", name=f"Sign in as {approver}").click()
        await expect(page.locator("header")).to_contain_text(f"signed in as {approver}")

    async def register(self, page, label: str) -> None:
        from playwright.async_api import expect

        await page.goto(f"{self.base}/console/keys")
        await page.fill("#key-label", label)
        await page.click("#register-key")
        await expect(page.locator("#keys")).to_contain_text(label)

    async def propose(self, **body) -> str:
        r = await self.h.propose(**body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    async def events(self, kind: str) -> list[dict]:
        entries = await audit.newest(self.h.broker.redis, self.h.broker.store.audit_stream, 200)
        return [b for b in (e.body() for e in entries) if b and b["type"] == kind]

    async def csrf(self, page) -> str:
        return await page.locator("input[name=csrf]").first.get_attribute("value")

    async def challenge(self, page, rid: str) -> dict:
        """A step-up challenge for ``rid`` in ``page``'s session, as the page's script asks for it."""
        return await page.evaluate("([url, csrf]) => jitgateWebAuthn.post(url, {csrf: csrf})",
                                   [f"/console/requests/{rid}/step-up", await self.csrf(page)])

    async def post_approve(self, page, rid: str, **form):
        """The console's approve form posted as is (what a browser without the script would send)."""
        fields = {"csrf": await self.csrf(page), "next": f"/console/requests/{rid}", **form}
        return await page.request.post(f"{self.base}/console/requests/{rid}/approve", form=fields,
                                       headers={"Origin": self.base})


@pytest.fixture
async def rig(tmp_path, redis_url, prefix, redis):
    chromium = browser_for_tests()
    from playwright.async_api import async_playwright

    port = free_port()
    base = f"http://localhost:{port}"
    # The issuer stays the test issuer (agents' assertions name it); the console is reached on
    # localhost, so the WebAuthn origin (and with it the RP id, "localhost") is set apart.
    settings = make_settings(tmp_path, redis_url, prefix, policy_dir=step_up_policies(tmp_path), console=True,
                             webauthn_origin=base)
    desk = ConsoleDesk(settings, chain_cache_s=0)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock(), desks=[desk])
    await h.start()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, broker=h.broker), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off", ws="none"))
    serving = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                yield Rig(h, desk, base, browser)
            finally:
                await browser.close()
    finally:
        server.should_exit = True
        await serving
        await h.stop()


async def test_registering_and_removing_a_security_key(rig):
    """Issue 19.6: "People register keys in the console after signing in": register (navigator.credentials.create,
    verified by the broker), list, remove; both audited."""
    from playwright.async_api import expect

    page = await rig.page("bob")
    await rig.register(page, "bob's YubiKey")
    keys = await rig.desk.views.stepup.keys.keys("bob")
    assert [k.label for k in keys] == ["bob's YubiKey"]
    registered = await rig.events("console.key_registered")
    assert registered and registered[0]["actor"]["approver"] == "bob" and registered[0]["data"]["key"] == keys[0].ref
    await page.click(f"#remove-{keys[0].ref}")
    await expect(page.locator("#no-keys")).to_be_visible()
    assert await rig.desk.views.stepup.keys.keys("bob") == []
    assert (await rig.events("console.key_removed"))[0]["data"]["key"] == keys[0].ref


async def test_a_step_up_approval_with_the_approvers_own_key(rig):
    """Issue 19.6: a plain console approve (no assertion) changes nothing; approving with the key
    (navigator.credentials.get, verified) records it with `step_up: webauthn` in the approval, the
    audit entry and the token's approval claim."""
    from playwright.async_api import expect

    page = await rig.page("bob")
    await rig.register(page, "bob's key")
    rid = await rig.propose()
    await page.goto(f"{rig.base}/console/requests/{rid}")
    button = page.locator(f"#approve-{rid}")
    await expect(button).to_contain_text("Approve with security key")

    plain = await rig.post_approve(page, rid)
    assert plain.status == 403 and "security key" in await plain.text()
    assert (await rig.h.life.get(rid)).approvals == []

    await button.click()
    await expect(page.locator("#flash")).to_contain_text("Approved")
    req = await rig.h.life.get(rid)
    assert req.status == "approved" and req.approvals[0]["approver"] == "bob"
    assert req.approvals[0]["step_up"] == "webauthn"
    recorded = [e for e in await rig.events("approval.recorded") if e["request_id"] == rid]
    assert recorded and recorded[0]["data"]["step_up"] == "webauthn"
    token = (await rig.h.collect(rid)).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["approval"]["step_up"] == "webauthn" and claims["approval"]["step_up_approvers"] == ["bob"]


async def test_another_persons_key_is_refused(rig):
    """Issue 19.6: "a refusal with another person's key": erin's key answers bob's challenge; the broker
    accepts only bob's registered credentials, so nothing is recorded."""
    bob = await rig.page("bob")
    erin = await rig.page("erin")
    await rig.register(bob, "bob's key")
    await rig.register(erin, "erin's key")
    rid = await rig.propose()
    await bob.goto(f"{rig.base}/console/requests/{rid}")
    options = await rig.challenge(bob, rid)
    (erin_key,) = await rig.desk.views.stepup.keys.keys("erin")
    options["allowCredentials"] = [{"type": "public-key", "id": erin_key.id}]
    assertion = await erin.evaluate("(o) => jitgateWebAuthn.get(o)", options)
    r = await rig.post_approve(bob, rid, assertion=assertion)
    assert r.status == 403 and "not one of bob" in await r.text()
    assert (await rig.h.life.get(rid)).approvals == []


async def test_a_replayed_assertion_is_refused(rig):
    """Issue 19.6: "a replayed assertion": the assertion that approved one request, sent again (to it and to
    another request waiting for a fresh challenge), is refused; the challenge was single-use."""
    from playwright.async_api import expect

    page = await rig.page("bob")
    await rig.register(page, "bob's key")
    first, second = await rig.propose(), await rig.propose()
    await page.goto(f"{rig.base}/console/requests/{first}")
    async with page.expect_request(lambda r: r.url.endswith(f"/console/requests/{first}/approve")) as sent:
        await page.locator(f"#approve-{first}").click()
    assertion = parse_qs((await sent.value).post_data)["assertion"][0]
    await expect(page.locator("#flash")).to_contain_text("Approved")

    await page.goto(f"{rig.base}/console/requests/{second}")
    again = await rig.post_approve(page, second, assertion=assertion)  # no challenge is waiting
    assert again.status == 403 and "no security-key challenge" in await again.text()
    await rig.challenge(page, second)  # one is waiting now, but not the one that assertion signed
    again = await rig.post_approve(page, second, assertion=assertion)
    assert again.status == 403 and "did not verify" in await again.text()
    assert (await rig.h.life.get(second)).approvals == []
    key = (await rig.desk.views.stepup.keys.keys("bob"))[0]
    assert key.used_at is not None


async def test_a_chat_link_approves_once_and_cannot_be_used_twice(rig):
    """Issue 19.6: the link a chat Approve answers with is bound to that person and request and single-use;
    it signs them in for that approval only (no key management from a chat-opened session)."""
    from playwright.async_api import expect

    page = await rig.page("bob")
    await rig.register(page, "bob's key")
    await page.context.clear_cookies()  # bob closes the console; his key stays in his authenticator
    rid = await rig.propose()
    ctx = DeskContext.of(rig.h.broker)
    answer = await step_up_instead(ctx, await rig.h.life.get(rid), rig.h.approver("bob"), platform_user="U0BOB")
    url = re.search(r"(http://localhost:\d+/console/step-up\?token=\S+)", answer.text).group(1)
    assert answer.url == url

    # Someone else signed in cannot spend bob's link (and it stays usable for bob).
    erin = await rig.page("erin")
    await erin.goto(url)
    await erin.click("#continue")
    await expect(erin.locator("main")).to_contain_text("this step-up link is for bob")

    await page.goto(url)
    await page.click("#continue")
    await expect(page.locator("header")).to_contain_text("signed in as bob")
    await page.goto(f"{rig.base}/console/keys")
    await expect(page.locator("#keys-need-signin")).to_be_visible()
    refused = await page.request.post(f"{rig.base}/console/keys/options", form={"csrf": await rig.csrf(page)},
                                      headers={"Origin": rig.base})
    assert refused.status == 403
    await page.goto(f"{rig.base}/console/requests/{rid}")
    await page.locator(f"#approve-{rid}").click()
    await expect(page.locator("#flash")).to_contain_text("Approved")
    assert (await rig.h.life.get(rid)).approvals[0]["step_up"] == "webauthn"

    await page.goto(url)
    await expect(page.locator("main")).to_contain_text("This step-up link does not work")
    token = url.split("token=", 1)[1]
    twice = await page.request.post(f"{rig.base}/console/step-up", form={"token": token},
                                    headers={"Origin": rig.base})
    assert twice.status == 400 and "does not work" in await twice.text()
