"""``jitgate mcp`` driven by the SDK's own MCP client over stdio, against a live broker (issue 20,
item 2 and its "Done when": "`jitgate mcp` is tested with the SDK's client over stdio: request,
wait, collect, complete")."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import jwt
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = Path(__file__).resolve().parents[3]
RESTART = {"action": "restart", "target": "prod/payments-api", "justification": "OOM loop since 10:02",
           "duration_s": 120, "evidence": [{"kind": "log", "title": "pod events", "excerpt": "OOMKilled x14"}]}


def params(live, agent_id: str = "reader-bot", *extra: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITGATE_", "REDIS_URL", "SLACK_"))}
    env.update(PYTHONPATH=str(ROOT), JITGATE_URL=live.url, JITGATE_AGENT_ID=agent_id,
               JITGATE_AGENT_KEY=str(live.key_files[agent_id]))
    return StdioServerParameters(command=sys.executable, args=["-m", "broker.cli", "mcp", *extra], env=env, cwd=str(ROOT))


def result(res) -> dict:
    """The tool's structured answer (a JSON object)."""
    assert not res.is_error, res.content
    return res.structured_content if res.structured_content is not None else json.loads(res.content[0].text)


def text(res) -> str:
    return "\n".join(c.text for c in res.content if getattr(c, "text", None))


async def test_request_wait_collect_complete_over_stdio(live):
    """Request (pending), wait with progress while bob approves in Slack, collect the token, complete."""
    with tempfile.TemporaryFile(mode="w+") as errlog:
        await _request_wait_collect_complete(live, errlog)


async def _request_wait_collect_complete(live, errlog) -> None:
    async with Client(stdio_client(params(live, "reader-bot", "--no-dpop"), errlog=errlog), mode="legacy") as mcp:
        names = {t.name for t in (await mcp.list_tools()).tools}
        assert names == {"request_escalation", "escalation_status", "collect_grant", "complete_grant"}

        asked = result(await mcp.call_tool("request_escalation", RESTART))
        rid = asked["request_id"]
        assert asked["status"] == "pending" and asked["decision"]["approvals_required"] == 1

        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        waiting = asyncio.create_task(mcp.call_tool("escalation_status", {"request_id": rid, "wait_s": 30},
                                                    progress_callback=on_progress))
        await live.slack_approve("U0BOB", rid)
        status = result(await asyncio.wait_for(waiting, 40))
        assert status["status"] == "approved" and [a["approver"] for a in status["approvals"]] == ["bob"]
        assert progress and progress[0][2] == "pending: 0/1 approvals from sre" and progress[0][1] == 1

        token = result(await mcp.call_tool("collect_grant", {"request_id": rid}))
        claims = jwt.decode(token["access_token"], options={"verify_signature": False})
        assert token["token_type"] == "Bearer" and claims["approval"]["request_id"] == rid
        assert claims["sub"] == "reader-bot" and claims["aud"] == "prod/payments-api"

        again = await mcp.call_tool("collect_grant", {"request_id": rid})
        assert again.is_error  # once only

        done = result(await mcp.call_tool("complete_grant", {"request_id": rid, "status": "success",
                                                             "summary": "restarted; error rate back to 0.1%"}))
        assert done["status"] == "completed"
    assert (await live.broker.lifecycle.get(rid)).status == "completed"
    errlog.seek(0)
    logged = errlog.read()
    assert "PRIVATE KEY" not in logged and live.key_files["reader-bot"].read_text().splitlines()[1] not in logged


async def test_an_auto_grant_and_a_policy_denial_read_as_the_model_needs_them(live):
    """An approved-by-policy request answers approved at once; one no policy permits is a denial the
    model can read; a bounded wait on a pending request answers pending, not an error."""
    with tempfile.TemporaryFile(mode="w+") as errlog:
        async with Client(stdio_client(params(live), errlog=errlog)) as mcp:
            await _auto_grant_and_denial(mcp)


async def _auto_grant_and_denial(mcp) -> None:
    read = result(await mcp.call_tool("request_escalation", {
        "action": "read", "target": "staging/payments-api", "justification": "check config drift"}))
    assert read["status"] == "approved" and read["decision"]["outcome"] == "auto_grant"

    denied = result(await mcp.call_tool("request_escalation", {
        "action": "drop-table", "target": "prod/payments-api", "justification": "clean up"}))
    assert denied["status"] == "denied" and denied["decision"]["outcome"] == "deny"

    pending = result(await mcp.call_tool("request_escalation", RESTART))
    waited = result(await mcp.call_tool("escalation_status", {"request_id": pending["request_id"], "wait_s": 0.5}))
    assert waited["status"] == "pending"

    wrong = await mcp.call_tool("request_escalation", {"action": "restart", "target": "prod/payments-api",
                                                       "justification": "x", "duration_s": -5})
    assert wrong.is_error and "the broker refused" in text(wrong)

    bad = await mcp.call_tool("complete_grant", {"request_id": read["request_id"], "status": "maybe"})
    assert bad.is_error and "success" in text(bad)


async def test_jitgate_mcp_over_streamable_http(live):
    """`jitgate mcp --transport http`: the same tools over Streamable HTTP on a loopback port."""
    import subprocess
    import time

    from broker.embedded_redis import free_port

    port = free_port()
    p = params(live)
    proc = subprocess.Popen([p.command, *p.args, "--transport", "http", "--port", str(port)], env=p.env, cwd=p.cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with Client(f"http://127.0.0.1:{port}/mcp") as mcp:
                    read = result(await mcp.call_tool("request_escalation", {
                        "action": "read", "target": "staging/payments-api", "justification": "check drift"}))
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert read["status"] == "approved"
        assert (await live.broker.lifecycle.get(read["request_id"])).agent == "reader-bot"
    finally:
        proc.terminate()
        proc.wait(10)
