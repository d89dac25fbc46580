"""Reporting a grant's end with what came of it.

The completion outcome (``{"status": "success"|"failure", "summary", "evidence": [https URLs]}``,
sent by :meth:`broker.client.Client.complete` as ``{"outcome": {...}}`` to
``POST /v1/escalations/{id}/complete``). The broker's bounds (``broker.model.parse_outcome``): a
summary of at most 500 characters without control characters but newlines and tabs, at most 10
evidence links, each ``https://`` and at most 2048 characters; an upstream's answer quoted in
the summary is made to fit them here, so the broker never refuses it.
"""

from __future__ import annotations

import re
from typing import Any

from ..client import Client, Escalation, InvalidRequest

MAX_SUMMARY = 500
MAX_EVIDENCE = 10
MAX_URL = 2048
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def make_outcome(status: str, summary: str = "", evidence: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The outcome object. ``status`` is ``success`` or ``failure`` and each evidence link an
    ``https://`` URL (ValueError otherwise, and for more than 10 links); the summary is cut to 500
    characters, control characters replaced by spaces (it may quote an upstream's answer)."""
    if status not in ("success", "failure"):
        raise ValueError("an outcome's status is 'success' or 'failure'")
    links = [str(u) for u in evidence]
    if len(links) > MAX_EVIDENCE:
        raise ValueError(f"at most {MAX_EVIDENCE} evidence links")
    bad = [u for u in links if not u.startswith("https://") or len(u) > MAX_URL or any(c.isspace() for c in u)]
    if bad:
        raise ValueError(f"evidence links must be https:// URLs of at most {MAX_URL} characters: {bad[0][:80]!r}")
    out: dict[str, Any] = {"status": status}
    text = _CONTROL.sub(" ", summary).strip()[:MAX_SUMMARY]
    if text:
        out["summary"] = text
    if links:
        out["evidence"] = links
    return out


async def complete(client: Client, request_id: str, outcome: dict[str, Any] | None) -> Escalation:
    """Complete the grant with its outcome. Should the broker refuse the outcome (a newer broker
    with tighter bounds), the grant is completed without it: ending the grant matters more than
    the record."""
    if outcome is not None:
        try:
            return await client.complete(request_id, outcome=outcome)
        except InvalidRequest:
            pass
    return await client.complete(request_id)
