"""``jitgate gateway`` driven by the SDK's own MCP client, in front of a real upstream MCP server
written with the SDK (tests/broker/mcp/notes_server.py: a read tool and write tools), against a
live broker whose approvals are signed clicks in Slack (issue 20, item 1 and its "Done when")."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from mcp import Client as McpClient

from broker.audit import entries
from broker.embedded_redis import free_port
from broker.mcp.gateway import Gateway
from broker.mcp.settings import parse_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
NOTES = str(HERE / "notes_server.py")


def _env(calls: Path) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("JITGATE_")}, "NOTES_CALLS": str(calls),
            "PYTHONPATH": str(ROOT)}


@pytest.fixture
def calls(tmp_path) -> Path:
    """The file the upstream records every call it receives in."""
    path = tmp_path / "calls.jsonl"
    path.touch()
    return path


@pytest.fixture
def notes_url(calls):
    """The notes server over Streamable HTTP, in a process of its own."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, NOTES, "--http", str(port)], env=_env(calls), cwd=str(ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the notes server did not start") from None
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


def received(calls: Path) -> list[dict]:
    return [json.loads(line) for line in calls.read_text().splitlines() if line.strip()]


def gateway(live, notes_url: str, calls: Path, **top) -> Gateway:
    """The gateway: 'notes' over HTTP with the token header and read_note allowed; 'flaky', the same
    server over stdio, whose tools map onto the notes actions."""
    config = parse_config({**top, "upstreams": {
        "notes": {"url": notes_url, "target": "staging/notes", "token_header": "Authorization", "allow": ["read_note"]},
        "flaky": {"command": [sys.executable, NOTES], "env": _env(calls), "target": "staging/notes",
                  "actions": {"crash": "mcp:notes/crash", "append_log": "mcp:notes/append_log"}},
    }})
    return Gateway(config, live.client("mcp-gateway", dpop=False))


def text(res) -> str:
    return "\n".join(c.text for c in res.content if getattr(c, "text", None))


async def audit_events(live, rid: str) -> list[dict]:
    store = live.broker.store
    return [e.body() async for e in entries(store.redis, store.audit_stream) if e.body().get("request_id") == rid]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_read_passes_write_is_held_until_two_approve_in_slack_and_carries_the_token(live, notes_url, calls, mode):
    """Issue 20 "Done when": the read tool passes; the write tool is held, approved in Slack by two
    people, forwarded with the token, and its outcome lands in the audit log. (Both protocol eras:
    2025-11-25 with the initialize handshake, and what ``auto`` negotiates.)"""
    gw = gateway(live, notes_url, calls)
    async with McpClient(gw.server, mode=mode) as agent:
        names = {t.name for t in (await agent.list_tools()).tools}
        assert {"notes__read_note", "notes__write_note", "flaky__crash"} <= names

        read = await agent.call_tool("notes__read_note", {"path": "readme"})
        assert not read.is_error and text(read) == "hello"
        assert await live.broker.store.scan_requests() == []  # allow-listed: no proposal
        assert received(calls) == [{"tool": "read_note", "arguments": {"path": "readme"}, "authorization": None}]

        progress: list[str | None] = []

        async def on_progress(done, total, message):
            progress.append(message)

        call = asyncio.create_task(agent.call_tool("notes__write_note", {"path": "plan", "text": "ship it"},
                                                   progress_callback=on_progress))
        rid = await live.pending()
        req = await live.broker.lifecycle.get(rid)
        assert (req.proposal.action, req.proposal.target, req.proposal.tool) == (
            "mcp:notes/write_note", "staging/notes", "write_note")
        assert req.proposal.arguments == {"path": "plan", "text": "ship it"}
        await live.slack_approve("U0BOB", rid)
        await live.status(rid, "pending")
        assert len(received(calls)) == 1  # held: one approval of two is not enough
        await live.slack_approve("U0ERIN", rid)
        result = await asyncio.wait_for(call, 30)

    assert not result.is_error and text(result) == "wrote 7 characters to plan"
    assert "pending: 0/2 approvals from sre" in progress
    write = received(calls)[-1]
    assert write["tool"] == "write_note" and write["authorization"].startswith("Bearer ")
    claims = jwt.decode(write["authorization"].split()[1], options={"verify_signature": False})
    assert claims["approval"]["request_id"] == rid and sorted(claims["approval"]["approvers"]) == ["bob", "erin"]
    assert claims["sub"] == "mcp-gateway" and claims["aud"] == "staging/notes"

    await gw.drain()
    assert (await live.broker.lifecycle.get(rid)).status == "completed"
    completed = [e for e in await audit_events(live, rid) if e["type"] == "grant.completed"]
    assert len(completed) == 1
    assert completed[0]["data"]["outcome"] == {"status": "success",
                                               "summary": "notes__write_note: wrote 7 characters to plan"}


async def test_a_denied_call_returns_the_approvers_reason(live, notes_url, calls):
    """Issue 20: "a denied call returns the approver's reason to the client" - and the request id;
    the upstream never sees the call."""
    gw = gateway(live, notes_url, calls)
    async with McpClient(gw.server) as agent:
        call = asyncio.create_task(agent.call_tool("notes__write_note", {"path": "plan", "text": "ship it"}))
        rid = await live.pending()
        await live.slack_deny("U0BOB", rid, "not during the release freeze")
        result = await asyncio.wait_for(call, 30)
    assert result.is_error
    assert "denied by bob: not during the release freeze" in text(result) and rid in text(result)
    assert received(calls) == []


async def test_a_call_whose_arguments_cedar_forbids_never_reaches_the_upstream(live, notes_url, calls):
    """Issue 20: the call's arguments go to Cedar's context; a forbid on them ("notes-no-secrets":
    no path under secrets/) refuses the call before anyone is asked, and the upstream never sees it."""
    gw = gateway(live, notes_url, calls)
    async with McpClient(gw.server) as agent:
        result = await agent.call_tool("notes__write_note", {"path": "secrets/root-key", "text": "x"})
        assert result.is_error and "denied" in text(result) and "not forwarded" in text(result)
        (req,) = await live.broker.store.scan_requests()
        assert req.status == "denied" and req.proposal.arguments == {"path": "secrets/root-key", "text": "x"}
        # The same tool with other arguments is only held (so it was the arguments that decided).
        held = asyncio.create_task(agent.call_tool("notes__write_note", {"path": "plan", "text": "x"}))
        rid = await live.pending()
        held.cancel()  # the agent gives up waiting: nobody should be left deciding it
        await asyncio.gather(held, return_exceptions=True)
        await live.status(rid, "cancelled")
    assert rid != req.id
    assert received(calls) == []


async def test_an_upstream_that_crashes_mid_call_yields_a_clear_error_and_a_failure(live, notes_url, calls):
    """Issue 20: "an upstream that crashes mid-call yields a clear error and a failure outcome"; the
    grant is ended at once, and the next call opens a new connection to the upstream."""
    gw = gateway(live, notes_url, calls)
    async with McpClient(gw.server) as agent:
        result = await asyncio.wait_for(agent.call_tool("flaky__crash", {}), 30)
        assert result.is_error and "upstream 'flaky' failed during 'crash'" in text(result)
        (req,) = await live.broker.store.scan_requests()
        assert req.id in text(result) and req.proposal.action == "mcp:notes/crash"
        await gw.drain()
        assert (await live.broker.lifecycle.get(req.id)).status == "completed"
        (completed,) = [e for e in await audit_events(live, req.id) if e["type"] == "grant.completed"]
        assert completed["data"]["outcome"]["status"] == "failure"
        assert "upstream 'flaky' failed during 'crash'" in completed["data"]["outcome"]["summary"]

        again = await asyncio.wait_for(agent.call_tool("flaky__append_log", {"line": "after the crash"}), 30)
        assert not again.is_error and text(again) == "ok"
    assert [c["tool"] for c in received(calls)] == ["crash", "append_log"]


async def test_auto_grant_forwards_at_once_and_unknown_tools_fail_closed(live, notes_url, calls):
    """A call policy grants at once is forwarded with its token without waiting; a tool no upstream
    has, or an upstream the file does not name, is refused without a proposal."""
    gw = gateway(live, notes_url, calls)
    async with McpClient(gw.server) as agent:
        ok = await agent.call_tool("notes__append_log", {"line": "deployed"})
        assert not ok.is_error and text(ok) == "ok"
        for name in ("notes__drop_everything", "nowhere__read_note", "read_note"):
            res = await agent.call_tool(name, {})
            assert res.is_error and "jitgate gateway: " in text(res), name
    (req,) = await live.broker.store.scan_requests()
    assert req.proposal.action == "mcp:notes/append_log"
    assert received(calls)[0]["authorization"].startswith("Bearer ")


async def test_a_call_nobody_decides_is_withdrawn_and_refused(live, notes_url, calls):
    """A held call waits at most ``wait_s``; then the request is withdrawn (approvers are not left
    deciding what nobody waits for) and the call is a tool error with the request id."""
    gw = gateway(live, notes_url, calls, wait_s=1)
    async with McpClient(gw.server) as agent:
        result = await asyncio.wait_for(agent.call_tool("notes__write_note", {"path": "p", "text": "t"}), 30)
    (req,) = await live.broker.store.scan_requests()
    assert result.is_error and "no decision within 1 s" in text(result) and req.id in text(result)
    assert req.status == "cancelled" and received(calls) == []


async def test_jitgate_gateway_over_stdio(live, calls, tmp_path):
    """`jitgate gateway --config FILE` as an MCP client starts it (stdio), with a stdio upstream: an
    allow-listed read passes, a call policy grants at once is forwarded, a forbidden one is refused."""
    import tempfile

    import yaml
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client

    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"upstreams": {"notes": {
        "command": [sys.executable, NOTES], "env": _env(calls), "target": "staging/notes", "allow": ["read_note"]}}}))
    env = {**_env(calls), "JITGATE_URL": live.url, "JITGATE_AGENT_ID": "mcp-gateway",
           "JITGATE_AGENT_KEY": str(live.key_files["mcp-gateway"])}
    params = StdioServerParameters(command=sys.executable, env=env, cwd=str(ROOT),
                                   args=["-m", "broker.cli", "gateway", "--config", str(config), "--no-dpop"])
    with tempfile.TemporaryFile(mode="w+") as errlog:
        async with McpClient(stdio_client(params, errlog=errlog), mode="legacy") as agent:
            assert "notes__write_note" in {t.name for t in (await agent.list_tools()).tools}
            assert text(await agent.call_tool("notes__read_note", {"path": "readme"})) == "hello"
            assert text(await agent.call_tool("notes__append_log", {"line": "x"})) == "ok"
            refused = await agent.call_tool("notes__write_note", {"path": "secrets/a", "text": "x"})
            assert refused.is_error and "denied" in text(refused)
    assert [c["tool"] for c in received(calls)] == ["read_note", "append_log"]
    (req,) = [r for r in await live.broker.store.scan_requests() if r.proposal.action == "mcp:notes/append_log"]
    await live.status(req.id, "completed")


async def test_jitgate_gateway_over_streamable_http(live, calls, tmp_path):
    """`jitgate gateway --transport http`: the agent reaches the gateway over Streamable HTTP; an
    allow-listed call and a granted one are forwarded to a stdio upstream."""
    import yaml

    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"upstreams": {"notes": {
        "command": [sys.executable, NOTES], "env": _env(calls), "target": "staging/notes", "allow": ["read_note"]}}}))
    env = {**_env(calls), "JITGATE_URL": live.url, "JITGATE_AGENT_ID": "mcp-gateway",
           "JITGATE_AGENT_KEY": str(live.key_files["mcp-gateway"])}
    port = free_port()
    with open(tmp_path / "gw.log", "w") as log:
        await _gateway_over_http(live, calls, tmp_path, config, env, port, log)


async def _gateway_over_http(live, calls, tmp_path, config, env, port, log) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "gateway", "--config", str(config),
                             "--transport", "http", "--port", str(port)], env=env, cwd=str(ROOT),
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with McpClient(f"http://127.0.0.1:{port}/mcp") as agent:
                    read = await agent.call_tool("notes__read_note", {"path": "readme"})
                    logged = await agent.call_tool("notes__append_log", {"line": "over http"})
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("the gateway did not stop on SIGTERM: " + (tmp_path / "gw.log").read_text()[-2000:])
    assert text(read) == "hello" and text(logged) == "ok"
    assert [c["tool"] for c in received(calls)] == ["read_note", "append_log"]
