"""The Cedar context of a decision, built in one place (issue 16, item 2).

Every decision asks Cedar with the context as it is at the step that asks: the proposal
(confidence, duration, evidence, delegation depth), the risk posture and the hour, and -
because the policy set decides again at every step (an approval recorded, the grant
approved, collection, a posture or policy change) - the approval state and the agent's
use of grants:

- ``approval_count``, ``approval_groups``, ``approval_people``, ``approval_desks``: the
  approvals so far (the groups are the approvers' groups in the approvers file now);
- ``approval_first_at``, ``approval_last_at`` (Unix seconds, 0 without approvals) and
  ``seconds_since_first_approval``, ``seconds_since_last_approval`` (-1 without);
- ``seconds_since_approved``: since the grant was approved (-1 while it is not);
- ``agent_grants_active``, ``agent_grants_active_env`` (in the target's environment) and
  ``agent_grants_last_hour`` (collected in the last hour): the agent's *other* grants,
  never counting the one being decided, read from the indexes the transition scripts keep
  (``broker/lua/audit.lua`` ``index_grant``);
- ``stage``: which step asks (:data:`STAGES`);
- ``recent_denials``: denials (by people or policy) of the agent, its delegation chain (or,
  with ``JITGATE_DENIAL_MEMORY_SCOPE=owner``, its owner's agents) within the alternate-path
  window; ``linked_attempts``: proposals in that window linked to one of them (a different
  action on a denied target, or a denied action on another target of the same environment),
  this one included when it is linked (issue 19, item 3). 0 at every stage but ``submit``.

Callers that have no request yet (a proposal, break-glass, ``jitgate policy check``) get
neutral values: no approvals, not approved, stage ``submit``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import Proposal

# submit: a new proposal; approval: an approval is being recorded (it is counted); collect:
# the token is being collected; recheck: a posture or policy change, or introspection after one.
STAGES = ("submit", "approval", "collect", "recheck")


@dataclass(frozen=True)
class GrantUse:
    """How many grants the agent holds now (in all, and in the target's environment) and
    collected in the last hour, not counting the request being decided."""

    active: int = 0
    active_env: int = 0
    last_hour: int = 0


def _epoch(at: Any) -> int | None:
    if not isinstance(at, str):
        return None
    try:
        return int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def build_context(
    *,
    confidence: int,
    duration_s: int,
    posture: str,
    evidence_count: int,
    delegation_depth: int,
    now: float,
    break_glass: bool = False,
    stage: str = "submit",
    approvals: Iterable[dict] = (),
    approved_at: float | None = None,
    groups_of: Callable[[str], Iterable[str]] | None = None,
    use: GrantUse = GrantUse(),
    proposal: Proposal | None = None,
    recent_denials: int = 0,
    linked_attempts: int = 0,
) -> dict:
    """The whole Cedar context (every key of ``policy.CONTEXT_KEYS``) for one decision, and what
    the proposal says the agent will do (``policy.PROPOSAL_CONTEXT_KEYS``: tool, dataset,
    arguments) when it is given: every stage decides on the same task."""
    approvals = [a for a in approvals if isinstance(a, dict)]
    people = sorted({str(a.get("approver")) for a in approvals if a.get("approver")})
    desks = sorted({str(a.get("channel")) for a in approvals if a.get("channel")})
    groups: set[str] = set()
    if groups_of is not None:
        for person in people:
            groups.update(groups_of(person))
    times = [t for t in (_epoch(a.get("at")) for a in approvals) if t is not None]
    first, last = (min(times), max(times)) if times else (0, 0)
    n = int(now)
    return {
        "confidence": confidence,
        "duration_s": duration_s,
        "posture": posture,
        "evidence_count": evidence_count,
        "delegation_depth": delegation_depth,
        "hour_utc": time.gmtime(now).tm_hour,
        "break_glass": break_glass,
        "stage": stage,
        "approval_count": len(approvals),
        "approval_groups": sorted(groups),
        "approval_people": people,
        "approval_desks": desks,
        "approval_first_at": first,
        "approval_last_at": last,
        "seconds_since_first_approval": max(n - first, 0) if times else -1,
        "seconds_since_last_approval": max(n - last, 0) if times else -1,
        "seconds_since_approved": max(n - int(approved_at), 0) if approved_at is not None else -1,
        "agent_grants_active": use.active,
        "agent_grants_active_env": use.active_env,
        "agent_grants_last_hour": use.last_hour,
        "recent_denials": recent_denials,
        "linked_attempts": linked_attempts,
        **(_proposal_context(proposal) if proposal is not None else {}),
    }


def _proposal_context(proposal: Proposal) -> dict:
    from .policy import proposal_context  # noqa: PLC0415 - policy imports this module (STAGES)

    return proposal_context(proposal)
