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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from broker.directory import Approver
from broker.errors import BrokerError
from broker.model import check_request_id

from bot import render
from bot.commands import POSTURES, id_and_reason, no_args, parse_breakglass, posture_level, request_id

from . import cards
from .breakglass import (BREAKGLASS_USAGE, REINSTATE_USAGE, parse_person, run_breakglass,
                         run_reinstate, run_reviews)
from .replies import Answer, Turn, Usage, error_answer, unbound_answer

if TYPE_CHECKING:
    from .desk import TeamsDesk

CHANNEL = "teams"
LIST_LIMIT = 20
_MENTION = re.compile(r"<at[^>]*>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    parse: Callable[[str], Any]
    run: Callable[..., Awaitable[Answer]] | None  # None: needs no approver
    interactive: bool = False  # run also gets the Turn (where and by whom the command was typed)


def command_text(raw: str | None) -> str:
    """The command a person typed: without the bot's @mention and Teams' HTML."""
    text = _MENTION.sub(" ", raw or "")
    text = html.unescape(_TAGS.sub(" ", text)).replace("\xa0", " ")
    return " ".join(text.split())


async def _list(desk: "TeamsDesk", approver: Approver, _args: None, user: str) -> Answer:
    reqs = await desk.broker.lifecycle.pending_for(approver, limit=LIST_LIMIT)
    if not reqs:
        return Answer("Nothing is waiting for you.")
    lines = []
    for r in reqs:
        p = r.proposal
        lines.append(f"{r.id}: {r.agent} wants to {p.action} on {p.target} for {render.fmt_duration(p.duration_s)}; "
                     f"{len(r.approvals)} of {render.approvals_required(r)} approvals, expires {render.fmt_time(r.deadline)}")
    more = "+" if len(reqs) >= LIST_LIMIT else ""
    return Answer(f"Waiting for you ({len(reqs)}{more}):", tuple(lines))


async def _status(desk: "TeamsDesk", approver: Approver, rid: str, user: str) -> Answer:
    r = await desk.broker.lifecycle.get(check_request_id(rid))
    return Answer(card=cards.proposal_card(r, max_duration_s=desk.settings.max_duration_s, actions=False, refresh=False))


async def _revoke(desk: "TeamsDesk", approver: Approver, args: tuple[str, str], user: str) -> Answer:
    rid, reason = args
    r = await desk.broker.lifecycle.revoke_as(check_request_id(rid), approver, reason=reason, channel=CHANNEL,
                                              platform_user=user)
    return Answer(f"Revoked {r.id}: {r.close_reason or ''}")


async def _posture(desk: "TeamsDesk", approver: Approver, level: str | None, user: str) -> Answer:
    life = desk.broker.lifecycle
    if level is None:
        return Answer(f"Risk posture is {await life.posture()}.")
    await life.set_posture(level, approver, channel=CHANNEL)
    return Answer(f"Risk posture is now {level}; every new policy decision sees it.")


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("list", "list", "requests waiting for your approval", no_args, _list),
    Command("status", "status <id>", "where a request stands", request_id, _status),
    Command("revoke", "revoke <id> [reason]",
            "end a grant now (its approvers, its owner, security; a break-glass grant: its engineer too)",
            id_and_reason, _revoke),
    Command("posture", f"posture [{'|'.join(POSTURES)}]", "show or set the risk posture (security group)",
            posture_level, _posture),
    Command("breakglass", BREAKGLASS_USAGE,
            "emergency access at once (on-call group), confirmed on a card; security is told and must review it. "
            "Duration like 30m, 1h, 900s; 'me' sends the token to your personal chat", parse_breakglass,
            run_breakglass, interactive=True),
    Command("breakglass-reinstate", REINSTATE_USAGE,
            "restore a break-glass right suspended for an unreviewed grant (security group)", parse_person,
            run_reinstate),
    Command("reviews", "reviews", "open break-glass reviews (security group: all; others: their own)", no_args,
            run_reviews),
    Command("help", "help", "this text", no_args, None),
    # The manifest's commandLists (manifests/teams/manifest.json) are generated from this table.
)}


def help_answer(aad_object_id: str | None, conversation_id: str | None) -> Answer:
    lines = [f"{c.usage}: {c.summary}" for c in COMMANDS.values()]
    lines.append(f"Your Entra object id: {aad_object_id or 'unknown'} (an admin binds it to your approver entry "
                 "as `teams:` in the approvers file).")
    if conversation_id:
        lines.append(f"This conversation's id: {conversation_id} (TEAMS_APPROVALS_CONVERSATION may name it).")
    return Answer("jitgate approvals in Teams. Commands:", tuple(lines))


async def run_command(desk: "TeamsDesk", text: str, approver: Approver | None, aad_object_id: str | None,
                      conversation_id: str | None, turn: Turn | None = None) -> Answer:
    """Parse and run one command; every outcome is an answer, never an exception."""
    name, _, rest = command_text(text).partition(" ")
    cmd = COMMANDS.get(name.lower() or "help")
    if cmd is None:
        head = help_answer(aad_object_id, conversation_id)
        return Answer(f"Unknown command '{name[:40]}'. " + head.text, head.lines)
    try:
        args = cmd.parse(rest)
    except Usage:
        return Answer(f"Usage: {cmd.usage}")
    if cmd.run is None:
        return help_answer(aad_object_id, conversation_id)
    if approver is None:
        return unbound_answer(aad_object_id)
    try:
        if cmd.interactive:
            if turn is None:
                return Answer(f"{cmd.name} works only when typed to the bot in Teams.")
            return await cmd.run(desk, approver, args, aad_object_id or "", turn)
        return await cmd.run(desk, approver, args, aad_object_id or "")
    except BrokerError as e:
        return error_answer(e)
