"""The chat commands every desk offers (Slack's ``/jit``, the Teams bot) and their neutral
handlers: each parses nothing platform-specific, calls the core and returns a :class:`Reply`
that the desk formats (Block Kit text in Slack, a card or text in Teams).

The break-glass commands (``breakglass``, ``breakglass-reinstate``) have their neutral
runners in :mod:`bot.kit.breakglass` and ``reviews`` here; each desk wraps them (a modal or a
card is the desk's), and their place in the table is given by :func:`table`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping

from broker.breakglass import BreakGlass
from broker.directory import Approver
from broker.errors import (BrokerError, Conflict, DeadlinePassed, Forbidden, InvalidRequest, NotApprover, NotFound,
                           PolicyDenied)
from broker.lifecycle import Lifecycle
from broker.model import Request, check_request_id
from broker.rules import POSTURES

from bot.commands import ConfirmArgs, KillArgs, Usage, no_args, posture_level, request_id, revoke_args
from bot.kit import killswitch

LIST_LIMIT = 20
REVIEWS_LIMIT = 20


class ErrorKind(enum.Enum):
    """How a desk should say a broker error: the class decides, never the text."""

    FORBIDDEN = "forbidden"
    POLICY_DENIED = "policy_denied"  # the policies, deciding again, refused: the request was denied
    TOO_LATE = "too_late"
    UNCHANGED = "unchanged"
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    OTHER = "other"


def error_kind(e: BrokerError) -> ErrorKind:
    """The kind of a broker error (a DeadlinePassed is a Conflict, but the request did change;
    a PolicyDenied is a Forbidden, but the request was denied by it)."""
    if isinstance(e, PolicyDenied):
        return ErrorKind.POLICY_DENIED
    if isinstance(e, (NotApprover, Forbidden)):
        return ErrorKind.FORBIDDEN
    if isinstance(e, DeadlinePassed):
        return ErrorKind.TOO_LATE
    if isinstance(e, Conflict):
        return ErrorKind.UNCHANGED
    if isinstance(e, NotFound):
        return ErrorKind.NOT_FOUND
    if isinstance(e, InvalidRequest):
        return ErrorKind.INVALID
    return ErrorKind.OTHER


@dataclass(frozen=True)
class Caller:
    """Who typed the command: the bound approver, the platform user id (recorded in the
    audit entry) and the desk's channel name."""

    approver: Approver
    user: str
    channel: str


@dataclass(frozen=True)
class Reply:
    """A command's neutral answer. ``requests`` are the requests it is about (``more``: the
    list was cut at LIST_LIMIT); ``posture`` is the posture shown or set (``changed``: set)."""

    lines: tuple[str, ...] = ()
    requests: tuple[Request, ...] = ()
    more: bool = False
    posture: str | None = None
    changed: bool = False
    everyone: bool = False  # reviews: the caller sees everyone's, not only their own
    error: ErrorKind | None = None
    code: str | None = None  # the kill switch: the one-time code ``revoke confirm`` takes


async def list_pending(life: Lifecycle, caller: Caller, _args: None) -> Reply:
    """The requests the caller may still decide, at most LIST_LIMIT of them."""
    reqs = await life.pending_for(caller.approver, limit=LIST_LIMIT)
    return Reply(requests=tuple(reqs), more=len(reqs) >= LIST_LIMIT)


async def status(life: Lifecycle, caller: Caller, rid: str) -> Reply:
    """One request as it stands (NotFound, InvalidRequest for a malformed id)."""
    return Reply(requests=(await life.get(check_request_id(rid)),))


async def revoke(life: Lifecycle, caller: Caller, args: "tuple[str, str] | KillArgs | ConfirmArgs") -> Reply:
    """End a grant now; the lifecycle decides whether the caller may. The kill switch
    (``agent|owner|target <name> <reason>``, ``all <reason>``) first answers what would end with
    a one-time code (``lines``, ``code``); ``confirm <code>`` pulls it (``lines``: the summary)."""
    if isinstance(args, KillArgs):
        said, code = await killswitch.ask(life, caller.approver, caller.user, caller.channel, args)
        return Reply(lines=(said,), code=code)
    if isinstance(args, ConfirmArgs):
        return Reply(lines=(await killswitch.confirm(life, caller.approver, caller.user, caller.channel, args),))
    rid, reason = args
    r = await life.revoke_as(check_request_id(rid), caller.approver, reason=reason, channel=caller.channel,
                             platform_user=caller.user)
    return Reply(requests=(r,))


async def posture(life: Lifecycle, caller: Caller, level: str | None) -> Reply:
    """Show the risk posture, or set it (the lifecycle checks the security group)."""
    if level is None:
        return Reply(posture=await life.posture())
    await life.set_posture(level, caller.approver, channel=caller.channel)
    return Reply(posture=level, changed=True)


async def reviews(bg: BreakGlass, caller: Caller, security_group: str) -> Reply:
    """Open break-glass reviews, oldest deadline first: all of them for the security group,
    one's own for others; at most REVIEWS_LIMIT."""
    everyone = security_group in caller.approver.groups
    reqs = await bg.pending_reviews(limit=100)
    if not everyone:
        reqs = [r for r in reqs if r.engineer == caller.approver.id]
    return Reply(requests=tuple(reqs[:REVIEWS_LIMIT]), more=len(reqs) > REVIEWS_LIMIT, everyone=everyone)


Handler = Callable[[Lifecycle, Caller, Any], Awaitable[Reply]]


@dataclass(frozen=True)
class Spec:
    """A command's words: its name, its arguments' usage, what it does, how its arguments
    parse, and its neutral handler (None: a desk runs it, or it needs no approver)."""

    name: str
    args: str
    summary: str
    parse: Callable[[str], Any]
    handler: Handler | None = None

    def usage(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}{' ' + self.args if self.args else ''}"


LIST = Spec("list", "", "requests waiting for your approval", no_args, list_pending)
STATUS = Spec("status", "<id>", "where a request stands", request_id, status)
REVOKE = Spec("revoke", "<id> [reason] | agent|owner|target <name> <reason> | all <reason> | confirm <code>",
              "end a grant now (its approvers, its owner, security; a break-glass grant: its engineer too); "
              "security: the kill switch, ends all of an agent, owner or target, or everything, once confirmed",
              revoke_args, revoke)
POSTURE = Spec("posture", f"[{'|'.join(POSTURES)}]", "show or set the risk posture (security group)",
               posture_level, posture)
REVIEWS_SUMMARY = "open break-glass reviews (security group: all; others: their own)"
REINSTATE_SUMMARY = "restore a break-glass right suspended for an unreviewed grant (security group)"
HELP = Spec("help", "", "this text", no_args)
NEUTRAL = (LIST, STATUS, REVOKE, POSTURE)

@dataclass(frozen=True)
class Command:
    """A row of a desk's command table: its usage as the desk shows it, and its runner (None:
    answered from the text alone). ``interactive``: the runner also gets the desk's own
    context of the command (Slack's slash command, Teams' Turn)."""

    name: str
    usage: str
    summary: str
    parse: Callable[[str], Any]
    run: Callable[..., Awaitable[Any]] | None
    interactive: bool = False


def table(prefix: str, bind: Callable[[Spec], Callable[..., Awaitable[Any]]],
          desk_run: Iterable[Command]) -> dict[str, Command]:
    """A desk's command table in the one order every desk shows: the neutral commands (each
    run by ``bind(spec)``, the desk's wrapper of its handler), the desk-run ones
    (break-glass), then help."""
    rows = [Command(s.name, s.usage(prefix), s.summary, s.parse, bind(s)) for s in NEUTRAL]
    rows += [*desk_run, Command(HELP.name, HELP.usage(prefix), HELP.summary, HELP.parse, None)]
    return {c.name: c for c in rows}


@dataclass(frozen=True)
class Parsed:
    """What a typed command resolved to: ``command`` is None for an unknown name; ``usage``
    is True when the arguments did not fit; otherwise ``args`` are the parsed arguments."""

    name: str
    command: Command | None
    args: Any = None
    usage: bool = False


def parse(commands: Mapping[str, Command], text: str) -> Parsed:
    """Split ``name rest`` (no name: help), look the name up and parse its arguments."""
    name, _, rest = text.strip().partition(" ")
    cmd = commands.get(name.lower() or "help")
    if cmd is None:
        return Parsed(name, None)
    try:
        return Parsed(name, cmd, cmd.parse(rest))
    except ValueError:  # Usage, or a parser's own "does not fit"
        return Parsed(name, cmd, usage=True)


__all__ = ["Caller", "Command", "ErrorKind", "Handler", "LIST_LIMIT", "Parsed", "Reply", "Spec", "Usage", "error_kind",
           "list_pending", "parse", "posture", "reviews", "revoke", "status", "table"]
