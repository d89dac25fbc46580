"""What the bot does with a verified activity: card actions, conversation events, commands.

botbuilder has authenticated the activity before any of this runs. The approver is taken
from the activity's ``from.aadObjectId`` and tenant, through the approvers file, on every
action; a card's data is only a pointer to a request, which is re-read, must be the
request this very card was posted for, and is re-authorized by the lifecycle. Break-glass
cards (their verbs start with ``bg_``) are handled by ``bot.teams.breakglass``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from botbuilder.core import InvokeResponse, TurnContext
from botbuilder.schema import Activity, ActivityTypes

from broker.directory import Approver
from broker.errors import BrokerError, Conflict, DeadlinePassed, InvalidRequest, NotApprover, NotFound
from broker.model import Request, check_request_id

from bot import render
from bot.kit.stepup import step_up_instead

from . import bgcards, cards
from .commands import run_command
from .conversations import ConversationRef, base_conversation_id
from .notifier import NAME
from .outbound import card_activity
from .replies import Turn

if TYPE_CHECKING:
    from .breakglass import BreakGlassActions
    from .parts import Parts

log = logging.getLogger("jitgate.teams")

CHANNEL = "teams"
CARD_ACTION = "adaptiveCard/action"


def _channel_data(activity: Activity) -> dict:
    return activity.channel_data if isinstance(activity.channel_data, dict) else {}


def _sub(d: dict, key: str) -> dict:
    v = d.get(key)
    return v if isinstance(v, dict) else {}


def tenant_of(activity: Activity) -> str | None:
    """The tenant an activity comes from; None when its two statements disagree."""
    conv = activity.conversation.tenant_id if activity.conversation else None
    chan = _sub(_channel_data(activity), "tenant").get("id")
    if conv and chan and conv != chan:
        return None
    return conv or chan


class TurnHandler:
    """The bot's turn logic (``on_turn`` is the adapter's callback)."""

    def __init__(self, parts: "Parts", bg_actions: "BreakGlassActions") -> None:
        self.parts = parts
        self.bg_actions = bg_actions

    async def on_turn(self, turn: TurnContext) -> None:
        a = turn.activity
        tenant = tenant_of(a)
        ours = tenant is not None and tenant == self.parts.teams.tenant_id
        new = await self._remember(a, tenant) if ours else False
        if a.type == ActivityTypes.invoke:
            if a.name == CARD_ACTION:
                body = await self.card_action(a)
                await turn.send_activity(Activity(type=ActivityTypes.invoke_response,
                                                  value=InvokeResponse(status=200, body=body)))
            return  # other invokes: botbuilder answers 501
        if not ours:
            log.info("Teams: ignored a %s activity from tenant %r (serving %r only)", a.type, tenant,
                     self.parts.teams.tenant_id)
            return
        if a.type == ActivityTypes.message:
            await self.command(a, tenant)
        elif a.type == ActivityTypes.conversation_update:
            await self.conversation_update(a, tenant, new)
        elif a.type == ActivityTypes.installation_update:
            await self.installation_update(a, tenant, new)

    # ------------------------------------------------------------------ card actions
    async def card_action(self, a: Activity) -> dict:
        """Answer an ``Action.Execute`` (or an automatic refresh) with a card or an error."""
        value = a.value if isinstance(a.value, dict) else {}
        action = value.get("action") if isinstance(value.get("action"), dict) else {}
        verb = action.get("verb")
        data = action.get("data") if isinstance(action.get("data"), dict) else {}
        if verb in bgcards.VERBS:
            return await self.bg_actions.handle(a, verb, data, tenant_of(a))
        if verb not in cards.VERBS:
            return cards.error_response(400, "BadRequest", "jitgate does not know this action")
        try:
            rid = check_request_id(data.get("request_id") if isinstance(data.get("request_id"), str) else "")
        except InvalidRequest:
            return cards.error_response(400, "BadRequest", "this card does not name a valid request")
        life = self.parts.ctx.lifecycle
        try:
            req = await life.get(rid)
        except NotFound:
            return cards.error_response(404, "NotFound", f"no request {rid}")
        if not self._card_belongs(req, a):
            log.warning("Teams: card action for %s from a message that is not its card (%s / %s)", rid,
                        base_conversation_id(a.conversation.id if a.conversation else ""), a.reply_to_id)
            return cards.error_response(403, "Forbidden", "this card does not belong to that request")
        aad = a.from_property.aad_object_id if a.from_property else None
        approver = self.parts.binder.teams(aad, tenant_of(a))
        if verb == cards.REFRESH:
            return cards.card_response(await self.parts.card(req, viewer=approver, viewer_known=True))
        if approver is None:
            return cards.error_response(403, "Forbidden", "your Teams account is not bound to a jitgate approver "
                                                          f"(Entra object id {aad or 'unknown'}); nothing was changed")
        notice = None
        if verb in (cards.APPROVE, cards.APPROVE_FOR):
            step_up = await step_up_instead(self.parts.ctx, req, approver, platform_user=aad)
            if step_up is not None:  # a click is no proof of presence: nothing recorded, the link on a reply card
                return cards.card_response(await self.parts.card(req, viewer=approver, viewer_known=True,
                                                                notice=step_up.text))
        try:
            if verb == cards.APPROVE:
                after = await life.approve(rid, approver, channel=CHANNEL, platform_user=aad)
            elif verb == cards.APPROVE_FOR:
                raw = data.get(cards.DURATION_INPUT)
                if not isinstance(raw, (str, int)) or isinstance(raw, bool) or not str(raw).strip().isdigit():
                    return cards.error_response(400, "BadRequest", "choose how long to grant")
                after = await life.approve(rid, approver, channel=CHANNEL, platform_user=aad, duration_s=int(raw))
            else:
                reason = data.get(cards.REASON_INPUT)
                if not isinstance(reason, str) or not reason.strip():
                    return cards.error_response(400, "BadRequest", "a reason is required to deny")
                after = await life.deny(rid, approver, channel=CHANNEL, reason=reason, platform_user=aad)
        except NotApprover as e:
            return cards.error_response(403, "Forbidden", e.detail)
        except Conflict as e:
            prefix = "Too late" if isinstance(e, DeadlinePassed) else "Nothing changed"
            after, notice = await life.get(rid), f"{prefix}: {e.detail}"
        except InvalidRequest as e:
            return cards.error_response(400, "BadRequest", e.detail)
        except BrokerError as e:
            log.warning("Teams: %s on %s failed: %s", verb, rid, e.detail)
            return cards.error_response(e.status if 400 <= e.status < 600 else 500, e.code, e.detail)
        return cards.card_response(await self.parts.card(after, viewer=approver, viewer_known=True,
                                                        notice=notice or _done(after, approver, verb)))

    def _card_belongs(self, req: Request, a: Activity) -> bool:
        """True when the activity comes from the card posted for ``req`` (not another card
        whose data was altered to name it)."""
        conv = base_conversation_id(a.conversation.id if a.conversation else "")
        return any(m.get("transport") == NAME and m.get("destination") == conv and m.get("ref") == a.reply_to_id
                   for m in req.messages) and bool(a.reply_to_id)

    # ------------------------------------------------------------------ commands
    async def command(self, a: Activity, tenant: str) -> None:
        aad = a.from_property.aad_object_id if a.from_property else None
        approver = self.parts.binder.teams(aad, tenant)
        conv = base_conversation_id(a.conversation.id)
        turn = Turn(aad_object_id=aad, tenant_id=tenant, user_id=a.from_property.id if a.from_property else None,
                    conversation_id=conv, conversation_type=a.conversation.conversation_type,
                    service_url=a.service_url, bot_id=a.recipient.id if a.recipient else None)
        answer = await run_command(self.parts, a.text or "", approver, aad, conv, turn=turn)
        activity_id = await self.parts.outbound.reply(a.service_url, a.conversation.id, a.id,
                                                     card_activity(answer.to_card(), answer.text[:200] or None))
        if answer.posted is not None:
            await answer.posted(activity_id)

    # ------------------------------------------------------------------ conversation events
    async def conversation_update(self, a: Activity, tenant: str, new: bool = False) -> None:
        data = _channel_data(a)
        event = data.get("eventType")
        team, channel = _sub(data, "team"), _sub(data, "channel")
        bot_id = a.recipient.id if a.recipient else None
        if any(m.id == bot_id for m in (a.members_removed or [])) or event in ("teamDeleted", "teamArchived"):
            await self._forget(a, team.get("id"))
            return
        for m in a.members_added or []:
            if m.id != bot_id:
                await self.parts.conversations.remember_user(getattr(m, "aad_object_id", None), m.id)
        if event in ("channelCreated", "channelRenamed", "channelRestored") and channel.get("id"):
            await self.parts.conversations.save(ConversationRef(
                id=channel["id"], service_url=a.service_url, tenant_id=tenant, kind="channel", name=channel.get("name"),
                team_id=team.get("id"), team_name=team.get("name"), bot_id=bot_id))
            self.parts.flush_soon()
        elif event == "channelDeleted" and channel.get("id"):
            await self.parts.conversations.forget(channel["id"])
        if any(m.id == bot_id for m in (a.members_added or [])):
            await self._installed(a, tenant, new)

    async def installation_update(self, a: Activity, tenant: str, new: bool = False) -> None:
        action = (a.action or "").lower()
        if action.startswith("remove"):
            await self._forget(a, _sub(_channel_data(a), "team").get("id"))
        elif action.startswith("add"):
            await self._installed(a, tenant, new)

    async def _installed(self, a: Activity, tenant: str, new: bool) -> None:
        """The app was added to a team, a chat or a personal scope: say hello (once), learn a
        team's channel names, and post proposals that were waiting for a conversation."""
        data = _channel_data(a)
        team = _sub(data, "team")
        conv_id = base_conversation_id(a.conversation.id)
        if team.get("id"):
            self.parts.spawn(self._learn_channels(a.service_url, team, tenant, a.recipient.id if a.recipient else None))
        if new:
            text = (f"jitgate is installed here. This conversation's id is {conv_id}; set TEAMS_APPROVALS_CONVERSATION "
                    "to it (or to a #channel name) to get approval requests here. Type 'help' for the commands.")
            try:
                await self.parts.outbound.post(a.service_url, conv_id, card_activity(cards.notice_card(text), text[:200]))
            except Exception:  # noqa: BLE001 - a greeting is not worth failing the install
                log.warning("Teams: could not greet conversation %s", conv_id, exc_info=True)
        self.parts.flush_soon()

    async def _learn_channels(self, service_url: str, team: dict, tenant: str, bot_id: str | None) -> None:
        try:
            channels = await self.parts.outbound.team_channels(service_url, team["id"])
        except Exception:  # noqa: BLE001 - names still arrive with channel events and messages
            log.warning("Teams: could not list the channels of team %s", team.get("name") or team["id"], exc_info=True)
            return
        for cid, name in channels[:500]:
            await self.parts.conversations.save(ConversationRef(
                id=cid, service_url=service_url, tenant_id=tenant, kind="channel",
                name=name or ("General" if cid == team["id"] else None), team_id=team["id"], team_name=team.get("name"),
                bot_id=bot_id))
        self.parts.flush_soon()

    async def _forget(self, a: Activity, team_id: str | None) -> None:
        if team_id:
            await self.parts.conversations.forget_team(team_id)
        await self.parts.conversations.forget(a.conversation.id)

    async def _remember(self, a: Activity, tenant: str) -> bool:
        """Every verified activity refreshes its conversation's reference (and who is who).
        Returns True when the conversation was not known before."""
        if not a.conversation or not a.conversation.id or not a.service_url:
            return False
        if a.type == ActivityTypes.installation_update and (a.action or "").lower().startswith("remove"):
            return False
        if any(m.id == (a.recipient.id if a.recipient else None) for m in (a.members_removed or [])):
            return False
        data = _channel_data(a)
        team, channel = _sub(data, "team"), _sub(data, "channel")
        kind = a.conversation.conversation_type or ("channel" if channel.get("id") else None)
        name = a.conversation.name
        conv_id = base_conversation_id(a.conversation.id)
        if kind == "channel":
            name = channel.get("name") if channel.get("id") in (None, conv_id) else None
            if not name and team.get("id") == conv_id:
                name = "General"
        new = await self.parts.conversations.save(ConversationRef(
            id=conv_id, service_url=a.service_url, tenant_id=tenant, kind=kind, name=name,
            team_id=team.get("id"), team_name=team.get("name"), bot_id=a.recipient.id if a.recipient else None))
        if a.from_property:
            await self.parts.conversations.remember_user(a.from_property.aad_object_id, a.from_property.id)
            if kind == "personal":
                await self.parts.conversations.remember_personal(a.from_property.aad_object_id, conv_id)
        return new


def _done(after: Request, approver: Approver, verb: str) -> str:
    """The personal line shown to whoever just acted."""
    if verb == cards.DENY:
        return "You denied this request."
    if approver.id in after.approvers:
        i = after.approvers.index(approver.id)
        counted = after.approvals[i].get("group")
        return f"You approved{f' for {counted}' if counted else ''} ({i + 1} of {render.approvals_required(after)})."
    return "Done."
