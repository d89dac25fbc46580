"""An OpenAI Agents SDK agent whose tools run only under jitgate grants.

Two tools: `read_config` (a read on staging: the example policies grant it at once) and
`kubectl` (a restart of prod/payments-api: one SRE must approve, and policies/payments.cedar
allows only `kubectl rollout restart`, decided on the call's own arguments). The SDK's
runner executes the model's tool calls; jitgate_tool turns each into a proposal, waits for
the decision, runs the tool with the grant's token and gives the grant back. A denial is
what the model reads as the tool's output.

By default a scripted stand-in plays the model (no API key, no network but the broker); with
`--openai-model gpt-4.1` and OPENAI_API_KEY set, a real model decides which tools to call.
With `make run` going, from the repository root:

    .venv/bin/pip install 'openai-agents>=0.20'      # or: pip install 'jitgate-client[openai-agents]'
    .venv/bin/python examples/openai_agents_agent.py

and approve (or deny) the restart in another terminal with the command it prints:

    .venv/bin/jitgate requests approve <id> --as alice      # or: deny <id> --as bob --reason "..."
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from agents import Agent, RunConfig, Runner, function_tool
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from broker.client import Client, Escalation, Evidence
from broker.client.adapters.openai_agents import current_token, jitgate_tool


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


def tools(client: Client, wait: float) -> list:
    @function_tool
    def read_config(service: str) -> str:
        """Read a staging service's configuration."""
        token = current_token()  # a real tool would send token.headers("GET", url) to the config service
        return f"{service}: memory limit 512Mi (read under {token.request_id})"

    @function_tool
    async def kubectl(subcommand: str, namespace: str, why: str) -> str:
        """Run a kubectl subcommand against prod/payments-api, e.g. "rollout restart" in namespace "payments".
        `why` is the justification the approvers read."""
        token = current_token()  # the grant's token: DPoP-bound, for the cluster's admission webhook
        await asyncio.sleep(0.2)  # a real tool would call the platform with token.headers("POST", url)
        return f"kubectl {subcommand} -n {namespace}: done (grant {token.request_id}, {token.expires_in} s)"

    return [
        # The staging read: no arguments for policy (arguments=None), auto-granted by staging-read.
        jitgate_tool(read_config, client=client, action="read", target=lambda service: f"staging/{service}",
                     arguments=None, duration=60, wait=wait),
        # The restart: the call's subcommand and namespace go to Cedar (`why` is for people, not policy).
        jitgate_tool(kubectl, client=client, action="restart", target="prod/payments-api",
                     justification=lambda why, **_: why,
                     arguments=lambda subcommand, namespace, **_: {"subcommand": subcommand, "namespace": namespace},
                     evidence=EVIDENCE, duration=300, confidence=0.85, wait=wait, on_update=announce),
    ]


class ScriptedModel(Model):
    """Stands in for an LLM: it asks for the staging read, then the restart, then reports
    what the tools answered (the SDK runs the tools in between, exactly as for a real model)."""

    CALLS = [
        ("read_config", {"service": "payments-api"}),
        ("kubectl", {"subcommand": "rollout restart", "namespace": "payments",
                     "why": "payments-api is in an OOM crash loop since 10:02; the new memory limit needs a restart"}),
    ]

    def __init__(self) -> None:
        self.turn = 0

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
                           *args, **kwargs) -> ModelResponse:
        self.turn += 1
        if self.turn <= len(self.CALLS):
            name, arguments = self.CALLS[self.turn - 1]
            call = ResponseFunctionToolCall(id=f"fc_{self.turn}", call_id=f"call_{self.turn}", type="function_call",
                                            name=name, arguments=json.dumps(arguments), status="completed")
            return ModelResponse(output=[call], usage=Usage(), response_id=None)
        answers = [item["output"] for item in input if isinstance(item, dict) and item.get("type") == "function_call_output"]
        text = ResponseOutputText(type="output_text", annotations=[], text="\n".join(f"- {a}" for a in answers))
        message = ResponseOutputMessage(id="msg_1", type="message", role="assistant", status="completed", content=[text])
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError("the example runs without streaming")


async def main(url: str, key: str, wait: float, openai_model: str | None) -> int:
    async with Client(url, "demo-agent", key) as client:
        agent = Agent(
            name="payments-operator",
            instructions="You keep payments-api healthy. Read its staging configuration, then restart it in prod "
                         "with `kubectl rollout restart` in namespace payments. If a tool says the action was not "
                         "approved, do not retry: report the reason.",
            tools=tools(client, wait),
            model=openai_model or ScriptedModel(),
        )
        # Tracing would upload to OpenAI: off unless a real model is used.
        result = await Runner.run(agent, "payments-api keeps crashing; fix it.",
                                  run_config=RunConfig(tracing_disabled=openai_model is None))
        print("the agent's answer:")
        print(result.final_output)
        return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("JITGATE_URL", "http://127.0.0.1:8080"))
    p.add_argument("--key", default=".jitgate/demo-agent.pem")
    p.add_argument("--wait", type=float, default=900, help="seconds a tool call waits for a person (default 900)")
    p.add_argument("--openai-model", help="a real model (needs OPENAI_API_KEY); default: the scripted stand-in")
    args = p.parse_args()
    sys.exit(asyncio.run(main(args.url, args.key, args.wait, args.openai_model)))
