"""Agent-framework adapters: a framework's tool call becomes a jitgate grant.

- :mod:`broker.client.adapters.openai_agents` - the OpenAI Agents SDK (``pip install 'jitgate-client[openai-agents]'``)
- :mod:`broker.client.adapters.langgraph` - LangGraph's ``ToolNode`` (``pip install 'jitgate-client[langgraph]'``)

Each wraps :class:`~broker.client.decorator.ToolGate` (the logic of ``@requires_approval``):
the call's arguments go into the proposal's ``arguments`` (what Cedar decides on and approvers
see), the wait is bounded, the tool runs with the grant's token - read it with
:func:`current_token` inside the tool - completion is reported when the tool returns or raises,
and a no comes back to the model as the tool's output, not as an exception. This module
imports no framework; each adapter imports its own when it is imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from ..models import Token

_TOKEN: ContextVar[Token | None] = ContextVar("jitgate_token", default=None)


def current_token() -> Token:
    """The token of the grant the running tool call was approved under. It is set for the
    tool's body (also in a worker thread the framework runs a sync tool in) and for nothing
    else; outside a gated call it raises :class:`LookupError`."""
    token = _TOKEN.get()
    if token is None:
        raise LookupError("no jitgate grant here: current_token() works inside a tool call a jitgate adapter gated")
    return token


@contextlib.contextmanager
def token_set(token: Token) -> Iterator[Token]:
    """Make ``token`` the :func:`current_token` for the block (for the adapters)."""
    reset = _TOKEN.set(token)
    try:
        yield token
    finally:
        _TOKEN.reset(reset)


def call_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A tool call's arguments as a proposal's ``arguments``: the same JSON object without
    ``null`` values (policies have no null; an absent key is how Cedar says "not given").
    Bounds (2048 bytes, 4 levels) are the broker's: a larger call is refused, never cut."""
    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value if v is not None]
        return value
    return clean(arguments)


__all__ = ["call_arguments", "current_token", "token_set"]
