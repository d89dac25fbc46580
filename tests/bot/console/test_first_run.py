"""The first run without a browser: `jitgate init` + `jitgate serve` print a working sign-in
link and the demo command; `jitgate demo` waits, gets its token after a person decides,
prints the verified claims, works and completes (or reports the denial)."""

from __future__ import annotations

import json
import re
import signal
import time

import httpx

from tests.bot.console.firstrun import FirstRun
from tests.support.process import run_cli


async def test_serve_prints_link_and_demo_command_and_the_demo_completes(tmp_path, prefix, redis_url, redis):
    """make run: the printed link signs alice in; the demo is approved and completes; Ctrl-C withdraws it; a denied
    demo asked again is denied at once by denial memory."""
    run = FirstRun(tmp_path, prefix, redis_url)
    try:
        link = run.start()
        banner = run.broker.output()
        assert "Sign in as alice (on-call, sre)" in banner and "jitgate demo" in banner
        async with httpx.AsyncClient() as http:
            r = await http.post(run.url + "/console/login", data={"token": link.split("token=")[1]})
            assert r.status_code == 303
            assert "HttpOnly" in r.headers["set-cookie"] and "Secure" not in r.headers["set-cookie"]
            assert "signed in as <strong>alice</strong>" in (await http.get(run.url + "/console")).text

        demo = run.demo("--work", "1")
        rid = demo.request_id()
        demo.wait_for("waiting for 1 approval(s) from 'sre'")
        assert run_cli(run.env, "requests", "approve", rid, "--as", "alice").returncode == 0
        assert demo.finish() == 0, demo.output()
        text = demo.output()
        claims = json.loads(re.search(r"its claims:\n(\{.*?\n\})", text, re.S).group(1))
        assert claims["sub"] == "demo-agent" and claims["aud"] == "prod/payments-api"
        assert claims["approval"]["approvers"] == ["alice"] and claims["approval"]["request_id"] == rid
        # The grant's 300 s end is fixed when alice approves; the demo collects moments later, so
        # the token lives to that end: 300 s from approval, a second or so less from issue.
        assert 290 <= claims["exp"] - claims["iat"] <= 300
        # Bound to the demo key (RFC 9449), so the demo also works where JITGATE_REQUIRE_DPOP is on.
        assert set(claims["cnf"]) == {"jkt"}
        assert "signature verified" in text and "status completed" in text

        interrupted = run.demo()
        rid = interrupted.request_id()
        interrupted.wait_for("waiting for 1 approval(s)")
        interrupted.proc.send_signal(signal.SIGINT)
        assert interrupted.finish() == 130
        assert f"interrupted: request {rid} withdrawn" in interrupted.output()
        shown = run_cli(run.env, "requests", "show", rid)
        assert json.loads(shown.stdout)["status"] == "cancelled"

        denied = run.demo("--work", "1")
        rid = denied.request_id()
        out = run_cli(run.env, "requests", "deny", rid, "--as", "bob", "--reason", "use the runbook")
        assert out.returncode == 0, out.stderr
        assert denied.finish() == 1
        assert "not granted: denied by bob: use the runbook" in denied.output()
        # Asked again at once: denial memory answers, citing bob, and nobody is asked (issue 19).
        again = run.demo("--work", "1")
        assert again.finish() == 1
        text = again.output()
        assert "policy said require_approval" in text
        assert "bob denied restart on prod/payments-api" in text and rid in text and "use the runbook" in text

        verify = run_cli(run.env, "audit", "verify")
        assert verify.returncode == 0 and "OK" in verify.stdout
    finally:
        run.stop()


async def test_a_production_start_prints_no_sign_in_link(tmp_path, prefix, redis_url, redis):
    """Issue 14.17 "never in a production start": with the demo agent set up, `jitgate serve` (without
    --first-run, which only `make run` passes) prints no console sign-in link, and no link is issued."""
    from tests.bot.console.firstrun import LINK_RE
    from tests.support.process import BrokerProcess

    run = FirstRun(tmp_path, prefix, redis_url)
    plain = BrokerProcess(run.env)
    plain.start()
    try:
        time.sleep(1.5)  # the banner is printed half a second after start-up, when there is one
        audit = run_cli(run.env, "audit", "export")
        assert audit.returncode == 0, audit.stderr
    finally:
        output = plain.stop()
    assert "jitgate is running at" not in output  # the banner
    assert LINK_RE.search(output) is None and "login?token=" not in output
    assert "console.link_issued" not in audit.stdout
