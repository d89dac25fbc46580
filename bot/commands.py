"""Chat commands' words, parsed the same way on every desk (Slack's `/jit`, the Teams bot):
what each sub-command takes, and the break-glass arguments. Desks only add their own
mention syntax and their own way of answering."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import orjson

from broker.breakglass import ME
from broker.errors import InvalidRequest
from broker.rules import POSTURES

MAX_DURATION_ARG_S = 7 * 86400

_DURATION = re.compile(r"^(\d{1,9})([smh]?)$", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}
# Phones turn "--" into a dash as people type: accept "—incident" and "–incident" too.
_DASH = r"(?:--|\u2014|\u2013)"
_INCIDENT = re.compile(rf"(?:^|\s){_DASH}incident(?:=|\s+)(?!{_DASH})(\S+)")
_INCIDENT_LEFT = re.compile(rf"^{_DASH}incident")


class Usage(ValueError):
    """The arguments do not fit the command: answer with its usage line."""


def no_args(rest: str) -> None:
    if rest.strip():
        raise Usage()


def request_id(rest: str) -> str:
    parts = rest.split()
    if len(parts) != 1:
        raise Usage()
    return parts[0]


def id_and_reason(rest: str) -> tuple[str, str]:
    parts = rest.strip().split(maxsplit=1)
    if not parts:
        raise Usage()
    return parts[0], (parts[1] if len(parts) > 1 else "")


@dataclass(frozen=True)
class KillArgs:
    """``revoke agent|owner|target <name> <reason>`` or ``revoke all <reason>``: the kill switch."""

    scope: str
    value: str
    reason: str


@dataclass(frozen=True)
class ConfirmArgs:
    """``revoke confirm <code>``: go on with the kill switch this code was shown for."""

    code: str


KILL_SCOPES = ("agent", "owner", "target")


def revoke_args(rest: str) -> "tuple[str, str] | KillArgs | ConfirmArgs":
    """``<id> [reason]`` (one grant), the kill switch's ``agent|owner|target <name> <reason>`` or
    ``all <reason>`` (a reason is required; ``--agent`` and the like are accepted too), or
    ``confirm <code>``."""
    parts = rest.strip().split(maxsplit=1)
    if not parts:
        raise Usage()
    word = re.sub(rf"^{_DASH}", "", parts[0]).lower()
    tail = parts[1] if len(parts) > 1 else ""
    if word == "confirm":
        code = tail.split()
        if len(code) != 1:
            raise Usage()
        return ConfirmArgs(code[0])
    if word == "all":
        if not tail.strip():
            raise Usage()
        return KillArgs("all", "", tail.strip())
    if word in KILL_SCOPES:
        named = tail.split(maxsplit=1)
        if len(named) != 2 or not named[1].strip():
            raise Usage()
        return KillArgs(word, named[0], named[1].strip())
    return id_and_reason(rest)


def posture_level(rest: str) -> str | None:
    """None (show the posture) or one of POSTURES."""
    parts = rest.split()
    if not parts:
        return None
    if len(parts) != 1 or parts[0].lower() not in POSTURES:
        raise Usage()
    return parts[0].lower()


def parse_duration(text: str) -> int:
    """``30m``, ``1h``, ``900s`` or bare seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise Usage()
    seconds = int(m[1]) * _UNIT[m[2].lower()]
    if not 1 <= seconds <= MAX_DURATION_ARG_S:
        raise Usage()
    return seconds


@dataclass(frozen=True)
class BreakGlassArgs:
    """The command's parameters: all a confirmation carries, and all it may grant."""

    subject: str
    action: str
    target: str
    duration_s: int
    reason: str
    incident: str | None = None

    def to_json(self) -> str:
        return orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def from_json(cls, raw: str) -> "BreakGlassArgs":
        """Read them back; the core re-validates every value at grant time."""
        unreadable = InvalidRequest("the confirmation's parameters are unreadable; run the command again")
        try:
            d = orjson.loads(raw)
            args = cls(subject=d["subject"], action=d["action"], target=d["target"], duration_s=d["duration_s"],
                       reason=d["reason"], incident=d.get("incident"))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise unreadable from None
        if not all(isinstance(v, str) for v in (args.subject, args.action, args.target, args.reason)) \
                or not isinstance(args.duration_s, int) or isinstance(args.duration_s, bool) \
                or not (args.incident is None or isinstance(args.incident, str)):
            raise unreadable
        return args


def parse_breakglass(rest: str) -> BreakGlassArgs:
    """``<agent-id|me> <action> <target> <duration> <reason…> [--incident <ref>]``; Usage when
    the words do not fit, the reason included. Everything else is the core's to judge."""
    incidents = _INCIDENT.findall(rest)
    if len(incidents) > 1:
        raise Usage()
    text = _INCIDENT.sub(" ", rest).strip()
    if any(_INCIDENT_LEFT.match(w) for w in text.split()):
        raise Usage()  # --incident without a reference
    parts = text.split(maxsplit=4)
    if len(parts) < 5:
        raise Usage()  # the reason is required
    subject, action, target, duration, reason = parts
    return BreakGlassArgs(ME if subject.lower() == ME else subject, action, target, parse_duration(duration),
                          " ".join(reason.split()), incidents[0] if incidents else None)
