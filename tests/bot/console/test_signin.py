"""Console sign-in: single-use short-lived links, cookie sessions, sign-out (both audited),
and the `jitgate console login` command."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
from urllib.parse import parse_qs, urlsplit

import httpx

from bot.console import ConsoleDesk
from broker.notify import DeskContext
from starlette.applications import Starlette
from tests.support.harness import ISSUER
from tests.support.process import jitgate_env, run_cli


async def test_link_signs_in_and_page_shows_the_approver(console):
    """A valid link shows a confirm page, and posting it signs the approver in."""
    b = console.browser()
    token = await console.link("bob")
    confirm = await b.http.get("/console/login", params={"token": token})
    assert confirm.status_code == 200 and "Sign in as bob" in confirm.text
    r = await b.http.post("/console/login", data={"token": token})
    assert r.status_code == 303 and r.headers["location"] == "/console"
    page = await b.page()
    assert page.status_code == 200 and "signed in as <strong>bob</strong>" in page.text


async def test_reused_link_is_refused(console):
    """Security (single-use link): a sign-in link works once; the second use is refused and makes no session."""
    token = await console.link("bob")
    first, second = console.browser(), console.browser()
    assert (await first.http.post("/console/login", data={"token": token})).status_code == 303
    again = await second.http.post("/console/login", data={"token": token})
    assert again.status_code == 400 and "already used" in again.text
    assert not second.http.cookies
    assert (await second.page()).status_code == 401
    assert (await second.http.get("/console/login", params={"token": token})).status_code == 400


async def test_racing_uses_of_one_link_make_one_session(console):
    """Security (single-use link, atomic GETDEL): two browsers posting the same link at once get one session."""
    token = await console.link("bob")
    browsers = [console.browser() for _ in range(5)]
    results = await asyncio.gather(*(b.http.post("/console/login", data={"token": token}) for b in browsers))
    assert sorted(r.status_code for r in results) == [303, 400, 400, 400, 400]


async def test_expired_link_is_refused(console):
    """Security (short-lived link): a link older than 10 minutes is refused even though Redis still holds it."""
    token = await console.link("bob")
    console.h.clock.advance(601)
    b = console.browser()
    r = await b.http.post("/console/login", data={"token": token})
    assert r.status_code == 400 and "expired" in r.text
    assert (await b.page()).status_code == 401


async def test_made_up_or_truncated_link_is_refused(console):
    """A token nobody issued, or a link copied incompletely, signs nobody in."""
    token = await console.link("bob")
    b = console.browser()
    for bad in ("x" * 43, token[:-3], ""):
        r = await b.http.post("/console/login", data={"token": bad})
        assert r.status_code == 400
    assert (await b.http.post("/console/login", data={"token": token})).status_code == 303


async def test_link_for_someone_not_in_the_approvers_file_is_refused(console):
    """Only approvers in the approvers file can sign in, whatever a link says."""
    token = await console.link("mallory")
    r = await console.browser().http.post("/console/login", data={"token": token})
    assert r.status_code == 403 and "not in the approvers file" in r.text


async def test_session_cookie_is_httponly_samesite_strict_and_secure_on_https(console):
    """Security (cookie flags): HttpOnly, SameSite=Strict, Secure with the __Host- prefix when the issuer is https."""
    r = await console.browser().http.post("/console/login", data={"token": await console.link("bob")})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-jitgate-console=")
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path=/", "samesite=strict"} <= flags


async def test_cookie_is_not_secure_on_a_plain_http_issuer(console):
    """On http://127.0.0.1 (the laptop set-up) the cookie cannot be Secure, so it is scoped to /console."""
    settings = dataclasses.replace(console.h.settings, issuer="http://127.0.0.1:8080")
    desk = ConsoleDesk(settings)
    desk.views.bind(DeskContext.of(console.h.broker))
    app = Starlette(routes=desk.routes())
    link = await desk.views.sessions.issue_link("bob", now=console.h.clock.now(), issued_by="test")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8080") as http:
        r = await http.post("/console/login", data={"token": link.token})
    flags = {f.strip().lower() for f in r.headers["set-cookie"].split(";")}
    assert "secure" not in flags and "httponly" in flags and "samesite=strict" in flags and "path=/console" in flags


async def test_sign_out_ends_the_session(console):
    """After signing out, the old cookie opens nothing and cannot act."""
    b = await console.signed_in("bob")
    csrf = await b.csrf()
    cookies = dict(b.http.cookies)
    r = await b.post("/console/logout", {"csrf": csrf})
    assert r.status_code == 200 and "signed out" in r.text
    replay = console.browser()
    replay.http.cookies.update(cookies)
    assert (await replay.page()).status_code == 401
    rid = (await console.h.propose()).json()["id"]
    r = await replay.http.post(f"/console/requests/{rid}/approve", data={"csrf": csrf})
    assert r.status_code == 401
    assert (await console.h.life.get(rid)).approvals == []


async def test_new_sign_in_replaces_the_old_session(console):
    """Security (no session fixation): signing in again in the same browser issues a new session id."""
    b = await console.signed_in("bob")
    old = dict(b.http.cookies)
    assert (await b.http.post("/console/login", data={"token": await console.link("bob")})).status_code == 303
    assert dict(b.http.cookies) != old
    stale = console.browser()
    stale.http.cookies.update(old)
    assert (await stale.page()).status_code == 401


async def test_without_a_session_the_console_explains_how_to_sign_in(console):
    """No cookie: a 401 page that names the command that prints a link."""
    r = await console.browser().page()
    assert r.status_code == 401 and "jitgate console login" in r.text


async def test_session_ends_when_the_approver_leaves_the_approvers_file(console, tmp_path):
    """An approver removed from the approvers file is signed out at the next page load."""
    approvers = tmp_path / "approvers.yaml"
    approvers.write_text(console.h.settings.approvers_file.read_text())
    console.h.broker.directory = type(console.h.broker.directory).load(approvers, console.h.settings.targets_file)
    console.desk.views.bind(DeskContext.of(console.h.broker))  # desks see the directory they are started with
    b = await console.signed_in("erin")
    assert (await b.page()).status_code == 200
    approvers.write_text(approvers.read_text().replace("  - id: erin\n    groups: [sre]\n", ""))
    console.h.broker.directory.reload_if_changed()
    assert (await b.page()).status_code == 401


def _kek() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


async def test_cli_login_prints_a_link_the_console_accepts(console, tmp_path, prefix, redis_url):
    """`jitgate console login <id>` prints one link (stdout) that signs that approver in once."""
    env = jitgate_env(tmp_path, prefix, _kek(), redis_url)
    out = await asyncio.to_thread(run_cli, env, "console", "login", "alice")
    assert out.returncode == 0, out.stderr
    link = out.stdout.strip()
    assert link.startswith(ISSUER + "/console/login?token=") and "alice" in out.stderr
    token = parse_qs(urlsplit(link).query)["token"][0]
    b = console.browser()
    assert (await b.http.post("/console/login", data={"token": token})).status_code == 303
    assert "signed in as <strong>alice</strong>" in (await b.page()).text
    assert (await console.browser().http.post("/console/login", data={"token": token})).status_code == 400


def test_cli_login_refuses_unknown_approver_and_a_disabled_console(tmp_path, prefix, redis_url):
    """The command names the problem: an id not in the approvers file, or the console switched off."""
    env = jitgate_env(tmp_path, prefix, _kek(), redis_url)
    out = run_cli(env, "console", "login", "mallory")
    assert out.returncode == 2 and "no approver 'mallory'" in out.stderr and not out.stdout
    off = run_cli({**env, "JITGATE_CONSOLE": "0"}, "console", "login", "alice")
    assert off.returncode == 2 and "console is off" in off.stderr and not off.stdout


async def test_sign_in_and_out_are_audited(console, redis):
    """Signing in and out of the console leaves audit events naming the approver."""
    bob = await console.signed_in("bob")
    await bob.post("/console/logout")
    rows = await redis.xrange(console.h.broker.store.audit_stream)
    kinds = [(f[b"event"]) for _sid, f in rows]
    assert any(b'"console.signed_in"' in k and b'"bob"' in k for k in kinds)
    assert any(b'"console.signed_out"' in k and b'"bob"' in k for k in kinds)
