"""LangGraph: tool calls of a ``ToolNode`` run only under a jitgate grant.

    from langgraph.prebuilt import ToolNode
    from broker.client.adapters.langgraph import current_token, jitgate_tool_calls

    gate = jitgate_tool_calls(client, {
        "restart_service": {"action": "restart", "target": lambda service, **_: f"prod/{service}"},
    }, ungated=["read_status"])
    tools = ToolNode([restart_service, read_status], wrap_tool_call=gate.wrap, awrap_tool_call=gate.awrap)

``ToolNode`` hands every tool call the model made to the wrapper before it runs the tool. For
a gated tool the wrapper turns the call into a proposal (``tool`` = the tool's name,
``arguments`` = the call's arguments), waits for the decision (at most ``wait`` seconds;
withdrawn on timeout), runs the tool with the token (:func:`current_token` inside it), and
reports completion. A no comes back into the graph's state as the call's ``ToolMessage``
(``status="error"``, the :class:`~broker.client.Refusal` as JSON in ``content`` and as a
dict in ``artifact``), so the model reads the reason and a conditional edge can route on it; so is a proposal
the broker refuses as malformed (``status`` ``invalid``).
A tool that is neither gated nor listed in ``ungated`` does not run (fail closed). A broker
or network failure raises (the node fails; nothing ran).

The wait happens inside the node, so no checkpointer is needed; a graph that must survive a
restart while a person decides should put the wait in its own node with a checkpointer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from ..client import Client
from ..decorator import Refusal, ToolGate
from ..sync import SyncClient
from . import call_arguments, current_token, token_set

ClientSpec = Client | SyncClient | Callable[[], Client | SyncClient]


def _arguments_of_call(**kwargs: Any) -> dict[str, Any]:
    return call_arguments(kwargs)


class JitgateToolCalls:
    """The ``wrap_tool_call`` / ``awrap_tool_call`` pair of a ``ToolNode`` (see the module).

    ``gates`` maps a tool name to its proposal: ``action``, ``target`` and optionally
    ``justification``, ``evidence``, ``duration``, ``wait`` and the other proposal fields,
    each a value or a callable of the call's arguments (keyword arguments). ``arguments``
    defaults to the call's arguments (without nulls), ``tool`` to the tool's name;
    ``on_update`` (a callable of the request) sees its changes while the call waits.
    ``ungated`` names tools that run without a grant (read-only ones)."""

    def __init__(self, client: ClientSpec, gates: Mapping[str, Mapping[str, Any]], *, ungated: Iterable[str] = ()) -> None:
        self.ungated = frozenset(ungated)
        both = self.ungated & set(gates)
        if both:
            raise ValueError(f"tools both gated and ungated: {', '.join(sorted(both))}")
        self._gates: dict[str, ToolGate] = {}
        # A shared factory result: sync and async calls use the same client.
        shared: dict[str, Any] = {}

        def the_client() -> Client | SyncClient:
            if "c" not in shared:
                shared["c"] = client() if callable(client) and not isinstance(client, (Client, SyncClient)) else client
            return shared["c"]

        for name, spec in gates.items():
            spec = {"tool": name, "arguments": _arguments_of_call, **spec}
            if "action" not in spec or "target" not in spec:
                raise ValueError(f"the gate of {name!r} needs an action and a target")
            self._gates[name] = ToolGate(client=the_client, name=name, refuse_invalid=True, **spec)

    def _decide(self, request: Any) -> tuple[ToolGate | None, dict, Any]:
        """(gate, arguments, refusal message) for a request: no gate means run it as is."""
        call = request.tool_call
        name = call.get("name")
        if name in self.ungated:
            return None, {}, None
        gate = self._gates.get(name)
        if gate is None:
            return None, {}, self._message(call, f"Not performed: {name!r} is not a tool jitgate may let run.", None)
        args = call.get("args")
        if not isinstance(args, dict):
            return None, {}, self._message(call, f"Not performed: the arguments for {name!r} must be a JSON object.", None)
        return gate, args, None

    @staticmethod
    def _message(call: Mapping[str, Any], content: str, refusal: Refusal | None) -> Any:
        from langchain_core.messages import ToolMessage  # noqa: PLC0415 - LangGraph is optional: imported when a call is refused

        return ToolMessage(content=content, name=call.get("name"), tool_call_id=call.get("id") or "", status="error",
                           artifact=dict(refusal) if refusal is not None else None)

    def _refused(self, request: Any, result: Any) -> Any:
        if isinstance(result, Refusal):
            return self._message(request.tool_call, json.dumps(result), result)
        return result

    async def awrap(self, request: Any, execute: Callable[[Any], Awaitable[Any]]) -> Any:
        """``awrap_tool_call``: the call runs under a grant, or the refusal is its ``ToolMessage``."""
        gate, args, refused = self._decide(request)
        if refused is not None:
            return refused
        if gate is None:
            return await execute(request)

        async def body(token: Any) -> Any:
            with token_set(token):
                return await execute(request)

        return self._refused(request, await gate.run((), args, body))

    def wrap(self, request: Any, execute: Callable[[Any], Any]) -> Any:
        """``wrap_tool_call`` (a graph run with ``invoke``): as :meth:`awrap`, blocking."""
        gate, args, refused = self._decide(request)
        if refused is not None:
            return refused
        if gate is None:
            return execute(request)

        def body(token: Any) -> Any:
            with token_set(token):
                return execute(request)

        return self._refused(request, gate.run_sync((), args, body))


def jitgate_tool_calls(client: ClientSpec, gates: Mapping[str, Mapping[str, Any]], *,
                       ungated: Iterable[str] = ()) -> JitgateToolCalls:
    """The wrapper pair for ``ToolNode(tools, wrap_tool_call=g.wrap, awrap_tool_call=g.awrap)``."""
    return JitgateToolCalls(client, gates, ungated=ungated)


def jitgate_tool_node(tools: Iterable[Any], client: ClientSpec, gates: Mapping[str, Mapping[str, Any]], *,
                      ungated: Iterable[str] = (), **tool_node_options: Any) -> Any:
    """A ``ToolNode`` over ``tools`` whose calls go through :func:`jitgate_tool_calls`."""
    from langgraph.prebuilt import ToolNode  # noqa: PLC0415 - LangGraph is optional: imported when a node is built

    gate = jitgate_tool_calls(client, gates, ungated=ungated)
    return ToolNode(list(tools), wrap_tool_call=gate.wrap, awrap_tool_call=gate.awrap, **tool_node_options)


def refusal_of(message: Any) -> Refusal | None:
    """The :class:`~broker.client.Refusal` a ``ToolMessage`` of this adapter carries, else None
    (for a conditional edge: ``lambda state: "report" if refusal_of(state["messages"][-1]) else "agent"``)."""
    artifact = getattr(message, "artifact", None)
    if isinstance(artifact, dict) and artifact.get("approved") is False and "message" in artifact:
        return Refusal(artifact)
    return None


__all__ = ["JitgateToolCalls", "current_token", "jitgate_tool_calls", "jitgate_tool_node", "refusal_of"]
