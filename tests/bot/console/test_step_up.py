"""Step-up in the console without a browser (issue 19, item 6): what is refused before any key is
asked, through the real Starlette app with signed-in cookie jars. The ceremonies themselves run in
Chromium (test_step_up_browser.py)."""

from __future__ import annotations

import orjson
import pytest

from bot.console import ConsoleDesk
from bot.kit.stepup import StepUpLinks
from broker.clock import ManualClock
from broker.notify import KeySpace
from tests.bot.console.conftest import Console
from tests.broker.test_step_up import step_up_policies
from tests.support.harness import Harness, make_settings, write_agents


@pytest.fixture
async def console(tmp_path, redis_url, prefix, redis):
    settings = make_settings(tmp_path, redis_url, prefix, policy_dir=step_up_policies(tmp_path), console=True)
    desk = ConsoleDesk(settings, chain_cache_s=0)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock(), desks=[desk])
    await h.start()
    c = Console(h, desk)
    yield c
    await c.close()
    await h.stop()


async def _propose(console, **body) -> str:
    r = await console.h.propose(**body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_a_plain_console_approve_of_a_step_up_request_changes_nothing(console):
    """Issue 19.6: "a plain console approve (without assertion) on a step-up request changes nothing"; a
    made-up assertion does not either (no challenge was issued for it)."""
    bob = await console.signed_in("bob")
    rid = await _propose(console)
    page = (await bob.page(f"/console/requests/{rid}")).text
    assert "Approve with security key" in page and f'data-step-up="/console/requests/{rid}/step-up"' in page
    r = await bob.act(rid, "approve", next=f"/console/requests/{rid}")
    assert r.status_code == 403 and "security key" in r.text
    r = await bob.act(rid, "approve", assertion=orjson.dumps({"id": "AAAA", "type": "public-key"}).decode())
    assert r.status_code == 403 and "no security-key challenge" in r.text
    req = await console.h.life.get(rid)
    assert req.status == "pending" and req.approvals == []


async def test_no_challenge_without_a_key_or_for_a_request_that_needs_none(console):
    """Issue 19.6: a challenge is issued only to someone who may approve a step-up request and has a key."""
    bob = await console.signed_in("bob")
    rid = await _propose(console)
    r = await bob.post(f"/console/requests/{rid}/step-up")
    assert r.status_code == 403 and "no security key registered" in r.json()["error"]
    plain = await _propose(console, action="restart")
    r = await bob.post(f"/console/requests/{plain}/step-up")
    assert r.status_code == 403 and "needs no security key" in r.json()["error"]
    carol = await console.signed_in("carol")  # security, not sre
    r = await carol.post(f"/console/requests/{rid}/step-up")
    assert r.status_code == 403
    r = await bob.post(f"/console/requests/{rid}/step-up", csrf=False)
    assert r.status_code == 403 and "CSRF" in r.json()["error"]


async def test_registration_options_name_the_relying_party(console):
    """Issue 19.6: the RP id defaults from the console's public URL (the issuer's host)."""
    bob = await console.signed_in("bob")
    r = await bob.post("/console/keys/options")
    assert r.status_code == 200
    options = r.json()
    assert options["rp"]["id"] == "jitgate.test" and options["user"]["name"] == "bob"


async def test_a_step_up_link_is_only_for_its_person(console):
    """Issue 19.6: a link bound to bob cannot be used by erin's session (and stays usable for bob); an
    unknown or used token is refused; the session it opens may not manage keys and lasts 15 minutes."""
    rid = await _propose(console)
    links = StepUpLinks(KeySpace(console.h.broker.redis, console.h.settings.redis_prefix))
    token = await links.issue("bob", rid, now=console.h.clock.now())
    erin = await console.signed_in("erin")
    r = await erin.http.post("/console/step-up", data={"token": token})
    assert r.status_code == 403 and "for bob" in r.text
    assert await links.peek(token, now=console.h.clock.now()) is not None
    stranger = console.browser()
    assert (await stranger.http.get("/console/step-up", params={"token": "x" * 40})).status_code == 400
    page = await stranger.http.get("/console/step-up", params={"token": token})
    assert page.status_code == 200 and "Continue as bob" in page.text
    r = await stranger.http.post("/console/step-up", data={"token": token})
    assert r.status_code == 303 and r.headers["location"] == f"/console/requests/{rid}"
    assert (await stranger.http.post("/console/step-up", data={"token": token})).status_code == 400
    keys = await stranger.page("/console/keys")
    assert "keys-need-signin" in keys.text and "register-key" not in keys.text
    r = await stranger.post("/console/keys/options")
    assert r.status_code == 403
    console.h.clock.advance(15 * 60 + 1)  # such a session is for that approval, not a working day
    assert (await stranger.page()).status_code == 401
    assert (await erin.page()).status_code == 200
