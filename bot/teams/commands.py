"""Bot commands, typed to the bot in a chat or @mentioned in a channel: ``list``,
``status <id>``, ``revoke <id> [reason]``, ``posture [level]``, the break-glass commands
(``breakglass``, ``breakglass-reinstate``, ``reviews``: see ``bot.teams.breakglass``) and
``help``.

The same sub-commands and permissions as Slack's ``/jit``: every command but ``help``
needs a bound approver (from the verified activity); revoking and changing the posture
are decided by the lifecycle. Teams has no ephemeral messages in channels, so answers go
in the thread where the command was typed; the personal chat with the bot is private.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from broker.directory import Approver
from broker.errors import BrokerError

from bot import render
from bot.commands import no_args, parse_breakglass
from bot.kit import commands as kit
from bot.kit.breakglass import parse_person

from . import cards
from .breakglass import (BREAKGLASS_USAGE, REINSTATE_USAGE, run_breakglass,
                         run_reinstate, run_reviews)
from .replies import Answer, Turn, error_answer, unbound_answer

if TYPE_CHECKING:
    from .parts import Parts

CHANNEL = "teams"
_MENTION = re.compile(r"<at[^>]*>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")


def command_text(raw: str | None) -> str:
    """The command a person typed: without the bot's @mention and Teams' HTML."""
    text = _MENTION.sub(" ", raw or "")
    text = html.unescape(_TAGS.sub(" ", text)).replace("\xa0", " ")
    return " ".join(text.split())


def _list(parts: "Parts", reply: kit.Reply) -> Answer:
    if not reply.requests:
        return Answer("Nothing is waiting for you.")
    lines = []
    for r in reply.requests:
        p = r.proposal
        lines.append(f"{r.id}: {r.agent} wants to {p.action} on {p.target} for {render.fmt_duration(p.duration_s)}; "
                     f"{len(r.approvals)} of {render.approvals_required(r)} approvals, expires {render.fmt_time(r.deadline)}")
    return Answer(f"Waiting for you ({len(reply.requests)}{'+' if reply.more else ''}):", tuple(lines))


def _status(parts: "Parts", reply: kit.Reply) -> Answer:
    return Answer(card=cards.proposal_card(reply.requests[0], max_duration_s=parts.settings.max_duration_s,
                                           actions=False, refresh=False))


def _revoke(parts: "Parts", reply: kit.Reply) -> Answer:
    if reply.code:
        return Answer(reply.lines[0], (f"To go on, within 10 minutes: revoke confirm {reply.code}",))
    if reply.lines:
        return Answer(reply.lines[0])
    r = reply.requests[0]
    return Answer(f"Revoked {r.id}: {r.close_reason or ''}")


def _posture(parts: "Parts", reply: kit.Reply) -> Answer:
    if not reply.changed:
        return Answer(f"Risk posture is {reply.posture}.")
    return Answer(f"Risk posture is now {reply.posture}; every new policy decision sees it.")


_FORMAT: dict[str, Callable[["Parts", kit.Reply], Answer]] = {"list": _list, "status": _status,
                                                                  "revoke": _revoke, "posture": _posture}


def _bind(spec: kit.Spec) -> Callable[..., Awaitable[Answer]]:
    """A kit command run by its neutral handler, its reply formatted as a Teams answer."""
    handler, fmt = spec.handler, _FORMAT[spec.name]
    assert handler is not None

    async def run(parts: "Parts", approver: Approver, args: Any, user: str) -> Answer:
        return fmt(parts, await handler(parts.ctx.lifecycle, kit.Caller(approver, user, CHANNEL), args))
    return run


# The manifest's commandLists (manifests/teams/manifest.json) are generated from this table.
COMMANDS: dict[str, kit.Command] = kit.table("", _bind, (
    kit.Command("breakglass", BREAKGLASS_USAGE,
                "emergency access at once (on-call group), confirmed on a card; security is told and must review "
                "it. Duration like 30m, 1h, 900s; 'me' sends the token to your personal chat", parse_breakglass,
                run_breakglass, interactive=True),
    kit.Command("breakglass-reinstate", REINSTATE_USAGE, kit.REINSTATE_SUMMARY, parse_person, run_reinstate),
    kit.Command("reviews", "reviews", kit.REVIEWS_SUMMARY, no_args, run_reviews),
))


def help_answer(aad_object_id: str | None, conversation_id: str | None) -> Answer:
    lines = [f"{c.usage}: {c.summary}" for c in COMMANDS.values()]
    lines.append(f"Your Entra object id: {aad_object_id or 'unknown'} (an admin binds it to your approver entry "
                 "as `teams:` in the approvers file).")
    if conversation_id:
        lines.append(f"This conversation's id: {conversation_id} (TEAMS_APPROVALS_CONVERSATION may name it).")
    return Answer("jitgate approvals in Teams. Commands:", tuple(lines))


async def run_command(parts: "Parts", text: str, approver: Approver | None, aad_object_id: str | None,
                      conversation_id: str | None, turn: Turn | None = None) -> Answer:
    """Parse and run one command; every outcome is an answer, never an exception."""
    parsed = kit.parse(COMMANDS, command_text(text))
    cmd, args = parsed.command, parsed.args
    if cmd is None:
        head = help_answer(aad_object_id, conversation_id)
        return Answer(f"Unknown command '{parsed.name[:40]}'. " + head.text, head.lines)
    if parsed.usage:
        return Answer(f"Usage: {cmd.usage}")
    if cmd.run is None:
        return help_answer(aad_object_id, conversation_id)
    if approver is None:
        return unbound_answer(aad_object_id)
    try:
        if cmd.interactive:
            if turn is None:
                return Answer(f"{cmd.name} works only when typed to the bot in Teams.")
            return await cmd.run(parts, approver, args, aad_object_id or "", turn)
        return await cmd.run(parts, approver, args, aad_object_id or "")
    except BrokerError as e:
        return error_answer(e)
