"""Console hardening: CSRF tokens, cross-site posts, escaping of agent text, headers, redirects."""

from __future__ import annotations

from pathlib import Path

import bot.console

TEMPLATES = Path(bot.console.__file__).parent / "templates"


async def _pending(console) -> str:
    return (await console.h.propose(action="restart", duration_s=300)).json()["id"]


async def test_post_without_csrf_token_is_refused(console):
    """Security (CSRF): a state-changing POST without the form's CSRF token is refused and changes nothing."""
    rid = await _pending(console)
    bob = await console.signed_in("bob")
    r = await bob.post(f"/console/requests/{rid}/approve", {}, csrf=False)
    assert r.status_code == 403 and "CSRF" in r.text
    r = await bob.post(f"/console/requests/{rid}/deny", {"reason": "x"}, csrf=False)
    assert r.status_code == 403
    r = await bob.post("/console/logout", {}, csrf=False)
    assert r.status_code == 403 and (await bob.page()).status_code == 200
    assert (await console.h.life.get(rid)).status == "pending"


async def test_wrong_or_foreign_csrf_token_is_refused(console):
    """Security (CSRF): a made-up token, or another session's token, does not pass."""
    rid = await _pending(console)
    bob, erin = await console.signed_in("bob"), await console.signed_in("erin")
    for token in ("0" * 43, await erin.csrf()):
        r = await bob.post(f"/console/requests/{rid}/approve", {"csrf": token})
        assert r.status_code == 403
    assert (await console.h.life.get(rid)).approvals == []


async def test_cross_site_post_is_refused_even_with_a_token(console):
    """Security (CSRF, second line): a POST whose Origin or Sec-Fetch-Site says another site is refused."""
    rid = await _pending(console)
    bob = await console.signed_in("bob")
    csrf = await bob.csrf()
    r = await bob.http.post(f"/console/requests/{rid}/approve", data={"csrf": csrf},
                            headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "another site" in r.text
    r = await bob.http.post(f"/console/requests/{rid}/approve", data={"csrf": csrf},
                            headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = await bob.http.post("/console/login", data={"token": await console.link("bob")},
                            headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert (await console.h.life.get(rid)).approvals == []
    r = await bob.http.post(f"/console/requests/{rid}/approve", data={"csrf": csrf},
                            headers={"Origin": "https://jitgate.test", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303


async def test_script_in_agent_text_is_rendered_as_text(console):
    """Security (untrusted agent text): <script> in justification, evidence and ticket is escaped, never markup."""
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    r = await console.h.propose(
        action="restart", duration_s=300, justification=f"fix {evil}", ticket="T-1<b>bold</b>",
        evidence=[{"kind": "log", "title": f"title {evil}", "excerpt": f"line {evil}"},
                  {"kind": "ticket", "title": "t", "url": 'https://x.example/"><script>alert(2)</script>'}],
    )
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    bob = await console.signed_in("bob")
    for path in ("/console", f"/console/requests/{rid}"):
        html = (await bob.page(path)).text
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>bold</b>" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
        assert "T-1&lt;b&gt;bold&lt;/b&gt;" in html
        assert 'href="https://x.example/&#34;&gt;&lt;script&gt;' in html  # the attribute cannot be closed
    await bob.act(rid, "deny", reason=f"no {evil}")
    html = (await bob.page()).text
    assert "<script>alert" not in html and "no &lt;script&gt;" in html


def test_templates_never_mark_anything_safe():
    """Security (autoescape): no template turns escaping off (no |safe, no autoescape false, no Markup)."""
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        assert "|safe" not in text.replace(" ", ""), path.name
        assert "autoescape false" not in text, path.name
    views = (TEMPLATES.parent / "views.py").read_text()
    assert "autoescape=True" in views and "Markup(" not in views


async def test_pages_send_protective_headers(console):
    """Security (clickjacking, script injection): CSP without inline script, no framing, no cross-site referrer, no caching."""
    bob = await console.signed_in("bob")
    for r in (await bob.page(), await console.browser().page(),
              await console.browser().http.get("/console/login", params={"token": await console.link("bob")})):
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["cache-control"] == "no-store"
    assert "<script>" not in (await bob.page()).text.replace('<script src="/console/static/console.js"></script>', "")


async def test_next_parameter_cannot_redirect_elsewhere(console):
    """Security (open redirect): after a decision the console only ever redirects to its own pages."""
    rid = await _pending(console)
    bob = await console.signed_in("bob")
    for nxt in ("https://evil.example/", "//evil.example", "/console/../admin", "/console/requests/x?a=b"):
        # Past the denial memory's cool-down: the same restart is asked of people again.
        console.h.clock.advance(console.h.settings.denial_cooldown_s + 1)
        rid = await _pending(console)
        r = await bob.act(rid, "deny", reason="no", next=nxt)
        assert r.status_code == 303 and r.headers["location"] == "/console", nxt
    console.h.clock.advance(console.h.settings.denial_cooldown_s + 1)
    rid = await _pending(console)
    r = await bob.act(rid, "deny", reason="no", next=f"/console/requests/{rid}")
    assert r.headers["location"] == f"/console/requests/{rid}"


async def test_changes_endpoint_needs_a_session(console):
    """The live-update counter is for signed-in approvers only."""
    assert (await console.browser().http.get("/console/changes")).status_code == 401
    bob = await console.signed_in("bob")
    assert (await bob.http.get("/console/changes")).status_code == 200


async def test_only_known_static_files_are_served(console):
    """The static route serves its two files and nothing else (no path traversal)."""
    b = console.browser()
    js = await b.http.get("/console/static/console.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert (await b.http.get("/console/static/..%2Fviews.py")).status_code == 404
    assert (await b.http.get("/console/static/views.py")).status_code == 404
