"""Waiting for people while an MCP call is held open: long polls with progress notifications."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ..client import Client, Escalation, TimedOut

# How often a waiting call reports progress even when nothing changed, so that clients whose
# timeout resets on progress keep the call open.
HEARTBEAT_S = 10.0

Report = Callable[[float, float | None, str | None], Awaitable[None]]


async def wait_with_progress(client: Client, esc: Escalation, wait_s: float, report: Report | None,
                             heartbeat_s: float = HEARTBEAT_S) -> Escalation:
    """Long-poll ``esc`` until it is decided or ``wait_s`` seconds passed (then it is returned as it
    is, still pending), reporting progress - approvals so far of those required, and the summary
    ("pending: 1/2 approvals from sre") - on every change and at least every ``heartbeat_s``."""
    deadline = time.monotonic() + max(0.0, wait_s)
    sent: list[asyncio.Task] = []

    def changed(now: Escalation) -> None:  # the client's long poll saw a change (an approval, say)
        if now.status == "pending" and report is not None:
            sent.append(asyncio.ensure_future(_progress(report, now)))

    try:
        while esc.status == "pending":
            await _progress(report, esc)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                esc = await client.wait(esc.id, timeout=min(left, heartbeat_s), current=esc, on_update=changed)
            except TimedOut:
                esc = await client.status(esc.id)
    finally:
        await asyncio.gather(*sent, return_exceptions=True)
    await _progress(report, esc)
    return esc


async def _progress(report: Report | None, esc: Escalation) -> None:
    if report is None:
        return
    need = esc.approvals_required
    await report(float(len(esc.approvals)), float(need) if need else None, esc.summary())
