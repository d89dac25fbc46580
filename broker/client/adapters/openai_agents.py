"""The OpenAI Agents SDK (``openai-agents``): a function tool that runs only under a jitgate grant.

    from agents import Agent, function_tool
    from broker.client.adapters.openai_agents import current_token, jitgate_tool

    @jitgate_tool(client=client, action="restart", target=lambda service, **_: f"prod/{service}")
    @function_tool
    async def restart_service(service: str) -> str:
        '''Restart a production service.'''
        token = current_token()   # the grant's token, for the call to the target system
        ...

The SDK runs the model's tool call through the tool's ``on_invoke_tool``; the wrapped tool
keeps its name, description and parameter schema and, before the original body runs, turns
the call into a proposal (``tool`` = the tool's name, ``arguments`` = the call's arguments),
waits for the decision (at most ``wait`` seconds; withdrawn on timeout), runs the body with
the token, and reports completion. A denial, an expiry or no decision in time is returned to
the model as the tool's output (the :class:`~broker.client.Refusal` as JSON, whose
``message`` says what happened), and the run goes on; so is a proposal the broker refuses as
malformed (arguments over 2048 bytes, a target over 200 characters: ``status``
``invalid``). A broker or network failure raises (the run stops; nothing ran). Arguments
that are not a JSON object never reach the body.

Why not the SDK's own ``needs_approval``: it interrupts the run for the application to
resume later, and it cannot hand the tool a credential. Here the wait happens inside the
tool call, so the token reaches the body and the grant ends when the body does. A
``timeout=`` given to ``function_tool`` counts the approval wait too: leave it unset or
longer than ``wait``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..client import Client
from ..decorator import Refusal, ToolGate
from ..models import Escalation
from ..sync import SyncClient
from . import call_arguments, current_token, token_set

if TYPE_CHECKING:
    from agents import FunctionTool

_CALL = object()  # "the call's own arguments"


def jitgate_tool(
    tool: "FunctionTool | None" = None,
    *,
    client: Client | SyncClient | Callable[[], Client | SyncClient],
    action: str,
    target: str | Callable[..., str],
    justification: str | Callable[..., str] | None = None,
    evidence: Any = None,
    duration: int | Callable[..., int] = 300,
    wait: float = 600,
    arguments: Any = _CALL,
    on_update: Callable[[Escalation], Any] | None = None,
    **more: Any,
) -> Any:
    """Gate a ``FunctionTool`` (made by ``@function_tool``) behind a jitgate grant.

    Use as ``jitgate_tool(tool, client=..., action=..., target=...)`` or as a decorator
    above ``@function_tool``. ``target``, ``justification``, ``evidence``, ``duration`` and
    the other proposal fields (``confidence``, ``dataset``, ``ticket``, ``delegation``,
    ``tool``, ``arguments``) are values or callables of the tool call's arguments (keyword
    arguments, as the model sent them). ``arguments`` defaults to the call's arguments
    (without nulls), ``tool`` to the tool's name; ``on_update`` sees the request's changes
    while the call waits. Returns a new ``FunctionTool``; the
    original is left as it was."""
    if tool is None:
        return lambda t: jitgate_tool(t, client=client, action=action, target=target, justification=justification,
                                      evidence=evidence, duration=duration, wait=wait, arguments=arguments,
                                      on_update=on_update, **more)
    from agents import FunctionTool  # noqa: PLC0415 - the SDK is optional: imported when a tool is gated

    if not isinstance(tool, FunctionTool):
        raise TypeError(f"jitgate_tool gates a FunctionTool (apply @function_tool first), not {type(tool).__name__}")
    more.setdefault("tool", tool.name)
    if arguments is _CALL:
        arguments = _arguments_of_call
    gate = ToolGate(client=client, action=action, target=target, justification=justification, evidence=evidence,
                    duration=duration, wait=wait, name=tool.name, arguments=arguments, on_update=on_update,
                    refuse_invalid=True, **more)
    invoke = tool.on_invoke_tool

    async def gated(ctx: Any, input: str) -> Any:
        try:
            kwargs = json.loads(input) if input else {}
        except ValueError:
            kwargs = None
        if not isinstance(kwargs, dict):
            return f"Not performed: the arguments for {tool.name} must be a JSON object."

        async def body(token: Any) -> Any:
            with token_set(token):
                return await invoke(ctx, input)

        result = await gate.run((), kwargs, body)
        return json.dumps(result) if isinstance(result, Refusal) else result

    wrapped = copy.copy(tool)
    wrapped.on_invoke_tool = gated
    return wrapped


def _arguments_of_call(**kwargs: Any) -> dict[str, Any]:
    return call_arguments(kwargs)


__all__ = ["current_token", "jitgate_tool"]
