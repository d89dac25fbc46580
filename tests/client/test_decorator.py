"""@requires_approval on async and sync tool functions."""

from __future__ import annotations

import asyncio
import inspect
import json

import pytest

from broker.client import Evidence, Refusal, SyncClient, requires_approval


async def test_async_tool_runs_with_the_token_and_completes(live):
    """An approved tool runs once, receives the token, and the grant is completed when it returns."""
    client = live.client("reader-bot")
    calls = []

    @requires_approval(client=client, action="read", target=lambda service, **_: f"staging/{service}",
                       justification=lambda service, **_: f"read {service} config", duration=60,
                       evidence=lambda service, **_: [Evidence.link("ticket", "OPS-1", "https://t.example/OPS-1")])
    async def read_config(service: str, *, token) -> str:
        calls.append(token)
        return f"config of {service}"

    assert await read_config("payments-api") == "config of payments-api"
    assert len(calls) == 1 and calls[0].token_type == "DPoP"
    req = await live.broker.lifecycle.get(calls[0].request_id)
    assert req.status == "completed" and req.proposal.justification == "read payments-api config"
    assert req.proposal.evidence[0].title == "OPS-1"


async def test_denied_tool_returns_a_refusal_the_model_can_read(live):
    """A denial is a value, not a crash: a JSON-serialisable Refusal with the reason, and the tool never ran."""
    ran = []

    @requires_approval(client=live.client("reader-bot"), action="restart", target="prod/payments-api", wait=10)
    async def restart(*, token) -> str:
        ran.append(True)
        return "restarted"

    task = asyncio.create_task(restart())
    rid = await live.pending()
    await live.deny(rid, "change freeze until Monday")
    result = await asyncio.wait_for(task, 5)
    assert isinstance(result, Refusal) and not ran
    assert result["approved"] is False and result.status == "denied" and result.reason == "change freeze until Monday"
    assert result["request_id"] == rid and "denied by bob: change freeze until Monday" in str(result)
    assert json.loads(json.dumps(result))["message"] == result["message"]


async def test_policy_denial_refusal_names_the_policy(live):
    """A policy denial's Refusal lists the deciding policy ids."""
    @requires_approval(client=live.client("reader-bot"), action="db.export", target="prod/payments-api")
    def export(*, token):
        raise AssertionError("must not run")

    result = await asyncio.to_thread(export)
    assert result.status == "denied" and result["policies"] == ["no-export"]


async def test_undecided_tool_times_out_and_withdraws(live):
    """No decision within `wait` gives a timed_out Refusal and the request is withdrawn."""
    @requires_approval(client=live.client("reader-bot"), action="restart", target="prod/payments-api", wait=0.3)
    async def restart(*, token):
        raise AssertionError("must not run")

    result = await restart()
    assert result.status == "timed_out"
    assert (await live.broker.lifecycle.get(result["request_id"])).status == "cancelled"


async def test_sync_tool_runs_and_completes_even_when_it_raises(live):
    """A sync tool gets the token through the sync client; an exception propagates and the grant still completes."""
    seen = []

    @requires_approval(client=lambda: SyncClient(live.url, "reader-bot", live.keys["reader-bot"]),
                       action="read", target="staging/payments-api", justification="read config")
    def flaky(token=None):
        seen.append(token.request_id)
        raise ValueError("tool broke")

    with pytest.raises(ValueError, match="tool broke"):
        await asyncio.to_thread(flaky)
    assert (await live.broker.lifecycle.get(seen[0])).status == "completed"


def test_the_token_parameter_is_hidden_from_tool_schemas():
    """Frameworks reading the signature see the tool's own parameters, not the token."""
    @requires_approval(client=lambda: None, action="read", target="staging/x")  # resolved on first call only
    async def tool(service: str, limit: int = 10, *, token=None) -> str:
        return ""

    assert list(inspect.signature(tool).parameters) == ["service", "limit"]
    assert "token" not in tool.__annotations__ and tool.__name__ == "tool"
    with pytest.raises(TypeError, match="must accept the keyword argument 'token'"):
        requires_approval(client=lambda: None, action="read", target="x")(lambda a: a)
