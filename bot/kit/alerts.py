"""The break-glass security alert, for every desk: one alert per grant, kept true in place,
with the suspension, the review reminders, a reinstatement and the grant's changes said in
its thread.

What to do for each notice, and what is said only once however often the outbox delivers
it, is decided here; a desk implements :class:`AlertDesk` (where its alert is, how it is
posted, re-rendered and replied to) and keeps its wording. The core's notice says what
happened (``notice.kind``), whom to mention (``notice.audience``) and whether this grant
suspended its engineer (``notice.suspended``).
"""

from __future__ import annotations

import enum
from typing import Any, Awaitable, Callable, Protocol

from broker.model import Request
from broker.notify import Audience, Kind, Notice


class Tone(enum.Enum):
    """What a line in the alert's thread is: each desk words (and mentions) it its way."""

    SUSPENDED = "suspended"  # the engineer's right is suspended (mention security, loudly)
    REMINDER = "reminder"    # a review reminder or a reinstatement (mention security)
    EVENT = "event"          # the grant was collected, revoked or ended (no mention)


class AlertDesk(Protocol):
    async def alert_ref(self, request_id: str) -> Any:
        """Where this grant's alert is; None before it was posted."""

    async def alert_post(self, req: Request, suspended: bool) -> Any:
        """Post the alert, remember where, and return that."""

    async def alert_edit(self, req: Request, ref: Any, suspended: bool | None) -> None:
        """Re-render the alert (``suspended`` None: ask the core)."""

    async def alert_say(self, ref: Any, text: str, audience: Audience | None, tone: Tone) -> None:
        """A line in the alert's thread."""

    async def alert_once(self, req: Request, marker: str, send: Callable[[], Awaitable[object]]) -> None:
        """Call ``send()`` unless ``marker`` says it was done for this grant (``bot.kit.once``)."""


async def alert(desk: AlertDesk, notice: Notice) -> None:
    """``alert_security`` for a break-glass grant: no alert yet → post it, else re-render it;
    reviewed → the edit is the news; suspended by this grant → say so once; a review reminder
    or a reinstatement → a line (a repeated delivery of the grant re-renders only)."""
    req = notice.request
    ref = await desk.alert_ref(req.id)
    if ref is None:
        ref = await desk.alert_post(req, notice.suspended)
    else:
        await desk.alert_edit(req, ref, notice.suspended)
    if notice.kind is Kind.KILL_SWITCH:  # the kill switch's one message fell on this grant: say it once
        await desk.alert_once(req, "killswitch", lambda: desk.alert_say(ref, notice.text, notice.audience,
                                                                         Tone.REMINDER))
        return
    if req.reviewed_by:
        return
    if notice.suspended:
        await desk.alert_once(req, "suspended", lambda: desk.alert_say(ref, notice.text, notice.audience,
                                                                        Tone.SUSPENDED))
    elif notice.kind in (Kind.BG_REVIEW_REMINDER, Kind.BG_REINSTATED):
        await desk.alert_say(ref, notice.text, notice.audience, Tone.REMINDER)


async def changed(desk: AlertDesk, req: Request, event: str, line: str | None) -> None:
    """A change of the grant (collected, revoked, ended): re-render the alert and say ``line``
    in its thread once (nothing before the alert is out: it shows the state when it is)."""
    ref = await desk.alert_ref(req.id)
    if ref is None:
        return
    await desk.alert_edit(req, ref, None)
    if line:
        await desk.alert_once(req, f"event:{event}", lambda: desk.alert_say(ref, line, None, Tone.EVENT))
