"""Issue 20, item 3: the LangGraph adapter. A real ``StateGraph`` runs LangGraph's ``ToolNode``
(its tool-execution path) with the adapter's wrappers; the "model" is a plain node that emits a
fixed tool call and then echoes what the tool answered. Live broker, loopback only, no model."""

from __future__ import annotations

import asyncio
import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition

from broker.client.adapters.langgraph import current_token, jitgate_tool_node, refusal_of

RAN: list = []


@tool
async def restart_service(service: str, reason: str) -> str:
    """Restart a production service."""
    token = current_token()
    RAN.append(token)
    return f"restarted {service} under {token.request_id}"


@tool
def read_config(service: str) -> str:
    """Read a staging service's configuration (sync: LangChain runs it in a thread)."""
    RAN.append(current_token())
    return f"config of {service}"


@tool
def read_status(service: str) -> str:
    """Read a service's status (read-only: ungated)."""
    return f"{service} is up"


@tool
def drop_database(name: str) -> str:
    """Not in the gates: must never run."""
    raise AssertionError("must not run")


def graph(live, *calls: tuple[str, dict]):
    """agent -> tools -> agent: the agent node asks for ``calls`` once, then says what the tools answered."""
    def agent(state: MessagesState) -> dict:
        answers = [m for m in state["messages"] if isinstance(m, ToolMessage)]
        if answers:
            return {"messages": [AIMessage(content=" | ".join(str(m.content) for m in answers))]}
        return {"messages": [AIMessage(content="", tool_calls=[
            {"name": name, "args": args, "id": f"call_{i}", "type": "tool_call"} for i, (name, args) in enumerate(calls)])]}

    gates = {
        "restart_service": {"action": "restart", "target": lambda service, **_: f"prod/{service}",
                            "justification": "OOM loop", "duration": 120, "wait": 20},
        "read_config": {"action": "read", "target": lambda service: f"staging/{service}"},
    }
    tools = jitgate_tool_node([restart_service, read_config, read_status, drop_database], live.client("reader-bot"),
                              gates, ungated=["read_status"])
    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", tools)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "agent")
    return g.compile()


def start(app, sync: bool = False):
    state = {"messages": [HumanMessage(content="do it")]}
    if sync:  # graph.invoke: the ToolNode calls the sync wrapper
        return asyncio.create_task(asyncio.to_thread(app.invoke, state))
    return asyncio.create_task(app.ainvoke(state))


@pytest.mark.parametrize("sync", [False, True], ids=["ainvoke", "invoke"])
async def test_an_auto_granted_call_and_an_ungated_call_run_with_the_call_arguments_in_the_proposal(live, sync):
    """A call the policy grants at once runs with its token (a sync tool in LangChain's thread sees it too, through
    ainvoke and through invoke); the proposal names the tool and carries the call's arguments; an ungated read-only
    tool runs without a proposal."""
    RAN.clear()
    app = graph(live, ("read_config", {"service": "payments-api"}), ("read_status", {"service": "db"}))
    state = await start(app, sync=sync)
    assert state["messages"][-1].content == "config of payments-api | db is up"
    assert len(RAN) == 1 and await live.request_ids() == [RAN[0].request_id]
    req = await live.broker.lifecycle.get(RAN[0].request_id)
    assert req.status == "completed" and req.proposal.tool == "read_config"
    assert req.proposal.arguments == {"service": "payments-api"}


async def test_a_call_that_needs_approval_waits_runs_once_approved_and_completes(live):
    """Issue 20 item 3: the ToolNode holds the call until a person approves, then runs it with that grant's token."""
    RAN.clear()
    run = start(graph(live, ("restart_service", {"service": "payments-api", "reason": "OOM"})))
    rid = await live.pending()
    assert not RAN
    assert (await live.broker.lifecycle.get(rid)).proposal.arguments == {"service": "payments-api", "reason": "OOM"}
    await live.approve(rid)
    state = await asyncio.wait_for(run, 20)
    assert state["messages"][-1].content == f"restarted payments-api under {rid}"
    assert [t.request_id for t in RAN] == [rid]
    assert (await live.broker.lifecycle.get(rid)).status == "completed"


async def test_a_denied_call_puts_the_reason_into_the_graph_state(live):
    """Issue 20 item 3: a denial is the call's ToolMessage (status error, the refusal as content and artifact),
    which the model node reads; the tool never runs. Through graph.invoke, so the sync wrapper is the one used."""
    RAN.clear()
    run = start(graph(live, ("restart_service", {"service": "payments-api", "reason": "OOM"})), sync=True)
    rid = await live.pending()
    await live.deny(rid, "change freeze until Monday")
    state = await asyncio.wait_for(run, 20)
    assert not RAN
    answer = [m for m in state["messages"] if isinstance(m, ToolMessage)][0]
    refusal = refusal_of(answer)
    assert answer.status == "error" and refusal is not None
    assert refusal.status == "denied" and refusal.reason == "change freeze until Monday" and refusal["request_id"] == rid
    assert json.loads(state["messages"][-1].content)["message"] == refusal["message"]


async def test_a_tool_without_a_gate_does_not_run(live):
    """Fail closed: a tool neither gated nor ungated gets an error ToolMessage and no request is made."""
    state = await start(graph(live, ("drop_database", {"name": "payments"})))
    answer = [m for m in state["messages"] if isinstance(m, ToolMessage)][0]
    assert answer.status == "error" and "not a tool jitgate may let run" in answer.content
    assert refusal_of(answer) is None and await live.request_ids() == []


async def test_arguments_the_broker_refuses_come_back_as_an_invalid_refusal(live):
    """A call the broker refuses as malformed (here the target its arguments name is over 200 characters) is an
    `invalid` refusal in the state, with the broker's words; no request exists."""
    RAN.clear()
    state = await start(graph(live, ("read_config", {"service": "payments-api" * 200})))
    refusal = refusal_of([m for m in state["messages"] if isinstance(m, ToolMessage)][0])
    assert refusal is not None and refusal.status == "invalid" and refusal.reason == "'target' is longer than 200 characters"
    assert not RAN and await live.request_ids() == []


async def test_arguments_the_proposal_cannot_take_are_an_invalid_refusal(live):
    """A call without the argument the gate's target is computed from does not crash the node: the model reads an
    `invalid` refusal naming the problem, and no request is made."""
    state = await start(graph(live, ("read_config", {"name": "payments-api"})))
    refusal = refusal_of([m for m in state["messages"] if isinstance(m, ToolMessage)][0])
    assert refusal is not None and refusal.status == "invalid" and "do not fit the proposal" in refusal.reason
    assert await live.request_ids() == []
