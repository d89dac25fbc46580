"""The rules every desk and the core agree on, each in one place.

Pure functions of a request, its policy decision and the directory: no Redis, no clock, no
I/O. The lifecycle enforces them (``Lifecycle.check_approver``, ``revoke_as``, ``approve``,
``expire``), break-glass asks :func:`suspended_by`, and every desk (Slack, Teams, the
console) asks the same functions which buttons to show, whom to @mention and which durations
to offer, so a desk can never offer what the core would refuse, or hide what it allows.

- who may decide a request: :func:`why_not_decider`, :func:`may_still_decide`, :func:`deciders`
  (the group, the backup group once escalated, never an owner of an agent along the chain of
  intent, each person once under any alias); for a mixed quorum, which group an approval
  counts for and what is still missing: :func:`quorum_slots`, :func:`quorum_missing`;
- who may end a grant early: :func:`why_not_revoker`;
- who may pull the kill switch: :func:`why_not_kill_switch`; a suspended person does nothing:
  :func:`why_suspended`;
- the grant duration cap: :func:`grant_cap`, :func:`approvable_max`;
- risk postures: :data:`POSTURES`, :func:`posture_or_strictest`;
- which tools and datasets a target allows: :func:`why_not_for_target`;
- why a request expired: :func:`expiry_reason`, :func:`expiry_event`;
- whether a break-glass grant suspended its engineer: :func:`suspended_by`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .directory import Approver, Directory, Target, aliases
from .model import ACTIVE, APPROVED, PENDING, Proposal, Request

# ---------------------------------------------------------------------- postures
POSTURES = ("normal", "elevated", "incident")
"""The risk postures every policy decision sees, from the most relaxed to the strictest."""


def fmt_duration(seconds: int | float | None) -> str:
    """A duration as people say it: ``45 s``, ``10 min``, ``1 h 30 min``, ``2 d``."""
    if seconds is None:
        return "unknown"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, rest = divmod(s, 60)
        return f"{m} min" + (f" {rest} s" if rest else "")
    if s < 86400:
        h, rest = divmod(s, 3600)
        return f"{h} h" + (f" {rest // 60} min" if rest // 60 else "")
    d, rest = divmod(s, 86400)
    return f"{d} d" + (f" {rest // 3600} h" if rest // 3600 else "")


def posture_or_strictest(value: str | None) -> str:
    """A stored posture as policy sees it: unset is ``normal``, anything unknown the strictest."""
    if not value:
        return POSTURES[0]
    return value if value in POSTURES else POSTURES[-1]


# ---------------------------------------------------------------------- what a target allows
def why_not_for_target(proposal: Proposal, target: Target | None) -> str | None:
    """Why ``proposal`` may not name its ``tool`` or ``dataset`` on ``target`` (None: it may).

    A target whose entry in the targets file lists ``tools`` (``datasets``) allows exactly
    those, and a proposal on it must name one; without the key, any (or none); an unknown
    target is left to policy."""
    if target is None:
        return None
    for what, allowed, given in (("tool", target.tools, proposal.tool), ("dataset", target.datasets, proposal.dataset)):
        if allowed is None:
            continue
        listed = ", ".join(repr(a) for a in allowed) or "none"
        if given is None:
            return f"target {target.id!r} needs a '{what}', one of: {listed}"
        if given not in allowed:
            return f"{what} {given!r} is not allowed on target {target.id!r}; allowed: {listed}"
    return None


# ---------------------------------------------------------------------- expiry
_EXPIRY_REASON = {PENDING: "no decision before the deadline", APPROVED: "token not collected in time",
                  ACTIVE: "grant ended"}


def expiry_reason(status: str) -> str:
    """Why a request that was ``status`` (pending, approved or active) expired, in the audit log's words."""
    return _EXPIRY_REASON[status]


def expiry_event(status: str) -> str:
    """The audit event type of that expiry: a grant that was in use ends, anything else expires."""
    return "grant.expired" if status == ACTIVE else "request.expired"


# ---------------------------------------------------------------------- the duration cap
def grant_cap(proposal: Proposal, decision: Mapping, approvals: Iterable[Mapping], max_duration_s: int) -> int:
    """The longest grant possible: the requested duration, capped by the policy's maximum, the
    broker's ``max_duration_s`` and every approver's shorter choice among ``approvals``
    (at least one second)."""
    limits = [proposal.duration_s, max_duration_s]
    if decision.get("max_duration_s"):
        limits.append(int(decision["max_duration_s"]))
    limits += [int(a["duration_s"]) for a in approvals if a.get("duration_s")]
    return max(1, min(limits))


def approvable_max(req: Request, max_duration_s: int) -> int:
    """The longest grant an approver of ``req`` may still choose (what ``approve`` accepts)."""
    return grant_cap(req.proposal, req.decision, req.approvals, max_duration_s)


# ---------------------------------------------------------------------- who may decide
OwnerOf = Callable[[str], "str | None"]
"""The owner the agents file names for an agent id now (None: unknown or no owner)."""


def chain_owners(req: Request, extra: Mapping[str, str] | None = None) -> dict[str, tuple[str, ...]]:
    """Who may not decide ``req`` because they own an agent along its chain of intent: approver
    id → the agents they own there (the requesting agent first, then the delegators from the
    nearest to the root). ``extra`` adds owners of delegators whose link recorded none."""
    out: dict[str, list[str]] = {}
    if req.owner:
        out.setdefault(req.owner, []).append(req.agent)
    for link in reversed(req.delegation_chain):
        if not isinstance(link, dict):
            continue
        delegator = link.get("delegator")
        owner = link.get("delegator_owner") or (extra or {}).get(delegator if isinstance(delegator, str) else "")
        if isinstance(owner, str) and owner and isinstance(delegator, str):
            out.setdefault(owner, []).append(delegator)
    return {person: tuple(dict.fromkeys(agents)) for person, agents in out.items()}


def excluded_owners(req: Request, owner_of: OwnerOf | None = None) -> dict[str, tuple[str, ...]]:
    """:func:`chain_owners` of ``req``, with ``owner_of``'s answer for a link recorded before
    links carried their delegator's owner."""
    extra: dict[str, str] = {}
    for link in req.delegation_chain:
        if not isinstance(link, dict) or "delegator_owner" in link or owner_of is None:
            continue
        delegator = link.get("delegator")
        owner = owner_of(delegator) if isinstance(delegator, str) else None
        if owner and isinstance(delegator, str):
            extra[delegator] = owner
    return chain_owners(req, extra)


def quorum(req: Request) -> list[tuple[str, int]] | None:
    """A mixed quorum's groups and counts in the policy's order (``decision.approvals_from``),
    or None for a request that needs its approvals from one group."""
    raw = req.decision.get("approvals_from")
    if not isinstance(raw, dict) or not raw:
        return None
    return [(str(g), int(n)) for g, n in raw.items()]


def quorum_words(quorum: Iterable[tuple[str, int]]) -> str:
    """``1 approval from sre and 2 from security``: a quorum (or what is missing of one) in words."""
    parts = [f"{n} approval{'' if n == 1 else 's'} from {g}" if i == 0 else f"{n} from {g}"
             for i, (g, n) in enumerate(quorum)]
    if not parts:
        return "nothing"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def quorum_missing(req: Request) -> list[tuple[str, int]]:
    """For a mixed quorum, each group still short of approvals and by how many, in the
    policy's order (each recorded approval counts for the one group the broker recorded
    with it); empty when the quorum is met or the request has none."""
    q = quorum(req)
    if q is None:
        return []
    counted: dict[str, int] = {}
    for a in req.approvals:
        counted[a.get("group") or ""] = counted.get(a.get("group") or "", 0) + 1
    return [(g, n - counted.get(g, 0)) for g, n in q if n > counted.get(g, 0)]


def quorum_slots(approver: Approver, req: Request, directory: Directory | None = None,
                 owner_of: OwnerOf | None = None) -> list[str]:
    """The groups of a mixed quorum that ``approver``'s approval may count for now, best first:
    the groups they belong to that still lack approvals, and, once the request is escalated, a
    backup-group member stands in for the first group (the policy's ``approver_group``) while
    it lacks any. One approval counts for one group only (the first of these). With the
    ``directory``, the group fewest other people could still fill comes first (ties: the
    policy's order), so someone in two groups takes the place that is hardest to fill;
    without it, the policy's order. Whether they may decide at all is :func:`why_not_decider`."""
    missing = [g for g, _ in quorum_missing(req)]
    slots = [g for g in missing if g in approver.groups]
    lead, backup = req.decision.get("approver_group"), req.decision.get("backup_group")
    if req.escalated and backup and backup in approver.groups and lead in missing and lead not in slots:
        slots.append(lead)
    if directory is not None and len(slots) > 1:
        def others(group: str) -> int:
            pool = [group] + ([backup] if req.escalated and backup and group == lead else [])
            people = {a.id: a for g in pool for a in directory.members(g)}
            return sum(1 for a in people.values() if not aliases(a) & aliases(approver) and req.status == PENDING
                       and not already_approved(a, req) and why_not_decider(a, req, owner_of) is None)
        slots.sort(key=lambda g: (others(g), missing.index(g)))
    return slots


def why_not_counted(approver: Approver, req: Request) -> str | None:
    """Why ``approver``'s approval of mixed-quorum ``req`` would count for no group (None: it
    would count, or ``req`` has no mixed quorum): every group of theirs already has its approvals."""
    if quorum(req) is None or quorum_slots(approver, req):
        return None
    return (f"{approver.id}'s groups already gave the approvals this request needs from them; "
            f"still missing: {quorum_words(quorum_missing(req))}")


def deciding_groups(req: Request) -> set[str]:
    """The groups whose members may decide ``req`` now: the policy's group (every group of a
    mixed quorum), and the backup group once the request was escalated to it."""
    groups = {req.decision.get("approver_group"), *(g for g, _ in quorum(req) or [])}
    if req.escalated:
        groups.add(req.decision.get("backup_group"))
    groups.discard(None)
    groups.discard("")
    return groups  # type: ignore[return-value]


def step_up_needed(approver: Approver, req: Request, directory: Directory | None) -> str | None:
    """The proof of presence (``"webauthn"``) ``approver``'s approval of ``req`` needs, or None:
    the decision's ``@step_up``, or the approvers file's ``step_up:`` on a group of theirs that
    may decide ``req`` (issue 19, item 6). Only a path that verified it may record the approval."""
    asked = req.decision.get("step_up")
    if asked:
        return str(asked)
    if directory is not None:
        for group in sorted(deciding_groups(req) & approver.groups):
            kind = directory.step_up_of(group)
            if kind:
                return kind
    return None


def why_not_decider(approver: Approver, req: Request, owner_of: OwnerOf | None = None) -> str | None:
    """Why ``approver`` may not decide ``req`` (None: they may).

    The required group (or the backup group once escalated), and never anyone who owns an
    agent along the request's chain of intent (the requesting agent, and every delegator of
    its delegation chain), under any of their aliases (:func:`broker.directory.aliases`).
    Whether they already approved is :func:`already_approved`.
    """
    suspended = why_suspended(approver)
    if suspended is not None:
        return suspended
    group = req.decision.get("approver_group")
    if req.decision.get("outcome") != "require_approval":
        return "this request does not need human approval"
    if not group:
        return "policy named no approver group for this request, so nobody may approve it"
    allowed = deciding_groups(req)
    if not allowed & approver.groups:
        return f"only members of '{' or '.join(sorted(allowed))}' may decide this request"
    excluded = excluded_owners(req, owner_of)
    for person in sorted(aliases(approver) & excluded.keys()):
        owned = excluded[person]
        if owned == (req.agent,):
            return f"{approver.id} owns agent {req.agent} and may not approve its requests"
        return (f"{approver.id} owns {', '.join(owned)} in this request's delegation chain "
                f"(which leads to {req.agent}) and may not approve it")
    return None


def already_approved(approver: Approver, req: Request) -> bool:
    """Whether this person (under any alias) is already counted among ``req``'s approvals."""
    return bool(aliases(approver) & set(req.approvers))


def may_still_decide(approver: Approver, req: Request, owner_of: OwnerOf | None = None) -> bool:
    """Whether ``approver`` may decide pending ``req`` and is not counted yet (for a mixed
    quorum: and one of their groups still lacks approvals, :func:`quorum_slots`)."""
    return (req.status == PENDING and not already_approved(approver, req)
            and why_not_decider(approver, req, owner_of) is None
            and why_not_counted(approver, req) is None)


def deciders(req: Request, directory: Directory, *, groups: Iterable[str | None] | None = None,
             owner_of: OwnerOf | None = None) -> list[Approver]:
    """The people who may still decide ``req`` (:func:`may_still_decide`), group by group in
    the directory's order, each once; ``groups`` narrows the search (e.g. to the backup group
    just escalated to). Empty once the request is no longer pending."""
    if groups is None:
        groups = [req.decision.get("approver_group"), *(g for g, _ in quorum(req) or []),
                  req.decision.get("backup_group") if req.escalated else None]
    seen: dict[str, Approver] = {}
    for group in groups:
        if not group:
            continue
        for a in directory.members(group):
            if a.id not in seen and may_still_decide(a, req, owner_of):
                seen[a.id] = a
    return list(seen.values())


def why_not_revoker(approver: Approver, req: Request, security_group: str) -> str | None:
    """Why ``approver`` may not end ``req``'s grant early (None: they may): its deciding groups,
    the security group, the agent's owner, or (break-glass) the engineer who broke the glass."""
    suspended = why_suspended(approver)
    if suspended is not None:
        return suspended
    allowed: set[str] = deciding_groups(req) | {security_group}  # every group of a mixed quorum too
    engineer = req.break_glass and req.engineer is not None and approver.id == req.engineer
    if not (allowed & approver.groups) and approver.id != req.owner and not engineer:
        return f"only members of '{' or '.join(sorted(allowed))}' or the agent's owner may revoke this grant"
    return None


def why_suspended(approver: Approver) -> str | None:
    """Why a person marked ``suspended: true`` in the approvers file may do nothing (None: not suspended)."""
    if approver.suspended:
        return f"{approver.id} is suspended in the approvers file and may not approve, deny or revoke"
    return None


def why_not_kill_switch(approver: Approver, security_group: str) -> str | None:
    """Why ``approver`` may not pull the kill switch (None: they may): only the security
    group, and nobody suspended."""
    suspended = why_suspended(approver)
    if suspended is not None:
        return suspended
    if security_group not in approver.groups:
        return f"only members of '{security_group}' may use the kill switch"
    return None


# ---------------------------------------------------------------------- break-glass
def suspended_by(req: Request, suspension: Mapping | None) -> bool:
    """Whether break-glass grant ``req`` is what suspended its engineer's right, given the
    engineer's suspension record as the core keeps it (None: not suspended). An overdue review
    alone is not a suspension: the core records one when its sweep finds the review missed,
    and until then (or after security reinstates the engineer) nothing is suspended."""
    if not req.break_glass or req.reviewed_by or not req.engineer or not suspension:
        return False
    return suspension.get("request_id") == req.id
