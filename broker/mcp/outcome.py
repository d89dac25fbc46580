"""Reporting a grant's end with what came of it.

The completion outcome (``{"status": "success"|"failure", "summary", "evidence": [urls]}``, sent as
``{"outcome": {...}}`` to ``POST /v1/escalations/{id}/complete``) is being added to the client in
parallel work. Until :meth:`broker.client.Client.complete` takes ``outcome=``, the grant is completed
without it; once it does, the outcome goes with it - nothing here needs to change.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..client import Client, Escalation

MAX_SUMMARY = 500
MAX_EVIDENCE = 20


def make_outcome(status: str, summary: str = "", evidence: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The outcome object: ``status`` is ``success`` or ``failure``; the summary is cut to 500
    characters and the evidence (URLs) to 20 entries."""
    if status not in ("success", "failure"):
        raise ValueError("an outcome's status is 'success' or 'failure'")
    return {"status": status, "summary": summary[:MAX_SUMMARY], "evidence": [str(u) for u in evidence][:MAX_EVIDENCE]}


def takes_outcome(client: Client) -> bool:
    """Whether this client's ``complete`` accepts ``outcome=`` (the outcome contract is merged)."""
    try:
        return "outcome" in inspect.signature(client.complete).parameters
    except (TypeError, ValueError):
        return False


async def complete(client: Client, request_id: str, outcome: dict[str, Any] | None) -> Escalation:
    """Complete the grant, with its outcome when the client can send one."""
    if outcome is not None and takes_outcome(client):
        # The lead wires this at merge: Client.complete(grant, outcome={...}) POSTs {"outcome": {...}}.
        return await client.complete(request_id, outcome=outcome)  # type: ignore[call-arg,unused-ignore]
    return await client.complete(request_id)
