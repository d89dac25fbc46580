"""Break-glass in Teams: the ``breakglass`` command and its confirmation card,
``breakglass-reinstate``, ``reviews``, and the security conversation's review action.

The command checks everything first (the core's ``preview``) and answers with a card
showing exactly what would be granted. The card's actions carry only a pointer (a random
nonce) to a one-time record jitgate keeps in Redis for 10 minutes: the parameters, who
typed the command (Entra object id and tenant), where (conversation, and the card's
activity id once posted), a digest of the parameters and a digest of what the card showed.
**Confirm** takes the record in one atomic step, only for the person it belongs to (anyone
else's click neither uses nor spends it), checks that it comes from that very card, runs
``preview`` again (if what would be granted changed, nothing is granted) and calls the
core's ``grant`` as the verified user, which re-runs every check.

A token for ``me`` is minted once by the core and goes into exactly one Bot Connector call:
a new message in the engineer's 1:1 chat with the bot (the chat the command was typed in,
else the one the bot knows for them, else one it opens). Never into the invoke response:
that card replaces a message of the conversation the click came from, which may be a
channel, and Teams keeps no promise that a user-specific view stays with that user alone.
The 1:1 chat is resolved *before* the grant, so an unreachable chat grants nothing; a
token whose delivery Teams did not confirm is revoked at once rather than left
unaccounted for. It goes into no log line and no stored record.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from botbuilder.schema import Activity

from broker.breakglass import ME

from bot.commands import BreakGlassArgs
from bot.kit import breakglass as bgkit
from bot.kit import commands as kit
from bot.kit.confirmations import Confirmations, recheck
from broker.directory import Approver
from broker.errors import BrokerError, Conflict, Forbidden, InvalidRequest, NotApprover, NotFound
from broker.model import check_request_id

from . import bgcards, cards
from .conversations import ConversationRef, NoPersonalChat, base_conversation_id
from .outbound import card_activity
from .replies import Answer, Turn

if TYPE_CHECKING:
    from .parts import Parts

log = logging.getLogger("jitgate.teams")

CHANNEL = "teams"
BREAKGLASS_USAGE = f"breakglass {bgkit.BREAKGLASS_ARGS}"
REINSTATE_USAGE = f"breakglass-reinstate {bgkit.REINSTATE_ARGS}"


# ---------------------------------------------------------------------- commands
async def run_breakglass(parts: "Parts", engineer: Approver, args: BreakGlassArgs, user: str, turn: Turn) -> Answer:
    """Check everything now, then answer with the confirmation card (nothing granted yet)."""
    c = await bgkit.breakglass(parts.ctx.breakglass, parts.confirmations, engineer, args, user=user,
                               tenant=turn.tenant_id, where=turn.conversation_id)

    async def posted(activity_id: str | None) -> None:
        if activity_id:
            await parts.confirmations.attach(c.nonce, activity_id)

    return Answer(text=f"Confirm break-glass: {c.preview.action} on {c.preview.target}",
                  card=bgcards.confirm_card(c.preview, engineer.id, c.nonce, review_s=c.review_s), posted=posted)


async def run_reinstate(parts: "Parts", by: Approver, who: str, user: str) -> Answer:
    """Security restores a suspended engineer's break-glass right (audited by the core)."""
    done = await bgkit.reinstate(parts.ctx.breakglass, by, bgkit.engineer_id(who), channel=CHANNEL)
    if done.request_id:
        await parts.alerts.note(done.request_id, f"{by.id} reinstated {done.engineer}'s break-glass right.")
    return Answer(f"{done.engineer}'s break-glass right is reinstated.")


async def run_reviews(parts: "Parts", approver: Approver, _args: None, user: str) -> Answer:
    """Open break-glass reviews: all of them for the security group, one's own for others."""
    reply = await kit.reviews(parts.ctx.breakglass, kit.Caller(approver, user, CHANNEL),
                              parts.settings.security_group)
    text, lines = bgcards.reviews_answer(list(reply.requests), now=parts.ctx.lifecycle.clock.now(),
                                         everyone=reply.everyone, limit=kit.REVIEWS_LIMIT)
    return Answer(text, lines)


# ---------------------------------------------------------------------- card actions
class BreakGlassActions:
    """``bg_confirm`` / ``bg_cancel`` on confirmation cards, ``bg_review`` on security alerts."""

    def __init__(self, parts: "Parts") -> None:
        self.parts = parts

    async def handle(self, a: Activity, verb: str, data: dict, tenant: str | None) -> dict:
        """Answer one invoke (an ``adaptiveCard/action`` response body)."""
        aad = a.from_property.aad_object_id if a.from_property else None
        if not aad:
            return cards.error_response(403, "Forbidden", "Teams did not say who you are; nothing was changed")
        if verb == bgcards.REVIEW:
            return await self.review(a, data, aad, tenant)
        return await self.confirm(a, verb, data, aad, tenant)

    # ------------------------------------------------------------------ confirm / cancel
    async def confirm(self, a: Activity, verb: str, data: dict, aad: str, tenant: str | None) -> dict:
        parts = self.parts
        verdict, record = await parts.confirmations.take(data.get(bgcards.CONFIRMATION), aad, tenant)
        if verdict == "missing":
            return cards.error_response(409, "Conflict", "this confirmation was already used, cancelled or has expired; "
                                                         "nothing was granted. Run the breakglass command again.")
        if verdict == "other":
            log.warning("Teams: %s on a break-glass confirmation by someone it was not shown to (%s); refused", verb, aad)
            return cards.error_response(403, "Forbidden", "only the engineer who typed this breakglass command may "
                                                          "confirm or cancel it; nothing was granted")
        # The record is spent: from here on, anything amiss grants nothing.
        conv = base_conversation_id(a.conversation.id if a.conversation else "")
        if not Confirmations.matches(record, shown_in=a.reply_to_id, where=conv):
            log.warning("Teams: a break-glass confirmation by %s does not match the card it was issued for; refused", aad)
            return cards.error_response(403, "Forbidden", "this confirmation does not match the card jitgate showed you; "
                                                          "nothing was granted")
        engineer = parts.binder.teams(aad, tenant)
        if not Confirmations.same_engineer(record, engineer.id if engineer else None):
            return cards.error_response(403, "Forbidden", "your Teams account is not bound to the approver who typed "
                                                          "this command; nothing was granted")
        if verb == bgcards.CANCEL:
            self._edit_card(a, bgcards.closed_confirm_card(f"Cancelled by {engineer.id}; nothing was granted.",
                                                           good=False))
            return cards.card_response(bgcards.closed_confirm_card("Cancelled; nothing was granted.", good=False))
        args = BreakGlassArgs.from_json(record["params"])
        bg = parts.ctx.breakglass
        try:
            await recheck(bg, engineer, args, record, shown_as="card", again="Run the breakglass command again.")
            chat = await self._personal_chat(a, aad, tenant) if args.subject == ME else None
            granted = await bg.grant(engineer, subject=args.subject, action=args.action, target=args.target,
                                     duration_s=args.duration_s, reason=args.reason, incident=args.incident,
                                     channel=CHANNEL, platform_user=aad)
        except NoPersonalChat:
            return cards.error_response(409, "Conflict", "jitgate cannot open a personal chat with you, where a token "
                                                         "for 'me' is sent; nothing was granted. Add the jitgate app for "
                                                         "yourself (or message it once) and run the command again.")
        except BrokerError as e:
            return _error(e)
        req = granted.request
        if granted.token is not None:
            token_activity = card_activity(bgcards.token_card(req, granted.note, granted.token.access_token),
                                            "Your break-glass token")
            if not await self._hand_over(chat, token_activity):
                await bgkit.revoke_undelivered(self.parts.ctx.lifecycle, req, channel=CHANNEL)
                text = f"Break-glass {req.id} revoked: your token could not be delivered to your personal chat."
                self._edit_card(a, bgcards.closed_confirm_card(text, good=False))
                return cards.card_response(bgcards.closed_confirm_card(text, good=False, lines=[
                    "Nothing is usable: the grant was ended at once. Run the breakglass command again."]))
        lines = bgcards.granted_lines(req, granted.note, for_me=granted.token is not None)
        self._edit_card(a, bgcards.closed_confirm_card(f"Confirmed by {engineer.id}: break-glass granted", lines=lines[:1]))
        return cards.card_response(bgcards.closed_confirm_card("Break-glass granted", lines=lines))

    async def _personal_chat(self, a: Activity, aad: str, tenant: str | None) -> ConversationRef:
        """The engineer's 1:1 chat with the bot: this one, the one the bot knows, or a new one."""
        if a.conversation and a.conversation.conversation_type == "personal":
            return ConversationRef(id=base_conversation_id(a.conversation.id), service_url=a.service_url,
                                   tenant_id=tenant, kind="personal")
        user_id = a.from_property.id if a.from_property else None
        if not user_id or not tenant:
            raise NoPersonalChat()
        try:
            return await self.parts.personal_chat(aad, service_url=a.service_url, user_id=user_id, tenant_id=tenant,
                                                 bot_id=a.recipient.id if a.recipient else None)
        except Exception as e:  # noqa: BLE001 - not installed for them, Teams away: nothing granted yet
            log.warning("Teams: could not open a personal chat for a break-glass token (%s)", e.__class__.__name__)
            raise NoPersonalChat() from None

    async def _hand_over(self, chat: ConversationRef, activity: Activity) -> bool:
        """One message with the token into the 1:1 chat; True only when Teams confirmed it."""
        try:
            await self.parts.outbound.post_once(chat.service_url, chat.id, activity)
            return True
        except Exception as e:  # noqa: BLE001 - never the activity or the token in the log
            log.warning("Teams: a break-glass token could not be delivered (%s); the grant is revoked",
                        e.__class__.__name__)
            return False

    def _edit_card(self, a: Activity, card: dict) -> None:
        """The confirmation card for everyone in the conversation: what happened, no buttons
        (in the background; the invoke answer above is the clicker's own view)."""
        if not a.reply_to_id or not a.conversation:
            return
        service_url, conv_id, activity_id = a.service_url, a.conversation.id, a.reply_to_id

        async def edit() -> None:
            try:
                await self.parts.outbound.update(service_url, conv_id, activity_id, card_activity(card, None))
            except Exception as e:  # noqa: BLE001 - cosmetic: the grant and the audit are done
                log.warning("Teams: could not close a break-glass confirmation card (%s)", e.__class__.__name__)

        self.parts.spawn(edit())

    # ------------------------------------------------------------------ review
    async def review(self, a: Activity, data: dict, aad: str, tenant: str | None) -> dict:
        """Acknowledge review, from the security alert of that very request (security group only)."""
        parts = self.parts
        try:
            rid = check_request_id(data.get("request_id") if isinstance(data.get("request_id"), str) else "")
        except InvalidRequest:
            return cards.error_response(400, "BadRequest", "this card does not name a valid request")
        ref = await parts.alerts.ref(rid)
        conv = base_conversation_id(a.conversation.id if a.conversation else "")
        if ref is None or ref.conversation != conv or ref.activity_id != a.reply_to_id:
            log.warning("Teams: review action for %s from a message that is not its security alert", rid)
            return cards.error_response(403, "Forbidden", "this card does not belong to that request")
        reviewer = parts.binder.teams(aad, tenant)
        if reviewer is None:
            return cards.error_response(403, "Forbidden", "your Teams account is not bound to a jitgate approver "
                                                          f"(Entra object id {aad}); nothing was changed")
        comment = data.get(bgcards.COMMENT_INPUT)
        comment = comment.strip() if isinstance(comment, str) else ""
        if not comment:
            return cards.error_response(400, "BadRequest", "a comment is required to acknowledge a review")
        try:
            req = await parts.ctx.breakglass.acknowledge(rid, reviewer, comment=comment, channel=CHANNEL)
        except BrokerError as e:
            return _error(e)
        mine = req.reviewed_by == reviewer.id and req.review_comment == comment
        notice = "You acknowledged this review." if mine else f"Nothing changed: already reviewed by {req.reviewed_by}."
        return cards.card_response(await parts.alerts.card(req, notice=notice))


def _error(e: BrokerError) -> dict:
    """A broker error as an invoke answer (branching on the class)."""
    if isinstance(e, (NotApprover, Forbidden)):
        return cards.error_response(403, "Forbidden", e.detail)
    if isinstance(e, Conflict):
        return cards.error_response(409, "Conflict", e.detail)
    if isinstance(e, NotFound):
        return cards.error_response(404, "NotFound", e.detail)
    if isinstance(e, InvalidRequest):
        return cards.error_response(400, "BadRequest", e.detail)
    log.warning("Teams: break-glass action failed: %s", e.detail)
    return cards.error_response(e.status if 400 <= e.status < 600 else 500, e.code, e.detail)
