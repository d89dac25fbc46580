"""Issue 20, item 3: the OpenAI Agents SDK adapter. The SDK's own runner executes the tool
call (``Runner.run`` with a stubbed ``Model`` that answers with a fixed tool call, then echoes
the tool output it was given), against a live broker: no model, no network beyond loopback."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents import Agent, FunctionTool, RunConfig, Runner, function_tool
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from broker.client.adapters.openai_agents import current_token, jitgate_tool


class OneToolCall(Model):
    """A model stand-in: its first answer is one call of ``name`` with ``arguments``; its second
    repeats the tool output it was given, so the run's final output is what the model read."""

    def __init__(self, name: str, arguments: dict) -> None:
        self.name, self.arguments = name, arguments
        self.inputs: list = []

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
                           *args, **kwargs) -> ModelResponse:
        self.inputs.append(input)
        if len(self.inputs) == 1:
            call = ResponseFunctionToolCall(id="fc_1", call_id="call_1", type="function_call", status="completed",
                                            name=self.name, arguments=json.dumps(self.arguments))
            return ModelResponse(output=[call], usage=Usage(), response_id=None)
        outputs = [item["output"] for item in input if isinstance(item, dict) and item.get("type") == "function_call_output"]
        text = ResponseOutputText(type="output_text", text=f"the tool said: {outputs[-1]}", annotations=[])
        message = ResponseOutputMessage(id="msg_1", type="message", role="assistant", status="completed", content=[text])
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError("the tests run without streaming")


async def run_agent(tool: FunctionTool, model: OneToolCall) -> str:
    agent = Agent(name="ops", instructions="You operate services.", tools=[tool], model=model)
    result = await Runner.run(agent, "please do it", run_config=RunConfig(tracing_disabled=True))
    return str(result.final_output)


def restart_tool(live, ran: list) -> FunctionTool:
    @jitgate_tool(client=live.client("reader-bot"), action="restart", target=lambda service, **_: f"prod/{service}",
                  justification="the service is stuck in an OOM loop", duration=120, wait=20)
    @function_tool
    async def restart_service(service: str, reason: str) -> str:
        """Restart a production service."""
        token = current_token()
        ran.append(token)
        return f"restarted {service} under {token.request_id}"
    return restart_service


async def test_an_auto_granted_call_runs_with_the_token_and_the_call_arguments_in_the_proposal(live):
    """A call the policy grants at once runs in the SDK's run with the grant's token; the proposal carries the
    tool name and the call's arguments (nulls left out), and the grant is completed when the tool returns."""
    tokens = []

    @function_tool
    def read_config(service: str, limit: int | None) -> str:
        """Read a staging service's configuration (a sync tool: the SDK runs it in a thread)."""
        tokens.append(current_token())
        return f"config of {service}"

    gated = jitgate_tool(read_config, client=live.client("reader-bot"), action="read",
                         target=lambda service, **_: f"staging/{service}")
    assert gated.name == "read_config" and gated.params_json_schema == read_config.params_json_schema
    model = OneToolCall("read_config", {"service": "payments-api", "limit": None})
    assert await run_agent(gated, model) == "the tool said: config of payments-api"
    assert len(tokens) == 1
    req = await live.broker.lifecycle.get(tokens[0].request_id)
    assert req.status == "completed" and req.decision["outcome"] == "auto_grant"
    assert req.proposal.tool == "read_config" and req.proposal.arguments == {"service": "payments-api"}
    assert req.proposal.justification.startswith("tool read_config(")


async def test_a_call_that_needs_approval_waits_runs_once_approved_and_completes(live):
    """Issue 20 item 3: a call that needs a person is held until approved, then runs with that grant's token."""
    ran: list = []
    model = OneToolCall("restart_service", {"service": "payments-api", "reason": "OOM loop"})
    run = asyncio.create_task(run_agent(restart_tool(live, ran), model))
    rid = await live.pending()
    assert not ran
    req = await live.broker.lifecycle.get(rid)
    assert req.proposal.action == "restart" and req.proposal.target == "prod/payments-api"
    assert req.proposal.arguments == {"service": "payments-api", "reason": "OOM loop"}
    await live.approve(rid)
    assert await asyncio.wait_for(run, 20) == f"the tool said: restarted payments-api under {rid}"
    assert [t.request_id for t in ran] == [rid] and ran[0].access_token
    assert (await live.broker.lifecycle.get(rid)).status == "completed"


async def test_a_denied_call_gives_the_model_the_reason_and_the_run_goes_on(live):
    """Issue 20 item 3: a denial is the tool's output (the approver's reason, the request id), not an exception
    that ends the run; the tool body never runs."""
    ran: list = []
    model = OneToolCall("restart_service", {"service": "payments-api", "reason": "OOM loop"})
    run = asyncio.create_task(run_agent(restart_tool(live, ran), model))
    rid = await live.pending()
    await live.deny(rid, "change freeze until Monday")
    final = await asyncio.wait_for(run, 20)
    assert not ran
    seen = json.loads(final.removeprefix("the tool said: "))
    assert seen["approved"] is False and seen["status"] == "denied" and seen["request_id"] == rid
    assert seen["reason"] == "change freeze until Monday" and "denied by bob" in seen["message"]


async def test_a_call_nobody_decides_in_time_is_withdrawn_and_reported(live):
    """No decision within `wait`: the model reads a timed_out refusal and the request is withdrawn."""
    @function_tool
    async def restart_service(service: str) -> str:
        """Restart a production service."""
        raise AssertionError("must not run")

    gated = jitgate_tool(restart_service, client=live.client("reader-bot"), action="restart",
                         target=lambda service: f"prod/{service}", wait=0.3)
    final = await run_agent(gated, OneToolCall("restart_service", {"service": "payments-api"}))
    seen = json.loads(final.removeprefix("the tool said: "))
    assert seen["status"] == "timed_out"
    assert (await live.broker.lifecycle.get(seen["request_id"])).status == "cancelled"


def test_only_function_tools_are_gated_and_the_token_exists_only_inside_a_gated_call():
    """jitgate_tool refuses a plain function; current_token() outside a gated call raises."""
    with pytest.raises(TypeError, match="apply @function_tool first"):
        jitgate_tool(lambda: None, client=lambda: None, action="read", target="staging/x")
    with pytest.raises(LookupError):
        current_token()


async def test_arguments_the_broker_refuses_are_a_tool_output_the_model_can_act_on(live):
    """A call whose arguments exceed the broker's bound (2048 bytes) is refused before any request exists; the
    model reads an `invalid` refusal with the broker's words, and the body never runs."""
    @function_tool
    def read_config(service: str, note: str) -> str:
        """Read a staging service's configuration."""
        raise AssertionError("must not run")

    gated = jitgate_tool(read_config, client=live.client("reader-bot"), action="read",
                         target=lambda service, **_: f"staging/{service}")
    final = await run_agent(gated, OneToolCall("read_config", {"service": "payments-api", "note": "x" * 3000}))
    seen = json.loads(final.removeprefix("the tool said: "))
    assert seen["status"] == "invalid" and "at most 2048 are accepted" in seen["reason"] and seen["request_id"] is None
    assert await live.request_ids() == []


async def test_a_tool_that_fails_still_ends_its_grant_and_the_sdk_reports_the_error(live):
    """The tool's own exception goes to the SDK's failure handling (the model reads the error) and the grant it
    ran under is completed all the same."""
    seen = []

    @function_tool
    def read_config(service: str) -> str:
        """Read a staging service's configuration."""
        seen.append(current_token().request_id)
        raise RuntimeError("config service unreachable")

    gated = jitgate_tool(read_config, client=live.client("reader-bot"), action="read",
                         target=lambda service: f"staging/{service}")
    final = await run_agent(gated, OneToolCall("read_config", {"service": "payments-api"}))
    assert final.startswith("the tool said: An error occurred while running the tool")  # the SDK's own wording
    assert (await live.broker.lifecycle.get(seen[0])).status == "completed"
