"""The Teams notifier: posts the proposal card, edits it on every change, replies in its
thread, reminds and escalates with @mentions. Break-glass grants live in the security
conversation instead (``bgalerts``).

Called by the core's outbox, at least once per change, so everything here is idempotent:
the card is always re-rendered from the request as it is now, and each thread reply is
marked in Redis once sent (the reply is the last step, so a retry repeats only the edit).
On an outcome the agent's owner (an approver with a ``teams:`` binding) hears of it in
their 1:1 chat with the bot, once per event, as on Slack; opening that chat is the desk's
(``TeamsDesk.personal_chat``, shared with break-glass).
A proposal that cannot be posted (no conversation known yet, Teams down) is held and
posted as soon as it can be: the request itself waits in Redis either way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from msrest.exceptions import HttpOperationError

from broker.model import PENDING, TERMINAL, Request
from broker.notify import MessageRef, Notice

from bot import render
from bot.kit.once import say_once

from . import cards
from .bgalerts import SecurityAlerts
from .conversations import REPLY_MARK_TTL_S, NoPersonalChat
from .outbound import card_activity

if TYPE_CHECKING:
    from .parts import Parts

log = logging.getLogger("jitgate.teams")

NAME = "teams"
MAX_MENTIONS = 20
# What the Bot Connector answers when this person cannot be messaged at all (the app is
# installed neither for them nor in any of their teams): retrying cannot help.
UNREACHABLE = frozenset({403, 404})


def summary(req: Request) -> str:
    p = req.proposal
    head = "Approval needed" if req.status == PENDING else f"Access request {req.status}"
    return cards.plain(f"{head}: {req.agent} wants to {p.action} on {p.target}", 200)


class TeamsNotifier:
    """Implements the core's ``Notifier`` port for Teams."""

    name = NAME

    def __init__(self, parts: "Parts") -> None:
        self.parts = parts
        self.bg = SecurityAlerts(parts)

    # ------------------------------------------------------------------ the port
    async def post_proposal(self, notice: Notice) -> list[MessageRef]:
        request = notice.request
        conv = self.parts.conversations
        dest = await self.parts.destination(request)
        if dest is None:
            await conv.hold(request.id)
            log.warning("Teams: no conversation to post request %s to yet (%s); it waits and is posted once the "
                        "bot is installed there", request.id, self.parts.where_wanted(request))
            return []
        if not await conv.lock("post:" + request.id):
            raise RuntimeError(f"request {request.id} is being posted by another worker")
        try:
            now = await self.parts.ctx.lifecycle.get(request.id)
            if any(m.get("transport") == NAME for m in now.messages):
                await conv.release(request.id)
                return []  # posted meanwhile (a held proposal flushed by another replica)
            card = await self.parts.card(now)
            try:
                activity_id = await self.parts.outbound.post(dest.service_url, dest.id, card_activity(card, summary(now)))
            except Exception:
                await conv.hold(request.id)  # not lost: retried by the outbox, then by the desk's flush
                raise
            await conv.release(request.id)
            return [MessageRef(NAME, dest.id, activity_id, {"service_url": dest.service_url})]
        finally:
            await conv.unlock("post:" + request.id)

    async def update(self, notice: Notice) -> None:
        """Re-render the card, say what happened in its thread, tell the owner (each once)."""
        request, refs, event = notice.request, list(notice.refs), notice.kind
        if request.break_glass:
            await self.bg.on_update(request, event)  # its home is the security alert
        if refs:
            card = await self.parts.card(request)
            for ref in refs:
                await self.parts.outbound.update(_service_url(ref), ref.destination, ref.ref,
                                                card_activity(card, summary(request)))
            # Thread replies, each once: every approval so far, then the event's own sentence. The
            # approval that completes the count is told by the "approved" reply instead (as on Slack).
            for i in range(min(len(request.approvals), max(0, render.approvals_required(request) - 1))):
                await self._reply_once(request, refs, f"approval:{i}", render.approval_sentence(request, i))
            sentence = render.event_sentence(request, event)
            if sentence:
                await self._reply_once(request, refs, render.event_key(request, event), sentence)
        elif request.status in TERMINAL:
            await self.parts.conversations.release(request.id)  # never posted and now moot
        if render.owner_hears(request, event):
            await self._tell_owner(request, refs, event)

    async def remind(self, notice: Notice) -> None:
        """A reminder (or the escalation) in the card's thread, mentioning who may still decide
        (``notice.audience``)."""
        request, refs, escalated_to = notice.request, notice.refs, notice.escalated_to
        if not refs or request.status != PENDING:
            return
        if escalated_to:
            # The backup group may decide now: its members join the card's refresh list.
            card = await self.parts.card(request)
            for ref in refs:
                await self.parts.outbound.update(_service_url(ref), ref.destination, ref.ref, card_activity(card, summary(request)))
            text = render.escalation_sentence(request, escalated_to)
        else:
            text = render.reminder_sentence(request)
        mentions = await self.parts.mentions(list(notice.audience.deciders))
        for ref in refs:
            await self.parts.outbound.reply(_service_url(ref), ref.destination, ref.ref,
                                           card_activity(cards.notice_card(text, mentions=mentions[:MAX_MENTIONS]), text[:200]))

    async def alert_security(self, notice: Notice) -> None:
        request, text = notice.request, notice.text
        if request.break_glass:
            await self.bg.alert(notice)  # one card per grant, kept true, with the review action
            return
        where = self.parts.teams.security_conversation
        dest = await self.parts.conversations.resolve(where) if where else None
        if dest is None:
            log.warning("Teams: security alert for %s not posted: %s", request.id,
                        "TEAMS_SECURITY_CONVERSATION is unset" if not where else f"no conversation known for {where!r}")
            return
        note = cards.notice_card(text, heading="jitgate security alert",
                                 lines=[f"Request {request.id}: {request.agent or request.engineer or '?'} · "
                                        f"{request.proposal.action} on {request.proposal.target}"])
        await self.parts.outbound.post(dest.service_url, dest.id, card_activity(note, cards.plain(text, 200)))

    async def announce(self, notice: Notice) -> None:
        """The announcement where approvals are asked, mentioning the group whose approval was bypassed."""
        request, text = notice.request, notice.announcement
        dest = await self.parts.destination(request)
        if dest is None:
            log.warning("Teams: announcement for %s not posted: no conversation known (%s)", request.id,
                        self.parts.where_wanted(request))
            return
        mentions = await self.parts.mentions(list(notice.audience.bypassed))
        note = cards.notice_card(text, mentions=mentions[:MAX_MENTIONS])

        async def send() -> None:
            await self.parts.outbound.post(dest.service_url, dest.id, card_activity(note, cards.plain(text, 200)))
        if request.break_glass:
            await self.bg.once(request, "announce", send)  # one per grant, however often delivered
        else:
            await send()

    # ------------------------------------------------------------------ helpers
    async def _once(self, mark: str, send) -> None:
        """Call ``send()`` unless ``mark`` says it was done already; remember it after (a
        retried delivery says nothing twice)."""
        conv = self.parts.conversations
        await say_once(conv.redis, conv.reply_mark(mark), send, ttl_s=REPLY_MARK_TTL_S)

    async def _reply_once(self, request: Request, refs: list[MessageRef], key: str, text: str) -> None:
        for ref in refs:
            await self._once(f"{request.id}:{ref.ref}:{key}", lambda ref=ref: self.parts.outbound.reply(
                _service_url(ref), ref.destination, ref.ref, card_activity(cards.notice_card(text), cards.plain(text, 200))))

    async def _tell_owner(self, request: Request, refs: list[MessageRef], event: str) -> None:
        """The outcome, in the owner's 1:1 chat with the bot (opened if need be), once per event.
        A passing failure goes up, so the outbox retries the delivery (the card edit repeats,
        the replies and this message do not); an owner Teams will not let the bot reach is
        logged and skipped."""
        owner = self.parts.ctx.directory.approver(request.owner) if request.owner else None
        if owner is None or not owner.teams:
            return
        text = render.owner_sentence(request, event)

        async def send() -> None:
            where = await self.parts.conversations.get(refs[0].destination) if refs else None
            lines = [f"Request {request.id}" + (f"; its card is in {where.label()}" if where else "")]
            service_url = next((r.extra.get("service_url") for r in refs if (r.extra or {}).get("service_url")), None)
            try:
                chat = await self.parts.personal_chat(owner.teams, service_url=service_url)
                await self.parts.outbound.post(chat.service_url, chat.id, card_activity(
                    cards.notice_card(text, lines=lines), cards.plain(text, 200)))
            except NoPersonalChat as e:
                log.warning("Teams: the owner %s of %s was not told it %s: %s", owner.id, request.id, event, e)
            except HttpOperationError as e:
                if getattr(e.response, "status_code", None) not in UNREACHABLE:
                    raise
                log.warning("Teams: the owner %s of %s was not told it %s: Teams refused a chat with them (HTTP %s); "
                            "they can add the jitgate app for themselves", owner.id, request.id, event,
                            e.response.status_code)

        await self._once(f"{request.id}:owner:{event}", send)


def _service_url(ref: MessageRef) -> str:
    url = (ref.extra or {}).get("service_url")
    if not url:
        raise ValueError(f"Teams message {ref.ref} has no service URL")
    return url
