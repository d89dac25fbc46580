"""A LangGraph agent whose tool calls run only under jitgate grants.

The graph is the usual agent loop: `agent` (the model) -> `tools` (LangGraph's ToolNode) ->
`agent`. The ToolNode comes from jitgate_tool_node: every tool call is gated by name.
`read_status` is read-only and ungated; `read_config` (a read on staging) is granted at once
by the example policies; `kubectl` (a restart of prod/payments-api) waits for one SRE, and
policies/payments.cedar allows it only as `kubectl rollout restart`, decided on the call's
own arguments. A denial comes back into the graph's state as the call's ToolMessage
(status "error"), which the model reads.

The `agent` node here is a scripted stand-in for a chat model (no API key, no network but
the broker): it asks for the three tools once, then reports what they answered. Replace it
with `ChatOpenAI(...).bind_tools(TOOLS)` or any chat model for a real agent.
With `make run` going, from the repository root:

    .venv/bin/pip install 'langgraph>=1.0'      # or: pip install 'jitgate-client[langgraph]'
    .venv/bin/python examples/langgraph_agent.py

and approve (or deny) the restart in another terminal with the command it prints:

    .venv/bin/jitgate requests approve <id> --as alice      # or: deny <id> --as bob --reason "..."
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition

from broker.client import Client, Escalation, Evidence
from broker.client.adapters.langgraph import current_token, jitgate_tool_node, refusal_of


@tool
def read_status(service: str) -> str:
    """Read a service's health (read-only: runs without a grant)."""
    return f"{service}: CrashLoopBackOff, 14 restarts"


@tool
def read_config(service: str) -> str:
    """Read a staging service's configuration."""
    token = current_token()  # a real tool would send token.headers("GET", url) to the config service
    return f"{service}: memory limit 512Mi (read under {token.request_id})"


@tool
async def kubectl(subcommand: str, namespace: str, why: str) -> str:
    """Run a kubectl subcommand against prod/payments-api; `why` is what the approvers read."""
    token = current_token()  # the grant's token: DPoP-bound, for the cluster's admission webhook
    await asyncio.sleep(0.2)  # a real tool would call the platform with token.headers("POST", url)
    return f"kubectl {subcommand} -n {namespace}: done (grant {token.request_id}, {token.expires_in} s)"


TOOLS = [read_status, read_config, kubectl]


# What approvers see beside the justification (prod/payments-api is a high-sensitivity target:
# policies/prod.cedar wants evidence for it).
EVIDENCE = [
    Evidence.log("pod events, last 10 minutes", "10:02:11 payments-api-7d9f pod OOMKilled (limit 512Mi)\n"
                 "10:09:55 payments-api-7d9f pod OOMKilled (limit 512Mi)"),
    Evidence.link("runbook", "payments-api: restart after OOM", "https://runbooks.example.com/payments-api/oom-restart"),
]


def announce(esc: Escalation) -> None:
    """Progress while a tool call waits: who must approve, and the command to do it."""
    if esc.status == "pending" and not esc.approvals:
        print(f"request {esc.id} is waiting for {esc.approvals_required} approval(s) from "
              f"'{esc.decision.get('approver_group')}'; approve it with:\n"
              f"    .venv/bin/jitgate requests approve {esc.id} --as alice", flush=True)


def gates(wait: float) -> dict:
    """Which tool calls need a grant, and the proposal each one makes (values or callables of the call's arguments)."""
    return {
        # Auto-granted by staging-read; no arguments for policy.
        "read_config": {"action": "read", "target": lambda service: f"staging/{service}", "arguments": None,
                        "duration": 60, "wait": wait},
        # The call's subcommand and namespace go to Cedar; `why` is the justification people read.
        "kubectl": {"action": "restart", "target": "prod/payments-api", "justification": lambda why, **_: why,
                    "arguments": lambda subcommand, namespace, **_: {"subcommand": subcommand, "namespace": namespace},
                    "evidence": EVIDENCE, "duration": 300, "confidence": 0.85, "wait": wait, "on_update": announce},
    }


def scripted_model(state: MessagesState) -> dict:
    """Stands in for a chat model: one turn of tool calls, then a summary of the answers."""
    answers = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    if not answers:
        calls = [
            ("read_status", {"service": "payments-api"}),
            ("read_config", {"service": "payments-api"}),
            ("kubectl", {"subcommand": "rollout restart", "namespace": "payments",
                         "why": "payments-api is in an OOM crash loop since 10:02; the new memory limit needs a restart"}),
        ]
        return {"messages": [AIMessage(content="", tool_calls=[
            {"name": name, "args": args, "id": f"call_{i}", "type": "tool_call"} for i, (name, args) in enumerate(calls)])]}
    lines = []
    for m in answers:
        refusal = refusal_of(m)  # the adapter's refusal, if the call was not approved
        lines.append(f"- {m.name}: " + (refusal["message"] if refusal else str(m.content)))
    return {"messages": [AIMessage(content="\n".join(lines))]}


def build(client: Client, wait: float):
    g = StateGraph(MessagesState)
    g.add_node("agent", scripted_model)
    g.add_node("tools", jitgate_tool_node(TOOLS, client, gates(wait), ungated=["read_status"]))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "agent")
    return g.compile()


async def main(url: str, key: str, wait: float) -> int:
    async with Client(url, "demo-agent", key) as client:
        state = await build(client, wait).ainvoke({"messages": [HumanMessage("payments-api keeps crashing; fix it.")]})
        print("the agent's answer:")
        print(state["messages"][-1].content)
        return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("JITGATE_URL", "http://127.0.0.1:8080"))
    p.add_argument("--key", default=".jitgate/demo-agent.pem")
    p.add_argument("--wait", type=float, default=900, help="seconds a tool call waits for a person (default 900)")
    args = p.parse_args()
    sys.exit(asyncio.run(main(args.url, args.key, args.wait)))
