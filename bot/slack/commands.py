"""The ``/jit`` slash command: one command, sub-commands in a dispatch table.

Arguments are parsed before the ack, so bad ones get the usage text straight in the
ack (ephemeral by default). Anything that reads or changes state acks first and then
answers through the command's ``response_url`` (ephemeral). Interactive sub-commands
(``breakglass``) also get the command itself, for its ``trigger_id``, and may answer with
a modal instead of text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from broker.directory import Approver
from broker.errors import BrokerError

from bot import render
from bot.commands import no_args, parse_breakglass
from bot.kit import commands as kit
from bot.kit.breakglass import parse_person

from .breakglass import (BREAKGLASS_USAGE, REINSTATE_USAGE,
                         run_breakglass, run_reinstate, run_reviews)
from .listeners import CHANNEL, error_text
from .text import date, escape, mrkdwn

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

    from .parts import Parts

COMMAND = "/jit"
PREFIX = COMMAND + " "


def _list(reply: kit.Reply) -> str:
    if not reply.requests:
        return ":sparkles: Nothing is waiting for you."
    lines = [f"*Waiting for you* ({len(reply.requests)}{'+' if reply.more else ''}):"]
    for r in reply.requests:
        p = r.proposal
        lines.append(
            f"• `{escape(r.id)}` {mrkdwn(r.agent, 100)} → *{mrkdwn(p.action, 64)}* on {mrkdwn(p.target, 200)} "
            f"for {render.fmt_duration(p.duration_s)}; {len(r.approvals)} of {render.approvals_required(r)}, "
            f"expires {date(r.deadline, render.fmt_time(r.deadline))}")
    return "\n".join(lines)


def _status(reply: kit.Reply) -> str:
    r = reply.requests[0]
    p = r.proposal
    lines = [
        f"`{escape(r.id)}`: {mrkdwn(r.agent, 100)} → *{mrkdwn(p.action, 64)}* on {mrkdwn(p.target, 200)}",
        f"*{escape(r.status.capitalize())}*: {mrkdwn(render.status_line(r), 1000)}",
        f"Policy: {escape(render.verdict(r))}",
    ]
    lines += [f"• {escape(step)}" for step in render.timeline(r)]
    return "\n".join(lines)


def _revoke(reply: kit.Reply) -> str:
    if reply.code:
        return (f":rotating_light: {mrkdwn(reply.lines[0], 1500)}\nTo go on, within 10 minutes: "
                f"`{PREFIX}revoke confirm {escape(reply.code)}`")
    if reply.lines:
        return f":no_entry: {mrkdwn(reply.lines[0], 1500)}"
    r = reply.requests[0]
    return f":no_entry: Revoked `{escape(r.id)}`: {mrkdwn(r.close_reason or '', 600)}"


def _posture(reply: kit.Reply) -> str:
    if not reply.changed:
        return f"Risk posture is *{escape(reply.posture or '')}*."
    return f":shield: Risk posture is now *{escape(reply.posture or '')}*; every new policy decision sees it."


_FORMAT: dict[str, Callable[[kit.Reply], str]] = {"list": _list, "status": _status, "revoke": _revoke,
                                                 "posture": _posture}


def _bind(spec: kit.Spec) -> Callable[..., Awaitable[str]]:
    """A kit command run by its neutral handler, its reply formatted as Slack text."""
    handler, fmt = spec.handler, _FORMAT[spec.name]
    assert handler is not None

    async def run(parts: Parts, approver: Approver, args: Any, user: str) -> str:
        return fmt(await handler(parts.ctx.lifecycle, kit.Caller(approver, user, CHANNEL), args))
    return run


SUBCOMMANDS: dict[str, kit.Command] = kit.table(PREFIX, _bind, (
    kit.Command("breakglass", BREAKGLASS_USAGE,
                "emergency access at once (on-call group): duration like 30m, 1h, 900s; you confirm in a dialog, "
                "security is told and must review it", parse_breakglass, run_breakglass, interactive=True),
    kit.Command("breakglass-reinstate", REINSTATE_USAGE, kit.REINSTATE_SUMMARY, parse_person, run_reinstate),
    kit.Command("reviews", PREFIX + "reviews", kit.REVIEWS_SUMMARY, no_args, run_reviews),
))


def help_text() -> str:
    # Usage lines are escaped too: Slack would read `<agent-id|me>` as a link labelled "me".
    rows = [f"• `{escape(s.usage)}`: {escape(s.summary)}" for s in SUBCOMMANDS.values()]
    return "*jitgate* approvals from Slack:\n" + "\n".join(rows)


def usage_text(sub: kit.Command | None, given: str) -> str:
    if sub is None:
        return f":warning: Unknown sub-command `{mrkdwn(given, 40)}`.\n" + help_text()
    return f":warning: Usage: `{escape(sub.usage)}`"


class SlashCommand:
    """``/jit``: ack within Slack's 3 seconds, answer ephemerally."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def register(self, app: "AsyncApp") -> None:
        app.command(COMMAND)(self.handle)

    async def handle(self, ack, command, respond) -> None:
        parsed = kit.parse(SUBCOMMANDS, command.get("text") or "")
        sub, args = parsed.command, parsed.args
        if sub is None or parsed.usage:
            await ack(text=usage_text(sub, parsed.name), response_type="ephemeral")
            return
        if sub.run is None:
            await ack(text=help_text(), response_type="ephemeral")
            return
        await ack()
        user = str(command.get("user_id") or "")
        try:
            approver = await self.parts.approver(user)
            if sub.interactive:
                answer = await sub.run(self.parts, approver, args, user, command)
            else:
                answer = await sub.run(self.parts, approver, args, user)
        except BrokerError as e:
            answer = error_text(e)
        if answer:
            await respond(text=answer, response_type="ephemeral", replace_original=False)
