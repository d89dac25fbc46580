"""Break-glass in the Teams security conversation: one alert card per grant, kept true in
place, with its reminders, suspension and the grant's changes as replies in its thread.

A break-glass grant has no proposal card; its home is this alert, whose conversation and
activity id are kept in a per-request Redis hash (with the sent-markers). The core's notice
says what happened (``notice.kind``), whom to mention (``notice.audience.security``) and
whether this grant suspended its engineer (``notice.suspended``, the core's answer, as on
Slack): no alert yet → post it; reviewed → edit it in place; suspended by this grant → the
suspension, in the card and in its thread (once); a review reminder or a reinstatement → a
line in its thread; a repeated delivery of the grant → re-render only. Every delivery is at
least once, so each thread reply that must not repeat is marked once sent.

``TEAMS_SECURITY_CONVERSATION`` is where the alert goes; when it is unset or not known to
the bot yet, the alert goes to the approvals conversation rather than nowhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.model import Request
from broker.notify import Notice

from bot import render
from bot.kit import alerts
from bot.kit.once import say_once

from . import bgcards, cards
from .outbound import card_activity

if TYPE_CHECKING:
    from .parts import Parts

log = logging.getLogger("jitgate.teams")

MARK_TTL_S = 31 * 86400  # longer than any review stays open (30 d at most)
MAX_MENTIONS = 20


@dataclass(frozen=True)
class AlertRef:
    """Where a grant's security alert is."""

    conversation: str
    activity_id: str
    service_url: str


class SecurityAlerts:
    """The security conversation's side of break-glass."""

    def __init__(self, parts: "Parts") -> None:
        self.parts = parts

    def _key(self, request_id: str) -> str:
        return f"{self.parts.settings.redis_prefix}teams:bg:{{req:{request_id}}}"

    async def ref(self, request_id: str) -> AlertRef | None:
        """The alert of this grant, if one was posted."""
        got = await self.parts.ctx.redis.hmget(self._key(request_id), "conversation", "activity", "service_url")
        if not all(got):
            return None
        return AlertRef(*(v.decode() for v in got))

    async def card(self, req: Request, *, notice: str | None = None) -> dict:
        """The alert as it should look now: suspended only when the core says this grant
        suspended its engineer (``BreakGlass.suspended_by``), as on every desk."""
        overdue, suspended = await self._review_state(req)
        return bgcards.security_card(req, overdue=overdue, suspended=suspended, notice=notice)

    # ------------------------------------------------------------------ bot.kit.alerts' AlertDesk
    async def alert(self, notice: Notice) -> None:
        """``alert_security`` for a break-glass grant (see the module docstring)."""
        await alerts.alert(self, notice)

    async def on_update(self, req: Request, event: str) -> None:
        """A change of the grant (collected, revoked, ended): edit the alert, say it in its thread once."""
        await alerts.changed(self, req, event, render.bg_event_sentence(req, event))

    alert_ref = ref

    async def alert_post(self, req: Request, suspended: bool) -> AlertRef:
        return await self._post(req)  # the card asks the core itself (it shows "overdue" too)

    async def alert_edit(self, req: Request, ref: AlertRef, suspended: bool | None) -> None:
        await self._edit(req, ref)

    async def alert_say(self, ref: AlertRef, text: str, audience, tone: alerts.Tone) -> None:
        await self._reply(ref, text, await self.parts.mentions(list(audience.security)) if audience else [])

    async def alert_once(self, req: Request, marker: str, send) -> None:
        await self.once(req, marker, send)

    async def once(self, req: Request, marker: str, send) -> None:
        """Call ``send()`` unless ``marker`` says it was already done for this grant."""
        await say_once(self.parts.ctx.redis, self._key(req.id), send, field="mark:" + marker, ttl_s=MARK_TTL_S)

    async def note(self, request_id: str, text: str) -> None:
        """A line in the alert's thread, and the alert re-rendered (best effort: a courtesy;
        the change itself is done and audited)."""
        try:
            ref = await self.ref(request_id)
            req = await self.parts.ctx.store.load(request_id)
            if ref is None or req is None:
                return
            await self._edit(req, ref)
            await self._reply(ref, text, [])
        except Exception as e:  # noqa: BLE001
            log.warning("Teams: could not add a note under the break-glass alert of %s (%s)", request_id,
                        e.__class__.__name__)

    # ------------------------------------------------------------------ pieces
    async def _post(self, req: Request) -> AlertRef:
        parts = self.parts
        where = parts.teams.security_conversation
        dest = await parts.conversations.resolve(where) if where else None
        if dest is None:
            dest = await parts.destination(req)
            log.warning("Teams: break-glass alert for %s goes to the approvals conversation: %s", req.id,
                        f"no conversation known for TEAMS_SECURITY_CONVERSATION={where!r}" if where
                        else "TEAMS_SECURITY_CONVERSATION is unset")
        if dest is None:
            raise RuntimeError("no Teams conversation is known for break-glass alerts yet")  # the outbox retries

        activity_id = await parts.outbound.post(dest.service_url, dest.id,
                                               card_activity(await self.card(req), bgcards.security_summary(req)))
        key = self._key(req.id)
        await parts.ctx.redis.hset(key, mapping={"conversation": dest.id, "activity": activity_id,
                                                   "service_url": dest.service_url})
        await parts.ctx.redis.expire(key, MARK_TTL_S)
        return AlertRef(dest.id, activity_id, dest.service_url)

    async def _edit(self, req: Request, ref: AlertRef) -> None:

        card = await self.card(req)
        await self.parts.outbound.update(ref.service_url, ref.conversation, ref.activity_id,
                                        card_activity(card, bgcards.security_summary(req)))

    async def _reply(self, ref: AlertRef, text: str, mentions: list[tuple[str, str]]) -> None:

        note = cards.notice_card(text, mentions=mentions[:MAX_MENTIONS])
        await self.parts.outbound.reply(ref.service_url, ref.conversation, ref.activity_id,
                                       card_activity(note, cards.plain(text, 200)))

    async def _review_state(self, req: Request) -> tuple[bool, bool]:
        """(overdue, the engineer's break-glass right suspended by this grant now: the core's answer)."""
        if req.reviewed_by or req.review_due is None:
            return False, False
        overdue = self.parts.ctx.lifecycle.clock.now() >= req.review_due
        return overdue, await self.parts.ctx.breakglass.suspended_by(req)
