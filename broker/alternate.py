"""Alternate paths (issue 19, item 3): an agent that was refused trying another way round.

After a denial (by a person, by policy or by denial memory), a proposal of the same scope (the
agent and its delegation chain, or with ``JITGATE_DENIAL_MEMORY_SCOPE=owner`` every agent of
its owner) within ``JITGATE_ALTERNATE_PATH_WINDOW_S`` is **linked** to it when it asks for
another action on the denied target, or the denied action on another target of the same
environment, or the very same again (a retry, which denial memory denies at once while its
cool-down lasts: an agent hammering a denied action is looking for a way round too). The
link is stored on the request (``linked_to``), recorded in the audit log and
shown on every desk. Each linked attempt is counted in a sorted set per scope, trimmed by time;
the one that reaches ``JITGATE_ALTERNATE_PATH_ALERT_AFTER`` raises one security alert for the
window and, with ``JITGATE_ALTERNATE_PATH_SUSPEND``, suspends the agent (``lua/linked.lua``,
one script: count, alert mark, audit entry, outbox notice and suspension together), whose
open requests and grants then end as the kill switch ends them, until a security member
reinstates it. Cedar sees the counts (``recent_denials``, ``linked_attempts``).

What it does not do: it does not deny anything by itself (a policy may, on the counts), and
a denial is remembered only by the broker that recorded it through ``remember``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from . import killswitch
from .audit import event
from .clock import new_id
from .errors import AgentDisabled, InvalidRequest
from .model import DENIED, Proposal, iso
from .notify import Kind
from .rules import fmt_duration

if TYPE_CHECKING:
    from .directory import Approver
    from .identity import Agent, DelegationLink
    from .lifecycle import Lifecycle

# How many recent denials are read to find a link (the newest; rate limits bound the rest).
MAX_READ = 100
PEOPLE_FIRST = ("policy", "denial-memory")
REINSTATE_EVENT = "agent.reinstated"


@dataclass(frozen=True)
class Paths:
    """What alternate-path detection found for one proposal."""

    recent_denials: int = 0
    linked_to: dict | None = None
    linked_before: int = 0  # linked attempts in the window before this one

    @property
    def linked_attempts(self) -> int:
        return self.linked_before + (1 if self.linked_to else 0)


def _scope_owner(life: "Lifecycle", agent: "Agent") -> str | None:
    return agent.owner if life.settings.denial_memory_scope == "owner" and agent.owner else None


def _epoch(at: object) -> float:
    try:
        return datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


async def remember(life: "Lifecycle", agents: list[str], owner: str | None, request_id: str, now: float) -> None:
    """Remember a denial of ``request_id`` for these agents (and owner) for the window. Written
    just before the denial's own compare-and-set (a member not denied after all is ignored)."""
    window = life.settings.alternate_path_window_s
    if window:
        owner = owner if life.settings.denial_memory_scope == "owner" else None
        keys = life.store.recent_denial_keys([a for a in agents if a], owner)
        await life.store.remember_denial(keys, request_id, int(now * 1000), window * 1000)


def query(life: "Lifecycle", agent: "Agent", chain: list["DelegationLink"], now: float) -> tuple[list[str], int]:
    """(the recent-denial keys of the proposal's scope, since when in ms): what the submit's one
    read of Redis (``Store.submit_state``) also reads; no keys when alternate paths are off."""
    s = life.settings
    if not s.alternate_path_window_s:
        return [], 0
    keys = life.store.recent_denial_keys([agent.id, *(link.delegator for link in chain)], _scope_owner(life, agent))
    return keys, int((now - s.alternate_path_window_s) * 1000)


async def detect(life: "Lifecycle", agent: "Agent", proposal: Proposal, env: str, ids: list[str],
                 since: int) -> Paths:
    """Of the scope's recent denials (``ids``, read with :func:`query`), the one the proposal is
    linked to (a person's first, then the newest), and how many linked attempts the window
    already holds. Nothing more is read when there is no recent denial (the common case)."""
    if not ids or not life.settings.alternate_path_window_s:
        return Paths()
    owner = _scope_owner(life, agent)
    ids = ids[-MAX_READ:]
    rows = [r for r in await life.store.denied_rows(ids) if r is not None and r["status"] == DENIED]
    candidates = []
    for row in rows:
        p, denial = row["proposal"], row["denial"]
        action, target = str(p.get("action") or ""), str(p.get("target") or "")
        if target == proposal.target and action == proposal.action:
            why = "the denied action on the denied target again"
        elif target == proposal.target:
            why = f"another action ({proposal.action}) on the denied target"
        elif action == proposal.action and target != proposal.target and env and row["env"] == env:
            why = f"the denied action on another target in {env}"
        else:
            continue
        by = str(denial.get("by") or "?")
        candidates.append((by not in PEOPLE_FIRST, _epoch(denial.get("at")), {
            "request": row["id"], "by": by, "reason": str(denial.get("reason") or "")[:500],
            "at": str(denial.get("at") or ""), "action": action, "target": target, "why": why}))
    linked = max(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None
    before = await life.store.linked_count(life.store.linked_keys(agent.id, owner)[0], since) if linked else 0
    return Paths(recent_denials=len(rows), linked_to=linked, linked_before=before)


def alert_text(agent_id: str, count: int, window_s: int, linked: dict, suspended: bool) -> str:
    """The security channel's sentence for an agent that keeps looking for a way around."""
    text = (f"ALTERNATE PATHS: agent {agent_id} made {count} attempts within {fmt_duration(window_s)} linked to "
            f"denials; the latest is related to request {linked.get('request')} ({linked.get('action')} on "
            f"{linked.get('target')}) that {linked.get('by')} denied: {linked.get('reason')}.")
    if suspended:
        text += " The agent is SUSPENDED until a security member reinstates it (the console's Approvers' load page)."
    return text


async def record(life: "Lifecycle", agent: "Agent", request_id: str, paths: Paths, now: float) -> None:
    """Count a linked attempt once its request exists; the one reaching the threshold alerts
    security once for the window and, if configured, suspends the agent and ends what it holds."""
    if paths.linked_to is None:
        return
    s = life.settings
    owner = _scope_owner(life, agent)
    count = paths.linked_before + 1
    suspend = s.alternate_path_suspend
    text = alert_text(agent.id, max(count, s.alternate_path_alert_after), s.alternate_path_window_s, paths.linked_to,
                      suspend)
    ev = event("security.alternate_paths", iso(now) or "", request_id, {"agent": agent.id, "owner": agent.owner},
               linked_to=paths.linked_to, window_s=s.alternate_path_window_s, alert_after=s.alternate_path_alert_after,
               suspended=suspend, text=text)
    suspension = {"at": iso(now), "request": request_id, "reason": text}
    n, alerted = await life.store.record_linked(
        agent.id, owner, request_id, now_ms=int(now * 1000), window_ms=s.alternate_path_window_s * 1000,
        alert_after=s.alternate_path_alert_after, suspend=suspend, alert_events=[ev], suspension=suspension,
        kind=Kind.ALTERNATE_PATHS.value, text=text)
    if alerted:
        life._count("alternate_path_alerts")
        if suspend:
            await end_holdings(life, agent.id, text, now)


async def end_holdings(life: "Lifecycle", agent_id: str, reason: str, now: float) -> None:
    """End the suspended agent's open requests and grants as the kill switch does (its batches,
    audit entries and per-request notices), in the name of ``alternate-paths``."""
    selector = killswitch.Selector.of("agent", agent_id)
    result = killswitch.KillResult(new_id(), selector)
    actor = {"approver": "alternate-paths", "channel": "broker", "platform_user": None}
    found = [(rid, row) async for rid, row in life._matching(selector)]
    for start in range(0, len(found), killswitch.BATCH):
        chunk = found[start:start + killswitch.BATCH]
        await life._kill_batch([rid for rid, _ in chunk], selector, result, actor, reason[:400], now,
                               rows=[row for _, row in chunk])


async def check(life: "Lifecycle", agent: "Agent") -> None:
    """Refuse a suspended agent (403 ``agent-disabled``) until a security member reinstates it."""
    if not life.settings.alternate_path_suspend:
        return
    why = await life.store.agent_suspension(agent.id)
    if why is not None:
        raise AgentDisabled(f"agent {agent.id} is suspended since {why.get('at')} for seeking alternate paths "
                            "around denials; a member of the security group must reinstate it")


async def reinstate(life: "Lifecycle", agent_id: str, approver: "Approver", *, channel: str) -> bool:
    """Lift the agent's suspension (security group only); False when it was not suspended.
    The linked attempts counted so far are forgotten with it, so the agent starts afresh."""
    life._check_kill_switch(approver)
    if not agent_id or len(agent_id) > 256 or not agent_id.isprintable():
        raise InvalidRequest("an agent id is required")
    why = await life.store.agent_suspension(agent_id)
    if why is None:
        return False
    owner = life._owner_of(agent_id) if life.settings.denial_memory_scope == "owner" else None
    linked, alerted = life.store.linked_keys(agent_id, owner)
    await life.store.append([event(REINSTATE_EVENT, iso(life._now()) or "", None,
                                   {"approver": approver.id, "channel": channel}, agent=agent_id, suspension=why)])
    await life.store.lift_agent_suspension(agent_id, linked, alerted)
    return True
