"""Requests, proposals, evidence, approvals and states: plain values, validated once.

A proposal is immutable once submitted; its canonical SHA-256 binds approvals and the
token to exactly what people saw.
"""

from __future__ import annotations

import decimal
import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from .errors import InvalidRequest

PENDING, APPROVED, ACTIVE = "pending", "approved", "active"
COMPLETED, REVOKED, EXPIRED, DENIED, CANCELLED = "completed", "revoked", "expired", "denied", "cancelled"
STATES = (PENDING, APPROVED, ACTIVE, COMPLETED, REVOKED, EXPIRED, DENIED, CANCELLED)
TERMINAL = frozenset({COMPLETED, REVOKED, EXPIRED, DENIED, CANCELLED})

# Per-field caps. Chat platforms cap text objects at 3000 characters; the API caps a
# little below what any desk can show so nothing an approver must read is cut silently.
MAX_ACTION = 64
MAX_NAME = 200
MAX_JUSTIFICATION = 4000
MAX_EVIDENCE_ITEMS = 20
MAX_EVIDENCE_TITLE = 200
MAX_EVIDENCE_EXCERPT = 2000
MAX_URL = 2000
MAX_DURATION_S = 7 * 86400
# Delegation links are compact JWS strings; the broker verifies them (identity/delegation.py). The
# caps bound the work a chain can cause before any signature is checked.
MAX_DELEGATION_LINKS = 8
MAX_DELEGATION_CHARS = 4096
# ``arguments``: what the agent will pass to its tool, a JSON object shown to approvers, hashed,
# put in the token and given to Cedar (policy.proposal_context). Bounded so that every desk can
# show it whole (Slack: 3000 characters a text) and Cedar's work stays small: its compact JSON, and how deep it nests.
MAX_ARGUMENTS_BYTES = 2048
MAX_ARGUMENTS_DEPTH = 4
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_DECIMAL_MAX = decimal.Decimal("922337203685477.5807")  # Cedar's decimal: a 64-bit integer of 1/10000
_JWS_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")

# '/' for the MCP gateway's default actions, ``mcp:<server>/<tool>`` (issue 20).
_ACTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
# Actions the broker itself asks policy about (``delegate``: may this agent hand work to
# that one?). A permit for them answers a question the broker asks, not a proposal: an
# agent proposing one would turn a delegation permit into a token for another agent.
INTERNAL_ACTIONS = frozenset({"delegate"})
_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_ID_RE = re.compile(r"^[A-Za-z0-9]{8,64}$")

PROPOSAL_FIELDS = frozenset(
    {"action", "target", "justification", "evidence", "duration_s", "tool", "dataset", "arguments", "confidence", "ticket",
     "delegation"}
)
EVIDENCE_FIELDS = frozenset({"kind", "title", "url", "excerpt"})


def iso(ts: float | None) -> str | None:
    """RFC 3339 UTC timestamp with milliseconds, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_request_id(value: str) -> str:
    """A request id as minted by the broker; anything else is a 404, never a key lookup."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise InvalidRequest("malformed escalation id")
    return value


def _text(body: dict, name: str, cap: int, *, required: bool, multiline: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string")
    value = value.strip()
    if required and not value:
        raise InvalidRequest(f"'{name}' must not be empty")
    if len(value) > cap:
        raise InvalidRequest(f"'{name}' is longer than {cap} characters")
    bad = _CONTROL_RE.search(value if not multiline else value.replace("\n", " ").replace("\t", " "))
    if bad or (not multiline and ("\n" in value or "\t" in value)):
        raise InvalidRequest(f"'{name}' contains control characters")
    return value or None


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence: what kind, a title, and a link or a short excerpt."""

    kind: str
    title: str
    url: str | None = None
    excerpt: str | None = None

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "title": self.title}
        if self.url is not None:
            d["url"] = self.url
        if self.excerpt is not None:
            d["excerpt"] = self.excerpt
        return d

    @classmethod
    def parse(cls, raw: Any, index: int) -> "Evidence":
        where = f"evidence[{index}]"
        if not isinstance(raw, dict):
            raise InvalidRequest(f"{where} must be an object")
        unknown = set(raw) - EVIDENCE_FIELDS
        if unknown:
            raise InvalidRequest(f"{where} has unknown field(s): {', '.join(sorted(unknown))}")
        try:
            kind = _text(raw, "kind", 32, required=True)
            title = _text(raw, "title", MAX_EVIDENCE_TITLE, required=True)
            url = _text(raw, "url", MAX_URL, required=False)
            excerpt = _text(raw, "excerpt", MAX_EVIDENCE_EXCERPT, required=False, multiline=True)
        except InvalidRequest as e:
            raise InvalidRequest(f"{where}: {e.detail}") from None
        if not _KIND_RE.match(kind):
            raise InvalidRequest(f"{where}: 'kind' must be lower-case letters, digits, '.', '_' or '-'")
        if url is not None and not re.match(r"^https?://[^\s]+$", url):
            raise InvalidRequest(f"{where}: 'url' must be an http(s) URL")
        if url is None and excerpt is None:
            raise InvalidRequest(f"{where} needs a 'url' or an 'excerpt'")
        return cls(kind=kind, title=title, url=url, excerpt=excerpt)


class ReservedAction(InvalidRequest):
    """A proposal for an action only the broker asks policy about (``INTERNAL_ACTIONS``)."""

    code, title = "reserved-action", "Reserved action"


class NotAllowedForTarget(InvalidRequest):
    """The proposal names a tool or dataset its target's entry in the targets file does not list."""

    code, title = "not-allowed-for-target", "Tool or dataset not allowed for this target"


class ArgumentsTooLarge(InvalidRequest):
    """``arguments`` is larger or nests deeper than the broker accepts."""

    code, title = "arguments-too-large", "Arguments too large"


class InvalidArguments(InvalidRequest):
    """``arguments`` holds something that has no faithful policy value (see :func:`check_arguments`)."""

    code, title = "invalid-arguments", "Invalid arguments"


def number_value(value: float) -> int | str | None:
    """A JSON number that is not an integer, as policy compares it: a whole value (``500.0``)
    as an integer, another (``499.99``) as the text of a Cedar ``decimal`` (four decimal
    places at most, within its range), or None when neither is exact."""
    if not math.isfinite(value):
        return None
    d = decimal.Decimal(repr(value))
    if d == d.to_integral_value():
        n = int(d)
        return n if _LONG_MIN <= n <= _LONG_MAX else None
    if d.as_tuple().exponent < -4 or abs(d) > _DECIMAL_MAX:  # type: ignore[operator]
        return None
    return format(d, "f")


def check_arguments(value: Any) -> dict:
    """Validate a proposal's ``arguments``: a JSON object of at most :data:`MAX_ARGUMENTS_BYTES`
    (compact JSON) nesting at most :data:`MAX_ARGUMENTS_DEPTH` objects or lists deep, whose
    values are strings, integers in Cedar's 64-bit range, finite numbers, booleans, lists and
    objects. Refused (each a 400 naming the path): ``null`` (Cedar has no null: leave the key
    out), keys beginning with ``__`` (Cedar's JSON reads ``__entity``/``__extn`` as entity
    references and extension values, which would let an agent forge them), and strings with
    control characters other than tab and newline."""
    if not isinstance(value, dict):
        raise InvalidArguments("'arguments' must be a JSON object")
    _check_argument(value, "arguments", 1)  # first: it stops at the depth limit, so nothing below recurses deeper
    size = len(orjson.dumps(value))
    if size > MAX_ARGUMENTS_BYTES:
        raise ArgumentsTooLarge(f"'arguments' is {size} bytes as compact JSON; at most {MAX_ARGUMENTS_BYTES} are accepted")
    return value


def _check_argument(value: Any, where: str, depth: int) -> None:
    if isinstance(value, (dict, list)) and depth > MAX_ARGUMENTS_DEPTH:
        raise ArgumentsTooLarge(f"'{where}' nests deeper than {MAX_ARGUMENTS_DEPTH} levels of objects and lists")
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("__"):
                raise InvalidArguments(f"'{where}' has key {key!r}: keys beginning with '__' are reserved by Cedar")
            if not key or _CONTROL_RE.search(key):
                raise InvalidArguments(f"'{where}' has an empty key or one with control characters")
            _check_argument(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_argument(item, f"{where}[{i}]", depth + 1)
    elif value is None:
        raise InvalidArguments(f"'{where}' is null; policies have no null, leave the key out instead")
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise InvalidArguments(f"'{where}' is outside the 64-bit integer range policies compare")
    elif isinstance(value, float):
        if number_value(value) is None:
            raise InvalidArguments(f"'{where}' is a number policies cannot compare: a whole number in the 64-bit "
                                   "range, or at most 4 decimal places below 922337203685477 (send amounts as "
                                   "integers of the smallest unit, or as strings, to be safe)")
    elif isinstance(value, str):
        if _CONTROL_RE.search(value.replace("\n", " ").replace("\t", " ")):
            raise InvalidArguments(f"'{where}' contains control characters")
    else:  # pragma: no cover - JSON has nothing else
        raise InvalidArguments(f"'{where}' has an unsupported type")


@dataclass(frozen=True)
class Proposal:
    """What an agent asks for, exactly as submitted (immutable)."""

    action: str
    target: str
    justification: str
    duration_s: int
    evidence: tuple[Evidence, ...] = ()
    tool: str | None = None
    dataset: str | None = None
    confidence: float | None = None
    ticket: str | None = None
    delegation: tuple = ()
    arguments: dict | None = field(default=None, hash=False)

    @classmethod
    def parse(cls, body: Any) -> "Proposal":
        """Validate a proposal body; raise :class:`InvalidRequest` naming the first bad field."""
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object")
        unknown = set(body) - PROPOSAL_FIELDS
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        action = _text(body, "action", MAX_ACTION, required=True)
        if not _ACTION_RE.match(action):
            raise InvalidRequest("'action' may hold letters, digits, '.', '_', ':', '/' and '-' only")
        if action in INTERNAL_ACTIONS:
            raise ReservedAction(f"'{action}' is an action the broker uses internally and cannot be requested; "
                                 "to let another agent act, sign a delegation link and send it in 'delegation'")
        target = _text(body, "target", MAX_NAME, required=True)
        justification = _text(body, "justification", MAX_JUSTIFICATION, required=True, multiline=True)
        duration = body.get("duration_s")
        if isinstance(duration, bool) or not isinstance(duration, int):
            raise InvalidRequest("'duration_s' is required and must be an integer number of seconds")
        if not 1 <= duration <= MAX_DURATION_S:
            raise InvalidRequest(f"'duration_s' must be between 1 and {MAX_DURATION_S}")
        raw_evidence = body.get("evidence", [])
        if not isinstance(raw_evidence, list):
            raise InvalidRequest("'evidence' must be a list")
        if len(raw_evidence) > MAX_EVIDENCE_ITEMS:
            raise InvalidRequest(f"'evidence' may hold at most {MAX_EVIDENCE_ITEMS} items")
        evidence = tuple(Evidence.parse(item, i) for i, item in enumerate(raw_evidence))
        confidence = body.get("confidence")
        if confidence is not None:
            if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not math.isfinite(confidence):
                raise InvalidRequest("'confidence' must be a number between 0 and 1")
            if not 0 <= confidence <= 1:
                raise InvalidRequest("'confidence' must be between 0 and 1")
            confidence = float(confidence)
        arguments = body.get("arguments")
        if arguments is not None:
            arguments = check_arguments(arguments)
        delegation = body.get("delegation", [])
        if not isinstance(delegation, list):
            raise InvalidRequest("'delegation' must be a list of signed delegation links (compact JWS), root first")
        if len(delegation) > MAX_DELEGATION_LINKS:
            raise InvalidRequest(f"'delegation' may hold at most {MAX_DELEGATION_LINKS} links")
        for i, link in enumerate(delegation):
            if not isinstance(link, str) or len(link) > MAX_DELEGATION_CHARS or not _JWS_RE.match(link):
                raise InvalidRequest(f"delegation[{i}] must be a signed delegation link (a compact JWS of at most "
                                     f"{MAX_DELEGATION_CHARS} characters)")
        return cls(
            action=action,
            target=target,
            justification=justification,
            duration_s=duration,
            evidence=evidence,
            tool=_text(body, "tool", MAX_NAME, required=False),
            dataset=_text(body, "dataset", MAX_NAME, required=False),
            confidence=confidence,
            ticket=_text(body, "ticket", MAX_NAME, required=False),
            delegation=tuple(delegation),
            arguments=arguments,
        )

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "action": self.action,
            "target": self.target,
            "justification": self.justification,
            "duration_s": self.duration_s,
            "evidence": [e.to_dict() for e in self.evidence],
        }
        for name in ("tool", "dataset", "arguments", "confidence", "ticket"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        d["delegation"] = list(self.delegation)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Proposal":
        return cls(
            action=d["action"],
            target=d["target"],
            justification=d["justification"],
            duration_s=int(d["duration_s"]),
            evidence=tuple(Evidence(**e) for e in d.get("evidence", [])),
            tool=d.get("tool"),
            dataset=d.get("dataset"),
            confidence=d.get("confidence"),
            ticket=d.get("ticket"),
            delegation=tuple(d.get("delegation", [])),
            arguments=d.get("arguments"),
        )

    def sha256(self) -> str:
        """Canonical SHA-256 of what approvers approve (sorted keys, no whitespace, UTF-8)."""
        canonical = {
            "action": self.action,
            "target": self.target,
            "tool": self.tool,
            "dataset": self.dataset,
            "duration_s": self.duration_s,
            "justification": self.justification,
            "evidence": [e.to_dict() for e in self.evidence],
            "delegation": list(self.delegation),
        }
        if self.arguments is not None:  # absent before arguments existed: older proposals hash the same
            canonical["arguments"] = self.arguments
        return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def task_sha256(self) -> str:
        """SHA-256 of the task alone: what is done, where, with which tool, dataset and arguments,
        and for whom (the delegation), without the agent's words about it (justification,
        evidence, confidence, ticket) or the duration. Two proposals with the same task are one
        request to people (issue 19, item 1: dedupe)."""
        task = {k: v for k, v in self.to_dict().items() if k not in _NOT_THE_TASK}
        return hashlib.sha256(orjson.dumps(task, option=orjson.OPT_SORT_KEYS)).hexdigest()

    @property
    def confidence_pct(self) -> int:
        """Confidence as an integer percentage for Cedar (no floats there); unknown counts as 0."""
        return 0 if self.confidence is None else int(math.floor(self.confidence * 100 + 1e-9))


# Proposal fields that say why or how long, not what: left out of Proposal.task_sha256.
_NOT_THE_TASK = frozenset({"justification", "evidence", "confidence", "ticket", "duration_s"})


@dataclass(frozen=True)
class Approval:
    """One counted approval."""

    approver: str
    channel: str
    at: float
    platform_user: str | None = None
    duration_s: int | None = None

    def to_dict(self) -> dict:
        d = {"approver": self.approver, "channel": self.channel, "at": iso(self.at)}
        if self.platform_user:
            d["platform_user"] = self.platform_user
        if self.duration_s is not None:
            d["duration_s"] = self.duration_s
        return d


@dataclass
class Request:
    """An escalation request as stored in Redis (one hash per request)."""

    id: str
    agent: str
    status: str
    proposal: Proposal
    proposal_sha256: str
    decision: dict
    created_at: float
    deadline: float | None = None
    approvals: list[dict] = field(default_factory=list)
    denial: dict | None = None
    owner: str | None = None
    approved_duration_s: int | None = None
    grant_jti: str | None = None
    grant_exp: float | None = None
    grant_end: float | None = None  # fixed when the grant was approved: no token lives past it
    collected_at: float | None = None
    closed_at: float | None = None
    closed_by: str | None = None
    close_reason: str | None = None
    break_glass: bool = False
    escalated: bool = False
    engineer: str | None = None  # break-glass: who broke the glass
    incident: str | None = None
    review_due: float | None = None
    reviewed_by: str | None = None
    review_comment: str | None = None
    messages: list[dict] = field(default_factory=list)
    version: int = 0
    # The verified delegation chain, root first (identity.DelegationLink.to_dict()), and
    # when its earliest link expires: the grant never outlives it.
    delegation_chain: list[dict] = field(default_factory=list)
    delegation_exp: float | None = None
    # What credential was issued in the target system at collection (plugin, handle,
    # fingerprint, expires_at; never the secret): broker/credentials.
    credential: dict | None = None
    # The same task proposed again while pending (issue 19, item 1): how often, and the last
    # few repeats that said something new (when, and the new justification and/or evidence).
    asked_again: int = 0
    repeats: list[dict] = field(default_factory=list)
    # The recent denial this proposal looks like a way around (issue 19, item 3: alternate
    # paths): {"request", "by", "reason", "at", "action", "target", "why"}; None when not linked.
    linked_to: dict | None = None
    # The agent's recent history when it proposed this (issue 19, item 5: broker/history.py).
    history: dict | None = None
    # The content hash of the policy set that made the submit decision (issue 18, item 5).
    policy_set_hash: str | None = None
    # What the agent reported when it completed the task (issue 18, item 6; :func:`parse_outcome`).
    outcome: dict | None = None

    @classmethod
    def from_redis(cls, h: dict[bytes, bytes]) -> "Request":
        g = {k.decode(): v.decode() for k, v in h.items()}

        def f(name):
            v = g.get(name)
            return float(v) if v not in (None, "") else None

        def j(name, default):
            v = g.get(name)
            return orjson.loads(v) if v not in (None, "") else default

        approvals = j("approvals", [])
        return cls(
            id=g["id"],
            agent=g["agent"],
            status=g["status"],
            proposal=Proposal.from_dict(orjson.loads(g["proposal"])),
            proposal_sha256=g["proposal_sha256"],
            decision=j("decision", {}),
            created_at=float(g["created_at"]),
            deadline=(float(g["deadline_ms"]) / 1000) if g.get("deadline_ms") else None,
            approvals=approvals if isinstance(approvals, list) else [],
            denial=j("denial", None),
            owner=g.get("owner") or None,
            approved_duration_s=int(g["approved_duration_s"]) if g.get("approved_duration_s") else None,
            grant_jti=g.get("grant_jti") or None,
            grant_exp=f("grant_exp"),
            grant_end=(float(g["grant_end_ms"]) / 1000) if g.get("grant_end_ms") else None,
            collected_at=f("collected_at"),
            closed_at=f("closed_at"),
            closed_by=g.get("closed_by") or None,
            close_reason=g.get("close_reason") or None,
            break_glass=g.get("break_glass") == "1",
            escalated=g.get("escalated") == "1",
            engineer=g.get("engineer") or None,
            incident=g.get("incident") or None,
            review_due=f("review_due"),
            reviewed_by=g.get("reviewed_by") or None,
            review_comment=g.get("review_comment") or None,
            messages=j("messages", []),
            version=int(g.get("version", "0")),
            delegation_chain=j("delegation_chain", []),
            delegation_exp=f("delegation_exp"),
            credential=j("credential", None),
            asked_again=int(g.get("asked_again") or 0),
            repeats=j("repeats", []),
            linked_to=j("linked_to", None),
            history=j("history", None),
            policy_set_hash=g.get("policy_set_hash") or None,
            outcome=j("outcome", None),
        )

    @property
    def approvers(self) -> list[str]:
        return [a["approver"] for a in self.approvals]

    def to_public(self) -> dict:
        """The escalation as the API returns it (the contract in docs/api.md)."""
        d: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "agent": self.agent,
            "action": self.proposal.action,
            "target": self.proposal.target,
            "proposal": self.proposal.to_dict(),
            "proposal_sha256": self.proposal_sha256,
            "decision": self.decision,
            "approvals": self.approvals,
            "approvals_required": self.decision.get("approvals_required", 0),
            "denial": self.denial,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.deadline) if self.status not in TERMINAL else None,
            "break_glass": self.break_glass,
            "escalated": self.escalated,
            "policy_set_hash": self.policy_set_hash,
        }
        if self.outcome is not None:
            d["outcome"] = self.outcome
        if self.asked_again:
            d["asked_again"] = self.asked_again
        if self.linked_to:
            d["linked_to"] = self.linked_to
        if self.approved_duration_s is not None:
            d["approved_duration_s"] = self.approved_duration_s
        if self.delegation_chain:
            d["delegation_chain"] = self.delegation_chain
        if self.grant_exp is not None:
            d["grant"] = {"jti": self.grant_jti, "expires_at": iso(self.grant_exp), "collected_at": iso(self.collected_at)}
            if self.credential:
                d["grant"]["credential"] = self.credential
        if self.break_glass:
            d["break_glass_detail"] = {
                "engineer": self.engineer, "incident": self.incident, "review_due": iso(self.review_due),
                "reviewed_by": self.reviewed_by, "review_comment": self.review_comment,
            }
        if self.status in TERMINAL and self.status != DENIED:
            d["closed"] = {"at": iso(self.closed_at), "by": self.closed_by, "reason": self.close_reason}
        return d


# --------------------------------------------------------------------------- the resulting action
OUTCOME_STATUSES = ("success", "failure")
MAX_OUTCOME_SUMMARY = 500
MAX_OUTCOME_EVIDENCE = 10
MAX_OUTCOME_URL = 2048
_HTTPS_URL = re.compile(r"^https://[^\s]+$")


def parse_outcome(body: Any) -> dict | None:
    """The optional body of ``POST /v1/escalations/{id}/complete`` (issue 18, item 6):
    ``{"outcome": {"status": "success"|"failure", "summary": "…", "evidence": ["https://…"]}}``.

    Returns the outcome as recorded (``status``; ``summary`` and ``evidence`` when given), or
    None for no outcome (an empty body, ``{}``, or ``{"outcome": null}``). Anything else, an
    unknown key included, raises :class:`InvalidRequest`: at most 500 characters of summary (no
    control characters but newlines and tabs), at most 10 evidence links, each an ``https://``
    URL of at most 2048 characters."""
    if body is None:
        return None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object: {\"outcome\": {...}}")
    unknown = sorted(set(body) - {"outcome"})
    if unknown:
        raise InvalidRequest(f"unknown field(s) in the body: {', '.join(unknown)[:200]}")
    raw = body.get("outcome")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidRequest("'outcome' must be an object")
    unknown = sorted(set(raw) - {"status", "summary", "evidence"})
    if unknown:
        raise InvalidRequest(f"unknown field(s) in 'outcome': {', '.join(unknown)[:200]}")
    status = raw.get("status")
    if status not in OUTCOME_STATUSES:
        raise InvalidRequest("'outcome.status' must be \"success\" or \"failure\"")
    out: dict[str, Any] = {"status": status}
    summary = raw.get("summary")
    if summary is not None:
        if not isinstance(summary, str):
            raise InvalidRequest("'outcome.summary' must be a string")
        summary = summary.strip()
        if len(summary) > MAX_OUTCOME_SUMMARY:
            raise InvalidRequest(f"'outcome.summary' is longer than {MAX_OUTCOME_SUMMARY} characters")
        if _CONTROL_RE.search(summary.replace("\n", " ").replace("\t", " ")):
            raise InvalidRequest("'outcome.summary' contains control characters")
        if summary:
            out["summary"] = summary
    evidence = raw.get("evidence")
    if evidence is not None:
        if not isinstance(evidence, list):
            raise InvalidRequest("'outcome.evidence' must be a list of https:// links")
        if len(evidence) > MAX_OUTCOME_EVIDENCE:
            raise InvalidRequest(f"'outcome.evidence' has more than {MAX_OUTCOME_EVIDENCE} links")
        for i, url in enumerate(evidence):
            if not isinstance(url, str) or len(url) > MAX_OUTCOME_URL or not _HTTPS_URL.match(url) \
                    or _CONTROL_RE.search(url):
                raise InvalidRequest(f"'outcome.evidence[{i}]' must be an https:// URL of at most "
                                     f"{MAX_OUTCOME_URL} characters")
        if evidence:
            out["evidence"] = list(evidence)
    return out
