"""The Slack notifier: posts proposals, keeps the message true, threads what happened.

The outbox calls these at least once per change, possibly again after a failure, and
always with the request as it is now. So ``chat.update`` simply re-renders, and each
thread reply or DM is remembered in Redis once it was sent (per request, per event, per
approver) so a retried delivery does not say it twice.

A break-glass grant has no proposal message; its home is the alert in the security
channel, whose channel and ts are kept in the same per-request Redis hash. The core's
notice says what happened (``notice.kind``), whom to mention (``notice.audience``) and
whether this grant suspended its engineer (``notice.suspended``): no alert yet → post it;
reviewed → edit it in place; suspended by this grant → say so in its thread (once); a
review reminder or a reinstatement → a line in its thread; a repeated delivery of the
grant → re-render only.
"""

from __future__ import annotations

import logging

from broker.directory import GROUP_BOUND_PREFIX
from broker.model import PENDING, Request
from broker.notify import DeskContext, MessageRef, Notice

from bot import render
from bot.kit import alerts
from bot.kit.once import say_once

from .api import SlackApi
from .bgviews import event_line, security_blocks, security_text
from .blocks import fallback_text, proposal_blocks
from .settings import SlackSettings
from .text import TEXT_LIMIT, channel_link, clip, escape, mention, mrkdwn, usergroup_mention

log = logging.getLogger("jitgate.slack")

NAME = "slack"
MAX_MENTIONS = 20
MARK_TTL_S = 31 * 86400

EVENT_ICON = {
    "approved": ":white_check_mark:", "denied": ":x:", "expired": ":alarm_clock:", "cancelled": ":leftwards_arrow_with_hook:",
    "collected": ":key:", "completed": ":checkered_flag:", "revoked": ":no_entry:", "asked_again": ":repeat:",
}


class SlackNotifier:
    """Implements the core's Notifier port on the Slack Web API."""

    name = NAME

    def __init__(self, api: SlackApi, settings, slack: SlackSettings) -> None:
        self.api = api
        self.settings = settings  # the core's
        self.slack = slack  # the desk's own (channels)
        self._ctx: DeskContext | None = None

    def bind(self, ctx: DeskContext) -> None:
        """Attach the desk's context (directory for mentions, Redis for sent-markers)."""
        self._ctx = ctx

    @property
    def ctx(self) -> DeskContext:
        if self._ctx is None:
            raise RuntimeError("the Slack desk has not been started")
        return self._ctx

    # ------------------------------------------------------------------ the port
    async def post_proposal(self, notice: Notice) -> list[MessageRef]:
        """Post the proposal to the policy's channel (or SLACK_APPROVALS_CHANNEL)."""
        request = notice.request
        channel = request.decision.get("channel") or self.slack.approvals_channel
        resp = await self.api.call(
            "chat_postMessage", channel=channel, text=fallback_text(request),
            blocks=proposal_blocks(request, max_duration_s=self.settings.max_duration_s),
            unfurl_links=False, unfurl_media=False,
        )
        return [MessageRef(NAME, resp["channel"], resp["ts"])]

    async def update(self, notice: Notice) -> None:
        """Re-render the original message, say what happened in its thread, tell the owner."""
        request, event = notice.request, notice.kind
        if request.break_glass:
            await alerts.changed(self, request, event, event_line(request, event))
        for ref in notice.refs:
            await self._rerender(request, ref)
            for key, text in self._thread_lines(request, event):
                await self._once(request, f"thread:{ref.ref}:{key}", lambda: self._reply(ref, text))
        if render.owner_hears(request, event):
            await self._dm_owner(request, event)

    async def remind(self, notice: Notice) -> None:
        """A reminder (or the escalation to the backup group) in the proposal's thread,
        mentioning who may still decide (``notice.audience``)."""
        request, refs, escalated_to = notice.request, notice.refs, notice.escalated_to
        if request.status != PENDING:
            return  # decided meanwhile: nothing to nudge about
        if not refs:
            log.warning("request %s has no Slack message to remind in", request.id)
            return
        who = notice.audience
        people = self._mentions(who.decider_groups, who.deciders)
        if escalated_to:
            text = f":rotating_light: {mrkdwn(render.escalation_sentence(request, escalated_to), 1500)}"
            for ref in refs:
                await self._rerender(request, ref)  # the status now says "escalated"
                await self._once(request, f"thread:{ref.ref}:escalated",
                                 lambda: self._reply(ref, _with_people(text, people), broadcast=True))
            return
        text = f":bell: {mrkdwn(render.reminder_sentence(request), 1500)}"
        for ref in refs:
            await self._reply(ref, _with_people(text, people))

    async def alert_security(self, notice: Notice) -> None:
        """Post to SLACK_SECURITY_CHANNEL (the approvals channel when none is set); a
        break-glass grant gets one alert with a review button, kept true in place."""
        request, text = notice.request, notice.text
        if request.break_glass:
            await alerts.alert(self, notice)
            return
        p = request.proposal
        body = (f":rotating_light: *jitgate security:* {mrkdwn(text, 1500)}\n"
                f"Request `{escape(request.id)}`: {mrkdwn(request.agent, 200)} → {mrkdwn(p.action, 100)} on "
                f"{mrkdwn(p.target, 400)} ({escape(request.status)})")
        await self.api.call("chat_postMessage", channel=self._security_channel(), text=clip(body, TEXT_LIMIT),
                            unfurl_links=False, unfurl_media=False)

    async def announce(self, notice: Notice) -> None:
        """An informational message (no buttons) where this request's approvals are asked,
        mentioning the group whose approval was bypassed."""
        request, who = notice.request, notice.audience
        channel = request.decision.get("channel") or self.slack.approvals_channel
        people = self._mentions((who.bypassed_group,), who.bypassed) if who.bypassed_group else []
        body = _with_people(f":mega: {mrkdwn(notice.announcement, 2000)}", people)

        async def send() -> None:
            await self.api.call("chat_postMessage", channel=channel, text=body, unfurl_links=False, unfurl_media=False)
        if request.break_glass:
            await self._once(request, "bg:announce", send)  # one per grant, however often delivered
        else:
            await send()

    # ------------------------------------------------------------------ break-glass
    async def alert_ref(self, request_id: str) -> tuple[str, str] | None:
        """(channel, ts) of the break-glass alert for this request, if one was posted."""
        got = await self.ctx.redis.hmget(self._marks(request_id), "bg:channel", "bg:ts")
        if not got[0] or not got[1]:
            return None
        return got[0].decode(), got[1].decode()

    async def security_note(self, request_id: str, text: str) -> None:
        """A reply in the thread of the request's break-glass alert (best effort: a courtesy)."""
        try:
            ref = await self.alert_ref(request_id)
            if ref is not None:
                await self.api.call("chat_postMessage", channel=ref[0], thread_ts=ref[1], text=text,
                                    unfurl_links=False, unfurl_media=False)
        except Exception:  # noqa: BLE001 - the change itself is done and audited
            log.warning("could not add a note under the break-glass alert of %s", request_id)

    # bot.kit.alerts' AlertDesk: the alert's place, rendering and thread (the kit decides when)
    async def alert_post(self, request: Request, suspended: bool) -> tuple[str, str]:
        resp = await self.api.call("chat_postMessage", channel=self._security_channel(), text=security_text(request),
                                   blocks=security_blocks(request, suspended=suspended),
                                   unfurl_links=False, unfurl_media=False)
        key = self._marks(request.id)
        await self.ctx.redis.hset(key, mapping={"bg:channel": resp["channel"], "bg:ts": resp["ts"]})
        await self.ctx.redis.expire(key, MARK_TTL_S)
        return resp["channel"], resp["ts"]

    async def alert_edit(self, request: Request, ref: tuple[str, str], suspended: bool | None) -> None:
        if suspended is None:  # whether this very grant suspended its engineer: the core's rule
            suspended = await self.ctx.breakglass.suspended_by(request)
        await self.api.call("chat_update", channel=ref[0], ts=ref[1], text=security_text(request),
                            blocks=security_blocks(request, suspended=suspended))

    async def alert_say(self, ref: tuple[str, str], text: str, audience, tone: alerts.Tone) -> None:
        if tone is not alerts.Tone.EVENT:
            people = self._mentions((audience.security_group,) if audience.security_group else (), audience.security)
            icon = ":no_entry:" if tone is alerts.Tone.SUSPENDED else ":bell:"
            text = _with_people(f"{icon} {mrkdwn(text, 1500)}", people)
        await self._reply(MessageRef(NAME, ref[0], ref[1]), text, broadcast=tone is alerts.Tone.SUSPENDED)

    async def alert_once(self, request: Request, marker: str, send) -> None:
        await self._once(request, "bg:" + marker, send)

    def _security_channel(self) -> str:
        return self.slack.security_channel or self.slack.approvals_channel

    # ------------------------------------------------------------------ pieces
    async def _rerender(self, request: Request, ref: MessageRef) -> None:
        await self.api.call(
            "chat_update", channel=ref.destination, ts=ref.ref, text=fallback_text(request),
            blocks=proposal_blocks(request, max_duration_s=self.settings.max_duration_s),
        )

    def _thread_lines(self, request: Request, event: str) -> list[tuple[str, str]]:
        """(marker, text) of each thread reply this event calls for."""
        lines: list[tuple[str, str]] = []
        if event == "approval":
            # The approval that completes the count is told by the "approved" reply instead.
            partial = request.approvals[: max(0, render.approvals_required(request) - 1)]
            for i, a in enumerate(partial):
                lines.append((f"approval:{a['approver']}",
                              f":ballot_box_with_check: {mrkdwn(render.approval_sentence(request, i), 1000)}"))
        sentence = render.event_sentence(request, event)
        if sentence:
            lines.append((f"event:{render.event_key(request, event)}",
                          f"{EVENT_ICON.get(event, '')} {mrkdwn(sentence, 2500)}".strip()))
        return lines

    async def _reply(self, ref: MessageRef, text: str, *, broadcast: bool = False) -> None:
        kwargs = {"reply_broadcast": True} if broadcast else {}
        await self.api.call("chat_postMessage", channel=ref.destination, thread_ts=ref.ref, text=text,
                            unfurl_links=False, unfurl_media=False, **kwargs)

    async def _dm_owner(self, request: Request, event: str) -> None:
        owner_slack = self._owner_slack(request.owner)
        if not mention(owner_slack):
            return
        where = ""
        refs = [r for r in request.messages if r.get("transport") == NAME]
        if refs:
            where = f" (see {channel_link(refs[0].get('destination'))})"
        text = f"{EVENT_ICON.get(event, '')} {mrkdwn(render.owner_sentence(request, event), 2500)}{where}".strip()
        await self._once(request, f"dm:{event}", lambda: self.api.call(
            "chat_postMessage", channel=owner_slack, text=text, unfurl_links=False, unfurl_media=False))

    def _owner_slack(self, owner: str | None) -> str | None:
        """The owner's Slack user id: from their approvers entry, or from an owner named ``slack:U…``."""
        if not owner:
            return None
        entry = self.ctx.directory.approver(owner)
        if entry is not None:
            return entry.slack
        return owner.removeprefix(GROUP_BOUND_PREFIX) if owner.startswith(GROUP_BOUND_PREFIX) else None

    def _mentions(self, groups, people) -> list[str]:
        """``<!subteam^S…>`` of the Slack user groups bound to ``groups``, then ``<@U…>`` of
        ``people`` (the audience the core resolved), at most :data:`MAX_MENTIONS`."""
        directory = self.ctx.directory
        teams: list[str] = []
        for group in groups:
            for ug in directory.slack_usergroups_for(group):
                m = usergroup_mention(ug)
                if m is not None and m not in teams:
                    teams.append(m)
        seen, out = set(), []
        for a in people:
            m = mention(a.slack)
            if m is None or a.id in seen:
                continue
            seen.add(a.id)
            out.append(m)
        return (teams + out)[:MAX_MENTIONS]

    def _marks(self, request_id: str) -> str:
        """The desk's Redis hash for one request: sent-markers and the break-glass alert's ref."""
        return f"{self.settings.redis_prefix}slack:{{req:{request_id}}}"

    async def _once(self, request: Request, marker: str, send) -> None:
        """Call ``send()`` unless ``marker`` says it was already sent for this request; remember it after."""
        await say_once(self.ctx.redis, self._marks(request.id), send, field=marker, ttl_s=MARK_TTL_S)


def _with_people(text: str, people: list[str]) -> str:
    return text + ("\n" + " ".join(people) if people else "")
