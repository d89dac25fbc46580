"""Break-glass in Slack: ``/jit breakglass`` with its confirmation modal,
``/jit breakglass-reinstate``, ``/jit reviews``, and the security channel's review button.

The command checks everything first (the core's ``preview``) and opens a modal showing
exactly what would be granted. Confirming calls the core's ``grant`` as the *verified*
submitter, which runs every check again. The modal's ``private_metadata`` holds only the
command's parameters; they are honoured only together with the one-time confirmation
record of :mod:`bot.kit.confirmations`, kept when the modal was opened and found through
the view's ``external_id``: taken once and only by the Slack user and workspace it was
shown to, from that very modal, with those very parameters, by the approver it was shown
to, and only while the core's preview still grants exactly what the modal showed. So a
submission by someone else, with edited parameters, replayed, or after what would be
granted changed grants nothing.

A token for ``me`` is minted once by the core and sent once, ephemerally, to the
engineer (a DM when there is no channel to answer in); it goes into no other Slack call,
no log line and no stored record.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Callable

from slack_sdk.errors import SlackApiError

from bot.commands import BreakGlassArgs
from bot.kit import breakglass as bgkit
from bot.kit import commands as kit
from bot.kit.confirmations import Confirmations, recheck
from broker.breakglass import ME
from broker.directory import GROUP_BOUND_PREFIX, Approver, group_bound_id
from broker.errors import BrokerError, Conflict, Forbidden, NotApprover
from broker.model import Request, check_request_id

from .bgviews import (COMMENT_BLOCK, COMMENT_INPUT, CONFIRM_VIEW, REVIEW, REVIEW_VIEW, confirm_modal, granted_text,
                      review_modal, reviews_text)
from .listeners import CHANNEL, error_text
from .text import escape, mrkdwn

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

    from .parts import Parts

log = logging.getLogger("jitgate.slack")

BREAKGLASS_USAGE = f"/jit breakglass {bgkit.BREAKGLASS_ARGS}"
REINSTATE_USAGE = "/jit breakglass-reinstate <approver-id|@user>"

_MENTION = re.compile(r"^<@([UW][A-Z0-9]{2,30})(?:\|[^>]*)?>$")


# ---------------------------------------------------------------------- sub-commands
async def run_breakglass(parts: Parts, engineer: Approver, args: BreakGlassArgs, user: str,
                         command: dict) -> str | None:
    """Check everything now, then show exactly what would be granted in a confirmation modal."""
    if args.subject == ME and engineer.id.startswith(GROUP_BOUND_PREFIX):
        # The policies see the people named in the approvers file; a user group member is not one of them.
        raise NotApprover("break-glass for yourself needs your own entry in jitgate's approvers file "
                          f"(`slack: {user}`), not only a Slack user group; break-glass for an agent works")
    c = await bgkit.breakglass(parts.ctx.breakglass, parts.confirmations, engineer, args, user=user,
                               tenant=command.get("team_id"), where=command.get("channel_id"))
    view = confirm_modal(c.preview, engineer.id, c.params, review_s=c.review_s)
    view["external_id"] = c.nonce
    try:
        opened = await parts.api.call("views_open", trigger_id=command.get("trigger_id"), view=view)
    except Exception as e:  # noqa: BLE001 - an expired trigger, Slack down: nothing was granted
        await parts.confirmations.drop(c.nonce)
        log.warning("views.open failed for /jit breakglass by %s (%s)", user, e.__class__.__name__)
        return ":warning: Slack did not open the confirmation in time; nothing was granted. Run the command again."
    view_id = ((opened.get("view") if opened else None) or {}).get("id")
    if view_id:
        await parts.confirmations.attach(c.nonce, view_id)
    return None  # the modal is the answer


def _mentioned(parts: Parts) -> Callable[[str], str | None]:
    """A ``<@U…>`` mention as an approver id: the bound one, else the Slack user group member's own."""
    def approver_id(who: str) -> str | None:
        m = _MENTION.match(who)
        if not m:
            return None
        found = parts.ctx.directory.by_slack(m[1])
        return found.id if found is not None else group_bound_id(m[1])
    return approver_id


async def run_reinstate(parts: Parts, by: Approver, who: str, user: str) -> str:
    """Security restores a suspended engineer's break-glass right (audited by the core)."""
    engineer_id = bgkit.engineer_id(who, _mentioned(parts),
                                    "name the engineer by approver id (as in the approvers file) or as <@U…>")
    done = await bgkit.reinstate(parts.ctx.breakglass, by, engineer_id, channel=CHANNEL)
    if done.request_id:
        await parts.notifier.security_note(
            done.request_id, f":unlock: {mrkdwn(by.id, 100)} reinstated {mrkdwn(engineer_id, 100)}'s "
                             "break-glass right.")
    return f":unlock: {mrkdwn(engineer_id, 100)}'s break-glass right is reinstated."


async def run_reviews(parts: Parts, approver: Approver, _args: None, user: str) -> str:
    """Open break-glass reviews: all of them for the security group, one's own for others."""
    reply = await kit.reviews(parts.ctx.breakglass, kit.Caller(approver, user, CHANNEL),
                              parts.ctx.settings.security_group)
    return reviews_text(list(reply.requests), now=parts.ctx.lifecycle.clock.now(), everyone=reply.everyone,
                        limit=kit.REVIEWS_LIMIT)


# ---------------------------------------------------------------------- interactions
class BreakGlassListeners:
    """The confirmation modal, and the review button with its modal."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def register(self, app: "AsyncApp") -> None:
        app.view(CONFIRM_VIEW)(self.confirmed)
        app.action(REVIEW)(self.review_clicked)
        app.view(REVIEW_VIEW)(self.review_submitted)

    async def confirmed(self, ack, body, view) -> None:
        """The engineer confirmed: grant as the verified submitter, if the confirmation is the one we showed them."""
        await ack()
        parts = self.parts
        user = _user(body)
        metadata = view.get("private_metadata") or ""
        team = (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id")
        verdict, record = await parts.confirmations.take(view.get("external_id"), user, team)
        channel = None
        try:
            if verdict == "missing":
                raise Conflict("this confirmation was already used or has expired; nothing was granted. "
                               "Run `/jit breakglass` again.")
            if verdict != "ok" or not Confirmations.matches(record, shown_in=view.get("id"), params=metadata):
                log.warning("a break-glass confirmation submitted by %s does not match the one shown; refused", user)
                raise Forbidden("this confirmation does not match the one jitgate showed you; nothing was granted")
            channel = record.get("where") or None
            args = BreakGlassArgs.from_json(record["params"])
            engineer = await parts.approver(user)
            if not Confirmations.same_engineer(record, engineer.id):
                raise Forbidden("your Slack account is no longer bound to the approver who typed this command; "
                                "nothing was granted")
            await recheck(parts.ctx.breakglass, engineer, args, record, shown_as="dialog",
                          again="Run `/jit breakglass` again.")
            granted = await parts.ctx.breakglass.grant(
                engineer, subject=args.subject, action=args.action, target=args.target, duration_s=args.duration_s,
                reason=args.reason, incident=args.incident, channel=CHANNEL, platform_user=user)
        except BrokerError as e:
            await parts.answer(channel, user, error_text(e))
            return
        if granted.token is None:
            await parts.answer(channel, user, granted_text(granted.request, granted.note, None))
            return
        text = granted_text(granted.request, granted.note, granted.token.access_token)
        if not await self._hand_over(channel, user, text):
            await bgkit.revoke_undelivered(self.parts.ctx.lifecycle, granted.request, channel=CHANNEL)

    async def _hand_over(self, channel: str | None, user: str, text: str) -> bool:
        """Show ``text`` (it holds a token) to ``user`` alone: ephemerally, else by DM; one attempt
        each and no retry, so it is sent at most once. False only when Slack surely did not show it."""
        client = self.parts.client
        if channel:
            try:
                await client.chat_postEphemeral(channel=channel, user=user, text=text)
                return True
            except SlackApiError as e:
                log.warning("could not show a break-glass token ephemerally (%s); sending it by DM",
                            (e.response or {}).get("error"))
            except Exception as e:  # noqa: BLE001 - unknown whether it arrived: do not send it twice
                log.warning("showing a break-glass token failed (%s)", e.__class__.__name__)
                return True
        try:
            await client.chat_postMessage(channel=user, text=text)
            return True
        except SlackApiError as e:
            log.warning("could not send a break-glass token by DM (%s)", (e.response or {}).get("error"))
            return False
        except Exception as e:  # noqa: BLE001
            log.warning("sending a break-glass token by DM failed (%s)", e.__class__.__name__)
            return True

    async def review_clicked(self, ack, body) -> None:
        """Acknowledge review: for the security group, open the modal asking for the comment."""
        await ack()
        parts = self.parts
        user = _user(body)
        channel = (body.get("container") or {}).get("channel_id") or (body.get("channel") or {}).get("id")
        try:
            reviewer = await parts.approver(user)
            req = await self._alert_request(body)
            group = parts.ctx.settings.security_group
            if group not in reviewer.groups:
                raise NotApprover(f"only members of '{group}' may acknowledge a break-glass review")
            if req.reviewed_by:
                raise Conflict(f"already reviewed by {req.reviewed_by}: {req.review_comment}")
        except BrokerError as e:
            await parts.answer(channel, user, error_text(e))
            return
        try:
            await parts.api.call("views_open", trigger_id=body.get("trigger_id"), view=review_modal(req))
        except Exception as e:  # noqa: BLE001
            log.warning("views.open failed for a review click by %s (%s)", user, e.__class__.__name__)
            await parts.answer(channel, user, ":warning: Slack did not open the dialog in time; please click again.")

    async def review_submitted(self, ack, body, view) -> None:
        """The review modal was submitted: acknowledge with the comment (the first acknowledgement wins)."""
        values = (view.get("state") or {}).get("values") or {}
        comment = (((values.get(COMMENT_BLOCK) or {}).get(COMMENT_INPUT) or {}).get("value") or "").strip()
        if not comment:
            await ack(response_action="errors", errors={COMMENT_BLOCK: "A comment is required for the review."})
            return
        await ack()
        parts = self.parts
        user = _user(body)
        rid = view.get("private_metadata") or ""
        ref = None
        try:
            rid = check_request_id(rid)
            ref = await parts.notifier.alert_ref(rid)
            reviewer = await parts.approver(user)
            req = await parts.ctx.breakglass.acknowledge(rid, reviewer, comment=comment, channel=CHANNEL)
        except BrokerError as e:
            await parts.answer(ref[0] if ref else None, user, error_text(e))
            return
        if req.reviewed_by != reviewer.id:
            text = f":information_source: Nothing changed: already reviewed by {mrkdwn(req.reviewed_by, 100)}."
        else:
            text = f":white_check_mark: Your review of `{escape(req.id)}` is recorded."
        await parts.answer(ref[0] if ref else None, user, text)

    async def _alert_request(self, body: dict) -> Request:
        """The break-glass request the button points at, re-read now, and only if this message is its alert."""
        actions = body.get("actions") or [{}]
        pointer = (actions[0] if isinstance(actions[0], dict) else {}).get("value") or ""
        req = await self.parts.ctx.lifecycle.get(check_request_id(pointer))
        container = body.get("container") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
        ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
        ref = await self.parts.notifier.alert_ref(req.id) if req.break_glass else None
        if ref is None or ref != (channel, ts):
            raise Forbidden("this button does not belong to that request")
        return req


def _user(body: dict) -> str:
    return str((body.get("user") or {}).get("id") or body.get("user_id") or "")
