"""Bolt listeners for the proposal's buttons and the deny modal.

Each listener acks first (Slack wants an answer within 3 seconds and a ``trigger_id``
lives only that long), then turns the verified event into one call on the lifecycle and
answers the clicker ephemerally. Bolt has already checked the signing secret and the
timestamp (HTTP mode) or the Socket Mode connection did. The approver is always taken
from the verified ``user.id``; a button's value is only a pointer to a request, which
is re-read and must be the request this very message was posted for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from broker import rules
from broker.errors import BrokerError, Conflict, Forbidden
from broker.model import PENDING, Request, check_request_id

from bot import render
from bot.kit.commands import ErrorKind, error_kind
from bot.kit.stepup import step_up_instead

from .blocks import APPROVE, APPROVE_FOR, DENY, DENY_VIEW, EVIDENCE, REASON_BLOCK, REASON_INPUT, deny_modal, evidence_modal
from .notifier import NAME
from .text import mrkdwn

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

    from .parts import Parts

CHANNEL = "slack"
log = logging.getLogger("jitgate.slack")


def error_text(e: BrokerError) -> str:
    """A broker error as a short ephemeral message (branching on the class, not the text)."""
    detail = mrkdwn(e.detail, 1500)
    return _ERROR_TEXT[error_kind(e)].format(detail=detail)


_ERROR_TEXT = {
    ErrorKind.FORBIDDEN: ":no_entry: You may not do that: {detail}",
    ErrorKind.POLICY_DENIED: ":no_entry_sign: Denied by policy: {detail}",
    ErrorKind.TOO_LATE: ":hourglass: Too late: {detail}",
    ErrorKind.UNCHANGED: ":information_source: Nothing changed: {detail}",
    ErrorKind.NOT_FOUND: ":mag: {detail}",
    ErrorKind.INVALID: ":warning: {detail}",
    ErrorKind.OTHER: ":warning: jitgate could not do that: {detail}",
}


class Listeners:
    """The interactive side of the Slack desk."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def register(self, app: "AsyncApp") -> None:
        app.action(APPROVE)(self.approve)
        app.action(APPROVE_FOR)(self.approve_for)
        app.action(DENY)(self.deny_clicked)
        app.action(EVIDENCE)(self.evidence)
        app.view(DENY_VIEW)(self.deny_submitted)

    # ------------------------------------------------------------------ buttons
    async def approve(self, ack, body) -> None:
        """Approve: count this approver's approval for the whole approvable duration."""
        await ack()
        await self._approve(body, _action(body).get("value"), None)

    async def approve_for(self, ack, body) -> None:
        """Approve for less time: the chosen duration caps the grant."""
        await ack()
        raw = ((_action(body).get("selected_option") or {}).get("value") or "")
        rid, _, seconds = raw.rpartition(":")
        duration = int(seconds) if seconds.isdigit() else None
        if duration is None:
            await self._ephemeral(body, ":warning: That duration is not one jitgate offers.")
            return
        await self._approve(body, rid, duration)

    async def _approve(self, body: dict, pointer: str | None, duration: int | None) -> None:
        life = self.parts.ctx.lifecycle
        try:
            approver = await self.parts.approver(_user(body))
            req = await self._clicked_request(body, pointer)
            if rules.already_approved(approver, req):  # one person counts once (any alias); nothing to change
                await self._ephemeral(body, ":information_source: You already approved this request. "
                                            + mrkdwn(render.status_line(req), 1000) + ".")
                return
            step_up = await step_up_instead(self.parts.ctx, req, approver, platform_user=_user(body))
            if step_up is not None:  # a click is no proof of presence: nothing recorded, a link instead
                await self._ephemeral(body, ":key: " + mrkdwn(step_up.text, 2500))
                return
            after = await life.approve(req.id, approver, channel=CHANNEL, platform_user=_user(body), duration_s=duration)
        except BrokerError as e:
            await self._ephemeral(body, error_text(e))
            return
        if after.status == PENDING:
            text = f":ballot_box_with_check: Your approval is recorded; {render.missing_words(after)} needed."
        else:
            text = f":white_check_mark: Approved for {render.fmt_duration(after.approved_duration_s)}."
        await self._ephemeral(body, text)

    async def deny_clicked(self, ack, body) -> None:
        """Deny: if this person may decide, open the modal that asks for the reason."""
        await ack()
        try:
            approver = await self.parts.approver(_user(body))
            req = await self._clicked_request(body, _action(body).get("value"))
            self.parts.ctx.lifecycle.check_approver(approver, req)
            if req.status != PENDING:
                raise Conflict(render.status_line(req))
        except BrokerError as e:
            await self._ephemeral(body, error_text(e))
            return
        await self._open(body, deny_modal(req))

    async def evidence(self, ack, body) -> None:
        """View all evidence: the full list in a modal (what the message already shows, uncut)."""
        await ack()
        try:
            req = await self._clicked_request(body, _action(body).get("value"))
        except BrokerError as e:
            await self._ephemeral(body, error_text(e))
            return
        await self._open(body, evidence_modal(req))

    # ------------------------------------------------------------------ the modal
    async def deny_submitted(self, ack, body, view) -> None:
        """The deny modal was submitted: deny with the reason (it reaches the agent and the audit log)."""
        values = (view.get("state") or {}).get("values") or {}
        reason = ((values.get(REASON_BLOCK) or {}).get(REASON_INPUT) or {}).get("value") or ""
        if not reason.strip():
            await ack(response_action="errors", errors={REASON_BLOCK: "Please say why (the agent reads this)."})
            return
        await ack()
        user = _user(body)
        rid = view.get("private_metadata") or ""
        try:
            approver = await self.parts.approver(user)
            await self.parts.ctx.lifecycle.deny(check_request_id(rid), approver, channel=CHANNEL,
                                                  reason=reason.strip(), platform_user=user)
        except BrokerError as e:
            await self._tell_after_modal(rid, user, error_text(e))
            return

    # ------------------------------------------------------------------ helpers
    async def _clicked_request(self, body: dict, pointer: str | None) -> Request:
        """The request a button points at, re-read now, and only if this message is its message."""
        req = await self.parts.ctx.lifecycle.get(check_request_id(pointer or ""))
        container = body.get("container") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
        ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
        mine = [m for m in req.messages if m.get("transport") == NAME]
        if not mine:
            raise Conflict("this request's message is still being set up; try again in a moment")
        if not any(m.get("destination") == channel and m.get("ref") == ts for m in mine):
            raise Forbidden("this button does not belong to that request")
        return req

    async def _open(self, body: dict, view: dict) -> None:
        """Open a modal while the click's trigger_id is still valid (3 s); say so if Slack refused."""
        try:
            await self.parts.api.call("views_open", trigger_id=body.get("trigger_id"), view=view)
        except Exception:  # noqa: BLE001 - an expired trigger, Slack down: the clicker may try again
            log.warning("views.open failed for a click by %s", _user(body), exc_info=True)
            await self._ephemeral(body, ":warning: Slack did not open the dialog in time; please click again.")

    async def _ephemeral(self, body: dict, text: str) -> None:
        channel = (body.get("container") or {}).get("channel_id") or (body.get("channel") or {}).get("id")
        await self.parts.answer(channel, _user(body), text)

    async def _tell_after_modal(self, rid: str, user: str, text: str) -> None:
        """After a modal closed there is no channel in the payload: answer where the request's
        message is (ephemeral), or in a DM."""
        channel = None
        try:
            req = await self.parts.ctx.lifecycle.get(check_request_id(rid))
            refs = [m for m in req.messages if m.get("transport") == NAME]
            channel = refs[0]["destination"] if refs else None
        except BrokerError:
            pass
        await self.parts.answer(channel, user, text)


def _action(body: dict) -> dict:
    actions = body.get("actions") or [{}]
    return actions[0] if isinstance(actions[0], dict) else {}


def _user(body: dict) -> str:
    return str((body.get("user") or {}).get("id") or body.get("user_id") or "")

