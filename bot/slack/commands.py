"""The ``/jit`` slash command: one command, sub-commands in a dispatch table.

Arguments are parsed before the ack, so bad ones get the usage text straight in the
ack (ephemeral by default). Anything that reads or changes state acks first and then
answers through the command's ``response_url`` (ephemeral). Interactive sub-commands
(``breakglass``) also get the command itself, for its ``trigger_id``, and may answer with
a modal instead of text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from broker.directory import Approver
from broker.errors import BrokerError
from broker.model import check_request_id

from bot import render
from bot.commands import POSTURES, id_and_reason, no_args, parse_breakglass, posture_level, request_id

from .breakglass import (BREAKGLASS_USAGE, REINSTATE_USAGE, parse_person,
                         run_breakglass, run_reinstate, run_reviews)
from .listeners import CHANNEL, error_text
from .text import date, escape, mrkdwn

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

    from .desk import SlackDesk

COMMAND = "/jit"
LIST_LIMIT = 20


@dataclass(frozen=True)
class Subcommand:
    name: str
    usage: str
    summary: str
    parse: Callable[[str], Any]
    # None: answered from the text alone. Returns the ephemeral answer, or None when there is
    # none (a modal was opened instead).
    run: Callable[..., Awaitable[str | None]] | None
    interactive: bool = False  # run also gets the slash command (trigger_id, channel_id)


async def _list(desk: "SlackDesk", approver: Approver, _args: None, user: str) -> str:
    reqs = await desk.broker.lifecycle.pending_for(approver, limit=LIST_LIMIT)
    if not reqs:
        return ":sparkles: Nothing is waiting for you."
    lines = [f"*Waiting for you* ({len(reqs)}{'+' if len(reqs) >= LIST_LIMIT else ''}):"]
    for r in reqs:
        p = r.proposal
        lines.append(
            f"• `{escape(r.id)}` {mrkdwn(r.agent, 100)} → *{mrkdwn(p.action, 64)}* on {mrkdwn(p.target, 200)} "
            f"for {render.fmt_duration(p.duration_s)}; {len(r.approvals)} of {render.approvals_required(r)}, "
            f"expires {date(r.deadline, render.fmt_time(r.deadline))}")
    return "\n".join(lines)


async def _status(desk: "SlackDesk", approver: Approver, rid: str, user: str) -> str:
    r = await desk.broker.lifecycle.get(check_request_id(rid))
    p = r.proposal
    lines = [
        f"`{escape(r.id)}`: {mrkdwn(r.agent, 100)} → *{mrkdwn(p.action, 64)}* on {mrkdwn(p.target, 200)}",
        f"*{escape(r.status.capitalize())}*: {mrkdwn(render.status_line(r), 1000)}",
        f"Policy: {escape(render.verdict(r))}",
    ]
    lines += [f"• {escape(step)}" for step in render.timeline(r)]
    return "\n".join(lines)


async def _revoke(desk: "SlackDesk", approver: Approver, args: tuple[str, str], user: str) -> str:
    rid, reason = args
    r = await desk.broker.lifecycle.revoke_as(check_request_id(rid), approver, reason=reason, channel=CHANNEL,
                                              platform_user=user)
    return f":no_entry: Revoked `{escape(r.id)}`: {mrkdwn(r.close_reason or '', 600)}"


async def _posture(desk: "SlackDesk", approver: Approver, level: str | None, user: str) -> str:
    life = desk.broker.lifecycle
    if level is None:
        return f"Risk posture is *{escape(await life.posture())}*."
    await life.set_posture(level, approver, channel=CHANNEL)
    return f":shield: Risk posture is now *{escape(level)}*; every new policy decision sees it."


SUBCOMMANDS: dict[str, Subcommand] = {s.name: s for s in (
    Subcommand("list", "/jit list", "requests waiting for your approval", no_args, _list),
    Subcommand("status", "/jit status <id>", "where a request stands", request_id, _status),
    Subcommand("revoke", "/jit revoke <id> [reason]",
               "end a grant now (its approvers, its owner, security; a break-glass grant: its engineer too)",
               id_and_reason, _revoke),
    Subcommand("posture", f"/jit posture [{'|'.join(POSTURES)}]", "show or set the risk posture (security group)",
               posture_level, _posture),
    Subcommand("breakglass", BREAKGLASS_USAGE,
               "emergency access at once (on-call group): duration like 30m, 1h, 900s; you confirm in a dialog, "
               "security is told and must review it", parse_breakglass, run_breakglass, interactive=True),
    Subcommand("breakglass-reinstate", REINSTATE_USAGE,
               "restore a break-glass right suspended for an unreviewed grant (security group)", parse_person,
               run_reinstate),
    Subcommand("reviews", "/jit reviews", "open break-glass reviews (security group: all; others: their own)",
               no_args, run_reviews),
    Subcommand("help", "/jit help", "this text", no_args, None),
)}


def help_text() -> str:
    # Usage lines are escaped too: Slack would read `<agent-id|me>` as a link labelled "me".
    rows = [f"• `{escape(s.usage)}`: {escape(s.summary)}" for s in SUBCOMMANDS.values()]
    return "*jitgate* approvals from Slack:\n" + "\n".join(rows)


def usage_text(sub: Subcommand | None, given: str) -> str:
    if sub is None:
        return f":warning: Unknown sub-command `{mrkdwn(given, 40)}`.\n" + help_text()
    return f":warning: Usage: `{escape(sub.usage)}`"


class SlashCommand:
    """``/jit``: ack within Slack's 3 seconds, answer ephemerally."""

    def __init__(self, desk: "SlackDesk") -> None:
        self.desk = desk

    def register(self, app: "AsyncApp") -> None:
        app.command(COMMAND)(self.handle)

    async def handle(self, ack, command, respond) -> None:
        text = (command.get("text") or "").strip()
        name, _, rest = text.partition(" ")
        sub = SUBCOMMANDS.get(name.lower() or "help")
        if sub is None:
            await ack(text=usage_text(None, name), response_type="ephemeral")
            return
        try:
            args = sub.parse(rest)
        except ValueError:  # Usage, or a parser's own "does not fit"
            await ack(text=usage_text(sub, name), response_type="ephemeral")
            return
        if sub.run is None:
            await ack(text=help_text(), response_type="ephemeral")
            return
        await ack()
        user = str(command.get("user_id") or "")
        try:
            approver = await self.desk.approver(user)
            if sub.interactive:
                answer = await sub.run(self.desk, approver, args, user, command)
            else:
                answer = await sub.run(self.desk, approver, args, user)
        except BrokerError as e:
            answer = error_text(e)
        if answer:
            await respond(text=answer, response_type="ephemeral", replace_original=False)
