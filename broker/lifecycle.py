"""The state machine of ordinary requests: submit, approve, deny, cancel, collect, complete,
revoke, expire. (Break-glass grants are created and reviewed by ``breakglass.py``; both
change state only through ``store.py``'s scripts.)

Each operation reads the request, decides in Python what *may* happen (who is asking,
what policy said), then asks Redis for one compare-and-set that also appends the audit
events. Redis decides what *does* happen: two approvers clicking at once, two replicas
or a scheduler firing twice cannot produce two outcomes. A repeat of the same outcome is
a no-op; a different one is a :class:`Conflict` that says what happened instead.
"""

from __future__ import annotations

import dataclasses
import getpass

import orjson
import logging
import time
from datetime import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .clock import Clock, SystemClock, new_id
from .config import Settings
from .directory import Approver, Directory
from .context import build_context
from .errors import (
    Conflict, DeadlinePassed, InvalidRequest, NotApprover, NotFound, PolicyDenied, RateLimited, StepUpRequired,
)
from .identity import Agent, DelegationLink, InvalidDelegation, Registry, ResourceServer, verify_delegation_chain
from .model import (
    ACTIVE, APPROVED, CANCELLED, COMPLETED, DENIED, EXPIRED, PENDING, REVOKED, TERMINAL,
    NotAllowedForTarget, Proposal, Request, iso,
)
from .notices import Notices
from .notify import Kind, Notifier
from . import alternate, history, killswitch, oauth, redecide, rules
from .killswitch import Selector
from .policy import Decision, PolicyGate
from .rules import chain_owners  # noqa: F401 - its home is rules; kept importable from here
from .audit import event, event_frame
from .store import Late, Outcome, Store
from .tokens import KeyRing, build_access_token_claims
from .tracing import traced

log = logging.getLogger("jitgate.lifecycle")

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
MAX_REASON = 500
# Retry-After for a proposal refused because the agent has too many requests waiting already.
OPEN_RETRY_S = 60
# How many repeats of a pending request that said something new are kept on it.
MAX_REPEATS_KEPT = 5
# Who denied a proposal that repeated one a person had just denied (issue 19, item 2).
DENIAL_MEMORY = "denial-memory"


@dataclass(frozen=True)
class IssuedToken:
    """A token minted at collection (never stored)."""

    access_token: str
    token_type: str
    expires_in: int
    authorization_details: list
    credential: dict | None = None  # the target system's credential (broker/credentials), sent once

    def to_json(self) -> dict:
        out = {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "authorization_details": self.authorization_details,
        }
        if self.credential is not None:
            out["credential"] = self.credential
        return out


def _explain(req: Request) -> str:
    """A short sentence for why a request cannot change any more."""
    if req.status == DENIED and req.denial:
        by = req.denial.get("by", "?")
        return f"already denied by {by}: {req.denial.get('reason', '')}".rstrip(": ")
    if req.status == APPROVED:
        who = ", ".join(req.approvers) or "policy"
        return f"already approved by {who}"
    if req.status == ACTIVE:
        return "already approved and the token was collected"
    if req.status in (COMPLETED, REVOKED, EXPIRED, CANCELLED):
        by = f" by {req.closed_by}" if req.closed_by else ""
        return f"already {req.status}{by}"
    return f"request is {req.status}"


class Lifecycle:
    """Composes the store, the policy gate, the key ring and the notifiers."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        gate: PolicyGate,
        directory: Directory,
        keyring: KeyRing,
        notifiers: list[Notifier] | None = None,
        clock: Clock | None = None,
        metrics: Any = None,
        retention_s: int = 30 * 86400,
        registry: Registry | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry  # verifies delegation chains; None refuses every chain
        self.store = store
        self.gate = gate
        self.directory = directory
        self.keyring = keyring
        self.notifiers: list[Notifier] = list(notifiers or [])
        self.clock = clock or SystemClock()
        self.metrics = metrics
        self.retention_ms = retention_s * 1000
        self._posture: tuple[float, str] = (0.0, "normal")
        # The fan-out to the desks; the composition root replaces it with one that knows break-glass.
        self.notices = Notices(self)
        # Real credentials in the target systems (broker/credentials); the composition root sets it.
        self.credentials: Any = None
        # The audit log's fail-closed gate (broker/audit.AuditLog), set by the composition root:
        # new grants are refused while audit cannot record them.
        self.audit: Any = None

    # ------------------------------------------------------------------ helpers
    def _now(self) -> float:
        return self.clock.now()

    def _count(self, name: str, n: int = 1, **labels: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name, n, **labels)

    async def _absorbed(self, which: str) -> None:
        """A proposal no person saw (dedupe, denial_memory, rate_limit): the approvers' load
        (issue 19, item 7) in /metrics and, shared by the replicas, in Redis for the console."""
        self._count("absorbed", which=which)
        try:
            await self.store.absorbed(which)
        except Exception:  # noqa: BLE001 - a figure must not fail the proposal it counts
            log.warning("could not count an absorbed proposal (%s)", which)

    async def _decided(self, req: Request, now: float) -> None:
        """A person decided ``req`` (approved or denied): its time to decision, per group."""
        group = str(req.decision.get("approver_group") or "-")
        seconds = max(0.0, now - req.created_at)
        if self.metrics is not None:
            self.metrics.observe_decision(group, seconds)
        try:
            await self.store.decided(group, seconds)
        except Exception:  # noqa: BLE001 - a figure must not fail the decision it measures
            log.warning("could not record the time to decision of %s", req.id)

    async def history(self, agent_id: str) -> "history.History":
        """The agent's recent history now (:mod:`broker.history`)."""
        return await history.of(self.store, agent_id)

    async def reinstate_agent(self, agent_id: str, approver: Approver, *, channel: str) -> bool:
        """Lift an alternate-path suspension (security group only; :func:`broker.alternate.reinstate`)."""
        return await alternate.reinstate(self, agent_id, approver, channel=channel)

    async def posture(self) -> str:
        """The current risk posture (``normal``/``elevated``/``incident``), cached for 1 s."""
        at, value = self._posture
        if time.monotonic() - at < 1.0:
            return value
        value = rules.posture_or_strictest(await self.store.posture())  # unknown means the strictest
        self._posture = (time.monotonic(), value)
        return value

    async def get(self, request_id: str) -> Request:
        """The request as stored now; :class:`NotFound` if there is none."""
        req = await self.store.load(request_id)
        if req is None:
            raise NotFound(f"no escalation {request_id}")
        return req

    async def get_for_agent(self, request_id: str, agent: Agent) -> Request:
        """The request, if ``agent`` made it (others get the same 404 as a missing id)."""
        req = await self.store.load(request_id)
        if req is None or req.agent != agent.id:
            raise NotFound(f"no escalation {request_id}")
        return req

    async def watch_for_agent(self, request_id: str, agent: Agent, wait_s: float) -> Request:
        """:meth:`get_for_agent` for a long poll: changes in the next ``wait_s`` seconds are
        published to the waiters (register the waiter before calling this)."""
        req = await self.store.watch(request_id, wait_s)
        if req is None or req.agent != agent.id:
            raise NotFound(f"no escalation {request_id}")
        return req

    async def deliver(self, kind: str, request_id: str, only: set[str] | None = None) -> None:
        """Tell the desks about a committed change (:meth:`broker.notices.Notices.deliver`)."""
        await self.notices.deliver(kind, request_id, only)

    async def notification_failed(self, kind: str, request_id: str) -> None:
        """Record that the desks could not be told, after every retry."""
        ev = event("notification.failed", iso(self._now()), request_id, None, notification=kind)
        await self.store.append([ev])

    # ------------------------------------------------------------------ posture
    POSTURES = rules.POSTURES

    async def set_posture(self, level: str, approver: Approver, *, channel: str) -> str:
        """Set the risk posture every policy decision sees (security group only)."""
        if level not in self.POSTURES:
            raise InvalidRequest(f"posture must be one of {', '.join(self.POSTURES)}")
        if rules.why_suspended(approver) is not None:
            raise NotApprover(rules.why_suspended(approver) or "")
        if self.settings.security_group not in approver.groups:
            raise NotApprover(f"only members of '{self.settings.security_group}' may change the posture")
        previous = await self.posture()
        ev = event("posture.changed", iso(self._now()), None, {"approver": approver.id, "channel": channel},
                   posture=level, previous=previous)
        await self.store.append([ev])  # audited first: no audit, no change
        await self.store.set_posture(level)  # and the evaluation epoch: introspection decides again
        self._posture = (0.0, level)
        await self.reevaluate_open(trigger=f"posture {previous} -> {level}")
        return level

    # ------------------------------------------------------------------ deciding again
    async def reevaluate_open(self, *, trigger: str) -> dict:
        """Decide every pending, approved and active request again (:func:`broker.redecide.reevaluate_open`)."""
        result = await redecide.reevaluate_open(self, trigger=trigger)
        if result["closed"]:
            log.warning("%s: %d of %d open requests no longer permitted; denied or revoked",
                        trigger, result["closed"], result["checked"])
        return result

    async def policies_changed(self, trigger: str = "policies reloaded") -> dict:
        """The loaded policies (or the entities they read) changed: advance the evaluation
        epoch, so introspection decides again, and decide every open request again."""
        await self.store.bump_epoch()
        return await self.reevaluate_open(trigger=trigger)

    def groups_of(self, approver_id: str) -> tuple[str, ...]:
        """The groups the approvers file gives ``approver_id`` now (none when unknown)."""
        a = self.directory.approver(approver_id)
        return tuple(a.groups) if a is not None else ()

    def env_of(self, req: Request) -> str:
        """The environment of ``req``'s target in the targets file now ('' when none)."""
        t = self.directory.target(req.proposal.target)
        return (t.env or "") if t is not None else ""

    async def _refuse(self, req: Request, decision: Decision, stage: str) -> None:
        """Close ``req`` because the policies, deciding again at ``stage``, refuse it, and say so."""
        await redecide.close_one(self, req, decision, stage)
        raise PolicyDenied(redecide.refusal(decision, stage), policies=list(decision.policies), stage=stage)

    async def _decide_at(self, req: Request, stage: str, extra_approval: dict | None = None) -> tuple[Decision, int]:
        """The policies' decision on ``req`` at ``stage`` with the posture and use as they are
        now (uncached), and the evaluation epoch it was made at."""
        now = self._now()
        posture, epoch, use = await redecide.state_for(self, req, now)
        ctx = redecide.context_for(self, req, stage, posture=posture, now=now, use=use, extra_approval=extra_approval)
        decision = redecide.decide_again(self, req, ctx)
        if decision.shadow and decision.outcome != "deny" and decision.shadow.get("outcome") == "deny":
            await redecide.record_shadow(self, req, decision, stage, now)
        return decision, epoch

    # ------------------------------------------------------------------ reminders
    async def remind_due(self, limit: int = 100) -> int:
        """Queue reminders (or the escalation to the backup group) for pending requests
        whose reminder time has come; returns how many were queued."""
        now = self._now()
        queued = 0
        for rid in await self.store.due_in(self.store.reminders, _ms(now), limit):
            req = await self.store.load(rid)
            if req is None or req.status != PENDING:
                await self.store.unschedule(self.store.reminders, rid)
                continue
            backup = req.decision.get("backup_group")
            escalate = bool(backup) and not req.escalated and now - req.created_at >= self.settings.escalate_after_s
            at = iso(now)
            if escalate:
                ev = event("request.escalated", at, rid, None, backup_group=backup)
                await self.store.append([ev], rid, {"escalated": "1"}, notify=Kind.ESCALATE)
            else:
                ev = event("reminder.sent", at, rid, None, approvals=len(req.approvals))
                await self.store.append([ev], rid, notify=Kind.REMIND)
            queued += 1
            nxt = now + max(self.settings.reminder_interval_s, 1)
            if req.deadline is not None and nxt >= req.deadline:
                await self.store.unschedule(self.store.reminders, rid)
            else:
                await self.store.schedule(self.store.reminders, rid, _ms(nxt))
        return queued

    async def pending_for(self, approver: Approver, limit: int = 50) -> list[Request]:
        """Pending requests ``approver`` may decide now and has not approved yet (bounded)."""
        out = []
        for rid in await self.store.first_in(self.store.deadlines, 500):
            req = await self.store.load(rid)
            if req is None or not rules.may_still_decide(approver, req, self._owner_of):
                continue
            out.append(req)
            if len(out) >= limit:
                break
        return out

    # ------------------------------------------------------------------ submit
    async def _earlier_denial(self, agent: Agent, proposal: Proposal, chain: list[DelegationLink],
                              now: float) -> dict | None:
        """A person's denial of the same action on the same target within the cool-down, for this
        agent or an agent of its delegation chain (or, with scope ``owner``, any agent of its
        owner): ``{"request", "by", "reason", "at", ...}``, else None (issue 19, item 2)."""
        s = self.settings
        if not s.denial_cooldown_s:
            return None
        owner = agent.owner if s.denial_memory_scope == "owner" else None
        keys = self.store.denial_keys(proposal.action, proposal.target, [agent.id, *(x.delegator for x in chain)], owner)
        for rid in await self.store.denials_since(keys, _ms(now - s.denial_cooldown_s)):
            status, raw = await self.store.request_fields(rid, "status", "denial")
            if status != DENIED or not raw:
                continue  # remembered just before a denial that did not happen, or gone
            denial = orjson.loads(raw)
            if denial.get("by") in ("policy", DENIAL_MEMORY):
                continue  # only people's denials are remembered
            return {"request": rid, "by": denial.get("by"), "reason": denial.get("reason"), "at": denial.get("at")}
        return None

    def _memory_reason(self, earlier: dict, proposal: Proposal, now: float) -> str:
        try:
            at = datetime.fromisoformat(str(earlier["at"]).replace("Z", "+00:00")).timestamp()
        except ValueError:
            at = now
        ago = rules.fmt_duration(max(1, int(now - at)))
        until = iso(at + self.settings.denial_cooldown_s)
        return (f"{earlier['by']} denied {proposal.action} on {proposal.target} {ago} ago (request {earlier['request']}): "
                f"{earlier['reason']}. The same proposal is denied at once until {until}; nobody was asked again")

    async def _join_pending(self, agent: Agent, proposal: Proposal, now: float) -> Request | None:
        """The agent's pending request for the same task (issue 19, item 1), with this repeat
        recorded on it, or None. Nobody is asked again; when the agent says something new
        (justification or evidence), the desks show it on the request's message."""
        if not self.settings.dedupe:
            return None
        rid = await self.store.pending_task(self.store.task_key(agent.id, proposal.task_sha256()))
        if not rid:
            return None
        req = await self.store.load(rid)
        if req is None or req.status != PENDING or req.agent != agent.id:
            return None
        said = req.repeats[-1] if req.repeats else {}
        last_justification = said.get("justification", req.proposal.justification)
        last_evidence = said.get("evidence", [e.to_dict() for e in req.proposal.evidence])
        evidence = [e.to_dict() for e in proposal.evidence]
        repeat: dict[str, Any] = {"at": iso(now)}
        if proposal.justification != last_justification:
            repeat["justification"] = proposal.justification
        if evidence != last_evidence:
            repeat["evidence"] = evidence
        new = len(repeat) > 1
        fields: dict[str, Any] = {"asked_again": str(req.asked_again + 1)}
        if new:
            fields["repeats"] = _json((req.repeats + [repeat])[-MAX_REPEATS_KEPT:])
        ev = event("proposal.repeated", iso(now), rid, {"agent": agent.id, "owner": agent.owner},
                   proposal=proposal.to_dict(), proposal_sha256=proposal.sha256(), asked_again=req.asked_again + 1)
        out = await self.store.append([ev], rid, fields, notify=Kind.ASKED_AGAIN if new else "")
        if not out.ok:
            return None
        self._count("deduplicated")
        await self._absorbed("dedupe")
        return await self.get(rid)

    async def _take_proposal_token(self, agent: Agent, proposal: Proposal, now: float) -> None:
        """A proposal that would reach people takes a token from its agent's and its target's
        buckets, or is refused with 429 before anything is stored or anyone asked (issue 19,
        item 4: an agent retrying in a loop must not flood the approvers)."""
        s = self.settings
        if s.max_open_per_agent and await self.store.open_requests(agent.id) >= s.max_open_per_agent:
            self._count("rate_limited", scope="open")
            await self._absorbed("rate_limit")
            raise RateLimited(f"agent {agent.id} already has {s.max_open_per_agent} requests waiting for people; "
                              "nobody was asked. Withdraw one, wait for a decision, or retry later",
                              retry_after=OPEN_RETRY_S, scope="open")
        if not (s.agent_proposals_per_min or s.target_proposals_per_min):
            return
        wait_ms, which = await self.store.take_proposal_token(
            agent.id, proposal.target, _ms(now), s.agent_proposals_per_min, s.target_proposals_per_min)
        if wait_ms:
            self._count("rate_limited", scope=which)
            await self._absorbed("rate_limit")
            retry = max(1, -(-wait_ms // 1000))
            if which == "agent":
                detail = (f"agent {agent.id} has sent more than {s.agent_proposals_per_min} proposals needing "
                          f"approval in a minute; nobody was asked. Retry in {retry} s")
            else:
                detail = (f"{proposal.target} has had more than {s.target_proposals_per_min} proposals needing "
                          f"approval in a minute; nobody was asked. Retry in {retry} s")
            raise RateLimited(detail, retry_after=retry, scope=which)

    async def submit(self, agent: Agent, proposal: Proposal, idempotency_key: str | None = None) -> tuple[Request, bool]:
        """Record a proposal and the policy decision on it. Returns (request, created)."""
        sha = proposal.sha256()
        idem = None
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 200 or not idempotency_key.isprintable():
                raise InvalidRequest("Idempotency-Key must be 1 to 200 printable characters")
            idem = self.store.idem_key(agent.id, idempotency_key)
            existing = await self.store.idempotent_id(idem)
            if existing:
                return await self._idempotent(existing, agent, sha), False

        if self.audit is not None:
            self.audit.check_grants()  # 503 while sealing lags or no checkpoint sink works
        now = self._now()
        chain = self._verified_chain(agent, proposal, now)  # a broken chain is a 400, nothing stored
        why = rules.why_not_for_target(proposal, self.directory.target(proposal.target))
        if why is not None:
            raise NotAllowedForTarget(why)  # a 400, nothing stored
        target = self.directory.target(proposal.target)
        env = (target.env or "") if target is not None else ""
        denial_keys, since = alternate.query(self, agent, chain, now)
        _, _, (active, active_env, last_hour), denied = await self.store.submit_state(agent.id, env, _ms(now),
                                                                                     denial_keys, since)
        paths = await alternate.detect(self, agent, proposal, env, denied, since)
        context = build_context(
            confidence=proposal.confidence_pct, duration_s=proposal.duration_s, posture=await self.posture(),
            evidence_count=len(proposal.evidence), delegation_depth=len(chain), now=now, stage="submit",
            use=redecide.GrantUse(active, active_env, last_hour), proposal=proposal,
            recent_denials=paths.recent_denials, linked_attempts=paths.linked_attempts,
        )
        try:
            decision = self.gate.decide(agent_id=agent.id, action=proposal.action, target=proposal.target, context=context)
            if chain and decision.outcome != "deny":
                decision = self._delegated_decision(decision, chain, context)
        except InvalidRequest:
            raise  # the agent sent a name policy cannot represent: a 400, nothing stored
        except Exception as e:  # noqa: BLE001 - unknown means deny
            log.exception("policy evaluation failed")
            decision = Decision("deny", (), 0, None, None, None, None, f"policy evaluation failed: {e.__class__.__name__}")
        backup = self.settings.backup_group
        if (decision.outcome == "require_approval" and not decision.backup_group and backup
                and backup != decision.approver_group):
            # The installation's backup group, where the policy names none; recorded in the
            # decision (and so in the audit log) like one the policy named.
            decision = dataclasses.replace(decision, backup_group=backup)
        # A person's recent denial of the same decides before anyone is asked again; the policy's
        # own decision stays on record (the request shows both).
        earlier, memory_reason = None, ""
        if decision.outcome == "require_approval":
            earlier = await self._earlier_denial(agent, proposal, chain, now)
            if earlier is not None:
                memory_reason = self._memory_reason(earlier, proposal, now)
                self._count("denied_by_memory")
                await self._absorbed("denial_memory")
            else:
                joined = await self._join_pending(agent, proposal, now)
                if joined is not None:
                    return joined, False
                await self._take_proposal_token(agent, proposal, now)

        rid = new_id()
        at = iso(now)
        actor = {"agent": agent.id, "owner": agent.owner}
        # Each link records its delegator's owner as the agents file says now: nobody who owns
        # an agent along the chain may approve (check_approver), and the record says who that is.
        received = {"delegation_chain": [self._with_owner(link) for link in chain]} if chain else {}
        # The policy set that decided (issue 18, item 5): in the decision's entry and the record.
        set_hash = decision.policy_set_hash or self.gate.policy_set_hash
        events = [
            event("proposal.received", at, rid, actor, proposal=proposal.to_dict(), proposal_sha256=sha, idempotency_key=idempotency_key,
                  **received),
            event("policy.decision", at, rid, None, **decision.to_dict(), context=context, policy_set_hash=set_hash,
                  **({"shadow": dict(decision.shadow)} if decision.shadow else {})),
        ]
        fields: dict[str, Any] = {
            "id": rid,
            "agent": agent.id,
            "owner": agent.owner or "",
            "proposal": _json(proposal.to_dict()),
            "proposal_sha256": sha,
            "decision": _json(decision.to_dict()),
            "policy_set_hash": set_hash,
            "approvals": "[]",
            "created_at": repr(now),
            "break_glass": "0",
            "env": env,  # the grant indexes count by environment (audit.lua index_grant)
        }
        if decision.approver_group:
            fields["approver_group"] = decision.approver_group  # the open-requests-per-group index
        if paths.linked_to is not None:
            # Related to a recent denial (issue 19, item 3): shown on every desk, in the audit log.
            fields["linked_to"] = _json(paths.linked_to)
            events.append(event("proposal.linked", at or "", rid, actor, linked_to=paths.linked_to,
                                recent_denials=paths.recent_denials, linked_attempts=paths.linked_attempts))
        chain_exp = min((link.expires_at for link in chain), default=None)
        if chain_exp is not None:
            fields.update(delegation_chain=_json(received["delegation_chain"]), delegation_exp=str(chain_exp))
        deadline: int | None
        if earlier is not None:
            status, deadline = DENIED, None
            denial = {"by": DENIAL_MEMORY, "reason": memory_reason, "earlier": earlier, "at": at}
            fields.update(denial=_json(denial), closed_at=repr(now), closed_by=DENIAL_MEMORY)
            events.append(event("request.denied", at, rid, {DENIAL_MEMORY: earlier["request"]}, reason=memory_reason))
        elif decision.outcome == "deny":
            status, deadline = DENIED, None
            denial = {"by": "policy", "reason": decision.reason, "policies": list(decision.policies), "at": at}
            fields.update(denial=_json(denial), closed_at=repr(now), closed_by="policy")
            events.append(event("request.denied", at, rid, {"policy": list(decision.policies)}, reason=decision.reason))
        elif decision.outcome == "auto_grant":
            status = APPROVED
            granted = self._grant_duration(proposal, decision.to_dict(), [])
            fields["approved_duration_s"] = str(granted)
            fields["grant_end_ms"] = str(_ms(now + granted))  # the grant's end is fixed when it is approved
            deadline = min(_ms(now + self.settings.collect_ttl_s), _ms(now + granted))
            events.append(event("request.approved", at, rid, {"policy": list(decision.policies)}, approved_duration_s=int(fields["approved_duration_s"])))
        else:
            status = PENDING
            deadline = _ms(now + self.settings.request_ttl_s)
            # The agent's recent history, next to the proposal on every desk (issue 19, item 5).
            fields["history"] = _json((await self.history(agent.id)).to_dict())
        if status == DENIED:
            # Remembered for alternate paths before the request exists (a crash only leaves a
            # member that is not denied, which is ignored).
            await alternate.remember(self, [agent.id, *(x.delegator for x in chain)], agent.owner, rid, now)
        if deadline is not None and chain_exp is not None:
            deadline = min(deadline, _ms(chain_exp))  # nothing to collect once the delegation has lapsed
        reminder = None
        if status == PENDING and self.settings.reminder_interval_s:
            first = min(self.settings.reminder_interval_s, self.settings.escalate_after_s or self.settings.reminder_interval_s)
            reminder = _ms(now + max(first, 1))
        out = await self.store.create(rid, fields, status, events, deadline, idem, IDEMPOTENCY_TTL_MS,
                                      retention_ms=self.retention_ms if status == DENIED else None,
                                      notify=Kind.PROPOSED if status == PENDING else "", reminder_ms=reminder)
        if out.result == "exists":
            return await self._idempotent(out.status, agent, sha), False
        if not out.ok:
            raise Conflict("could not create the request; retry")
        self._count("decisions", outcome=decision.outcome)
        await alternate.record(self, agent, rid, paths, now)  # a linked attempt: counted, maybe alerted
        if status == PENDING and self.settings.dedupe:
            # Later proposals of the same task join this request (a crash before this line
            # only means a repeat is asked of people once more).
            await self.store.remember_task(self.store.task_key(agent.id, proposal.task_sha256()), rid,
                                           self.settings.request_ttl_s * 1000)
        return out.request or await self.get(rid), True

    def _verified_chain(self, agent: Agent, proposal: Proposal, now: float) -> list[DelegationLink]:
        """The proposal's delegation chain, verified (identity.verify_delegation_chain)."""
        if not proposal.delegation:
            return []
        if self.registry is None:
            raise InvalidDelegation("this broker cannot verify delegation chains here")
        return verify_delegation_chain(
            proposal.delegation, registry=self.registry, requester=agent.id, action=proposal.action,
            target=proposal.target, audience=self.settings.issuer, now=now, max_depth=self.settings.delegation_max_depth,
        )

    def _with_owner(self, link: DelegationLink) -> dict:
        d = link.to_dict()
        delegator = self.registry.agent(link.delegator) if self.registry is not None else None
        d["delegator_owner"] = delegator.owner if delegator is not None else None
        return d

    def _delegated_decision(self, decision: Decision, chain: list[DelegationLink], context: dict) -> Decision:
        """Ask Cedar whether each delegator may delegate to its delegate (action ``delegate``,
        the delegate as resource, ``delegation_depth`` = the link's position). A deny of any
        link denies the proposal, naming the link; otherwise the obligations combine, the
        strictest winning (most approvals, shortest duration), as for several permits."""
        decisions = [decision]
        for link in chain:
            d = self.gate.decide(agent_id=link.delegator, action="delegate", target=link.delegate,
                                 context={**context, "delegation_depth": link.index})
            if d.outcome == "deny":
                return Decision.deny(f"delegation link {link.index} ({link.delegator} -> {link.delegate}) is not permitted: "
                                     f"{d.reason}", d.policies)
            decisions.append(d)
        lead = max(decisions, key=lambda d: d.approvals_required)  # ties: the proposal's own decision
        approvals = lead.approvals_required
        durations = [d.max_duration_s for d in decisions if d.max_duration_s]
        policies = list(dict.fromkeys(p for d in decisions for p in d.policies))
        links = ", ".join(f"{link.delegator} -> {link.delegate}" for link in chain)
        return Decision(
            outcome="auto_grant" if approvals == 0 else "require_approval",
            policies=tuple(policies), approvals_required=approvals, approver_group=lead.approver_group,
            max_duration_s=min(durations) if durations else None, channel=lead.channel,
            backup_group=lead.backup_group, reason=f"{lead.reason}; delegated ({links})",
            approvals_from=lead.approvals_from,
            # The strictest wins here too: step-up asked by the proposal's decision or any link's.
            step_up=next((d.step_up for d in decisions if d.step_up), None) if approvals else None,
            shadow=decision.shadow,  # the shadow set compared on the proposal's own decision (issue 23 item 2)
            policy_set_hash=decision.policy_set_hash,
        )

    async def _idempotent(self, request_id: str, agent: Agent, sha: str) -> Request:
        req = await self.store.load(request_id)
        if req is None or req.agent != agent.id:
            raise Conflict("this Idempotency-Key was used for a request that no longer exists; use a new key")
        if req.proposal_sha256 != sha:
            raise Conflict("this Idempotency-Key was already used for a different proposal; a changed proposal needs a new key")
        return req

    def _grant_duration(self, proposal: Proposal, decision: dict, approvals: list[dict]) -> int:
        """Requested duration, capped by policy, settings and every approver's choice (:func:`rules.grant_cap`)."""
        return rules.grant_cap(proposal, decision, approvals, self.settings.max_duration_s)

    def _collect_deadline_ms(self, req: Request, now: float) -> int:
        """The latest time the token of a grant approved ``now`` may be collected (the script
        also caps it by the grant's end); nothing is collected once the delegation lapsed."""
        deadline = _ms(now + self.settings.collect_ttl_s)
        if req.delegation_exp is not None:
            deadline = min(deadline, _ms(req.delegation_exp))
        return deadline

    def _late(self, req: Request, status: str, now: float, attempt: dict) -> Late:
        """How ``req`` (in ``status``) expires when ``attempt`` comes after its deadline:
        the audit entry and fields of the sweep's expiry, naming the refused attempt."""
        why = rules.expiry_reason(status)
        kind = rules.expiry_event(status)
        ev = event(kind, iso(now), req.id, {"by": "deadline"}, previous=status, reason=why, refused=attempt, **_bg(req))
        return Late([ev], {"closed_at": repr(now), "closed_by": "deadline", "close_reason": why}, self.retention_ms)

    # ------------------------------------------------------------------ people
    def check_approver(self, approver: Approver, req: Request) -> None:
        """Raise :class:`NotApprover` unless ``approver`` may decide ``req`` now
        (:func:`broker.rules.why_not_decider`: the required group, or the backup group once
        escalated, and never anyone who owns an agent along the request's chain of intent,
        under any alias). Desks and listings ask the same rule."""
        why = rules.why_not_decider(approver, req, self._owner_of)
        if why is not None:
            raise NotApprover(why)

    def step_up_needed(self, approver: Approver, req: Request) -> str | None:
        """The proof of presence ``approver``'s approval of ``req`` needs (:func:`broker.rules.step_up_needed`)."""
        return rules.step_up_needed(approver, req, self.directory)

    def may_still_decide(self, approver: Approver, req: Request) -> bool:
        """Whether ``approver`` may decide pending ``req`` and is not counted yet (:func:`broker.rules.may_still_decide`)."""
        return rules.may_still_decide(approver, req, self._owner_of)

    def deciders(self, req: Request, *, groups: list[str | None] | None = None) -> list[Approver]:
        """Who may still decide ``req``, from the directory as it is now (:func:`broker.rules.deciders`)."""
        return rules.deciders(req, self.directory, groups=groups, owner_of=self._owner_of)

    def excluded_owners(self, req: Request) -> dict[str, tuple[str, ...]]:
        """:func:`broker.rules.chain_owners` of ``req``, with the agents file's owner for a link
        recorded before links carried theirs."""
        return rules.excluded_owners(req, self._owner_of)

    def _owner_of(self, agent_id: str) -> str | None:
        """The owner the agents file names for ``agent_id`` now (None without a registry)."""
        agent = self.registry.agent(agent_id) if self.registry is not None else None
        return agent.owner if agent is not None else None

    async def approve(
        self,
        request_id: str,
        approver: Approver,
        *,
        channel: str,
        platform_user: str | None = None,
        duration_s: int | None = None,
        step_up: str | None = None,
    ) -> Request:
        """Count ``approver``'s approval; the last one needed approves the request.

        ``step_up`` (``"webauthn"``) says the caller verified the approver's proof of presence;
        an approval that needs one (:meth:`step_up_needed`) and comes without it raises
        :class:`StepUpRequired` and records nothing. It is kept in the approval and its audit entry.

        For a mixed quorum the approval counts for one group its approver may fill now
        (:func:`broker.rules.quorum_slots`); the script refuses it if that group filled up
        meanwhile, and it is tried again (bounded) with what is stored then."""
        for _ in range(3):
            req, out = await self._approve_once(request_id, approver, channel=channel, platform_user=platform_user,
                                                duration_s=duration_s, step_up=step_up)
            if out is None:
                return req
            if out.result != "filled":
                break
        if out.result == "late":
            raise DeadlinePassed(f"the deadline to decide passed at {iso(req.deadline)}; "
                                 "the request has expired and can no longer be approved")
        after = out.request or await self.get(request_id)
        if out.result in ("ok", "noop"):
            if out.ok:
                self._count("approvals", channel=channel)
                if after.status == APPROVED:
                    await self._decided(after, self._now())
            return after
        if out.result == "stale":
            raise Conflict("the proposal changed since it was shown; reload it")
        if out.result == "filled":
            raise Conflict("the quorum changed while this approval was recorded; reload the request")
        raise Conflict(_explain(after))

    async def _approve_once(self, request_id: str, approver: Approver, *, channel: str, platform_user: str | None,
                            duration_s: int | None, step_up: str | None = None) -> tuple[Request, Outcome | None]:
        req = await self.get(request_id)
        self.check_approver(approver, req)
        if rules.already_approved(approver, req):
            return req, None  # the same person's approval again (under any alias): a no-op
        if req.status != PENDING:
            raise Conflict(_explain(req))
        needed = self.step_up_needed(approver, req)
        if needed is not None and step_up != needed:
            raise StepUpRequired(f"this approval counts only with a security key ({needed} step-up): approve it in "
                                 "the console, which asks for your key; nothing was recorded")
        group = None
        if rules.quorum(req) is not None:
            why = rules.why_not_counted(approver, req)
            if why is not None:
                raise NotApprover(why)
            group = rules.quorum_slots(approver, req, self.directory, self._owner_of)[0]
        max_s = self._grant_duration(req.proposal, req.decision, req.approvals)
        if duration_s is not None:
            if isinstance(duration_s, bool) or not isinstance(duration_s, int) or not 1 <= duration_s <= max_s:
                raise InvalidRequest(f"duration must be between 1 and {max_s} seconds")
        now = self._now()
        at = iso(now)
        approval = {"approver": approver.id, "channel": channel, "at": at, "proposal_sha256": req.proposal_sha256}
        if group is not None:
            approval["group"] = group
        if platform_user:
            approval["platform_user"] = platform_user
        if duration_s is not None:
            approval["duration_s"] = duration_s
        if step_up is not None:
            approval["step_up"] = step_up
        # Decide again with this approval counted (issue 16, item 1): the approval recorded,
        # and (the last one needed) the grant approved. A refusal denies the request.
        decision, _epoch = await self._decide_at(req, "approval", extra_approval=approval)
        if decision.outcome == "deny":
            await self._refuse(req, decision, "approval")
        required = int(req.decision.get("approvals_required", 1))
        actor = {"approver": approver.id, "channel": channel, "platform_user": platform_user}
        counted: dict[str, Any] = {"group": group} if group is not None else {}
        if step_up is not None:
            counted["step_up"] = step_up
        # The count, the approvers and the granted duration depend on the other approvals:
        # the script decides them from the approvals stored, not from what was read here
        # (it picks this approval's entry for the count it makes, and writes the approval's).
        out = await self.store.approve(
            request_id, approver.id, approval,
            now_ms=_ms(now),
            required=required,
            proposal_sha256=req.proposal_sha256,
            cap_s=self._grant_duration(req.proposal, req.decision, []),
            collect_deadline_ms=self._collect_deadline_ms(req, now),
            recorded=[event("approval.recorded", at, request_id, actor, count=count, required=required,
                            proposal_sha256=req.proposal_sha256, duration_s=duration_s, **counted,
                            policy_set_hash=decision.policy_set_hash)
                      for count in range(1, required + 1)],
            approved=event_frame("request.approved", at, request_id, actor),
            late=self._late(req, PENDING, now, {"action": "approve", "approver": approver.id, "channel": channel}),
            notify_partial=Kind.APPROVAL,
            notify_complete=Kind.APPROVED,
            group=group,
            group_required=dict(rules.quorum(req) or []).get(group or "", 0),
        )
        return req, out

    async def deny(self, request_id: str, approver: Approver, *, channel: str, reason: str, platform_user: str | None = None) -> Request:
        """End a pending request with a reason that reaches the agent."""
        reason = (reason or "").strip()
        if not reason:
            raise InvalidRequest("a reason is required to deny")
        if len(reason) > MAX_REASON:
            raise InvalidRequest(f"the reason is longer than {MAX_REASON} characters")
        req = await self.get(request_id)
        self.check_approver(approver, req)
        now = self._now()
        at = iso(now)
        denial = {"by": approver.id, "reason": reason, "channel": channel, "at": at}
        if platform_user:
            denial["platform_user"] = platform_user
        actor = {"approver": approver.id, "channel": channel, "platform_user": platform_user}
        if self.settings.denial_cooldown_s and req.status == PENDING:
            agents = [req.agent, *(str(link.get("delegator", "")) for link in req.delegation_chain)]
            keys = self.store.denial_keys(req.proposal.action, req.proposal.target, [a for a in agents if a], req.owner)
            await self.store.remember_denial(keys, request_id, _ms(now), self.settings.denial_cooldown_s * 1000)
        if req.status == PENDING:
            agents = [req.agent, *(str(link.get("delegator", "")) for link in req.delegation_chain)]
            await alternate.remember(self, agents, req.owner, request_id, now)
        out = await self.store.transition(
            request_id, [PENDING], DENIED,
            {"denial": _json(denial), "closed_at": repr(now), "closed_by": approver.id, "close_reason": reason},
            [event("request.denied", at, request_id, actor, reason=reason)],
            _ms(now), deadline="-", retention_ms=self.retention_ms, notify=Kind.DENIED,
            late=self._late(req, PENDING, now, {"action": "deny", "approver": approver.id, "channel": channel}),
        )
        if out.result == "late":
            raise DeadlinePassed(f"the deadline to decide passed at {iso(req.deadline)}; the request has expired "
                                 "(which denies it by default)")
        if out.ok:
            await self._decided(req, now)
        return await self._finish(out, request_id)

    async def _finish(self, out: Outcome, request_id: str) -> Request:
        after = out.request or await self.get(request_id)
        if out.ok:
            self._count("transitions", to=after.status)
            return after
        if out.result == "noop":
            return after
        raise Conflict(_explain(after))

    # ------------------------------------------------------------------ agent
    async def cancel(self, request_id: str, agent: Agent) -> Request:
        """The agent withdraws a pending request."""
        await self.get_for_agent(request_id, agent)
        now = self._now()
        at = iso(now)
        out = await self.store.transition(
            request_id, [PENDING], CANCELLED,
            {"closed_at": repr(now), "closed_by": agent.id, "close_reason": "withdrawn by the agent"},
            [event("request.cancelled", at, request_id, {"agent": agent.id})],
            _ms(now), deadline="-", retention_ms=self.retention_ms, notify=Kind.CANCELLED,
        )
        return await self._finish(out, request_id)

    async def collect(self, request_id: str, agent: Agent, *, jkt: str | None = None) -> IssuedToken:
        """Mint the task-scoped token, once, for the requesting agent."""
        req = await self.get_for_agent(request_id, agent)
        if req.status == ACTIVE:
            raise Conflict("the token for this request was already collected; a token is issued only once")
        if req.status != APPROVED:
            if req.status == PENDING:
                raise Conflict("the request is still waiting for approval")
            raise Conflict(_explain(req))
        # Decide again with the context as it is now (issue 16, item 1); a refusal denies the
        # grant before anything is minted. The epoch it was decided at is stamped on the grant.
        # Break-glass grants are never decided again (broker/redecide.py says why).
        epoch = 0
        decided: dict[str, Any] = {}
        if not req.break_glass:
            decision, epoch = await self._decide_at(req, "collect")
            if decision.outcome == "deny":
                await self._refuse(req, decision, "collect")
            decided["policy_set_hash"] = decision.policy_set_hash
        now = self._now()
        iat = int(now)
        duration = req.approved_duration_s or self._grant_duration(req.proposal, req.decision, req.approvals)
        exp = iat + duration
        if req.grant_end is not None:
            exp = min(exp, int(req.grant_end))  # never past the end fixed when the grant was approved
            if exp <= iat:
                raise DeadlinePassed(f"the grant ended at {iso(req.grant_end)}; no token can be issued")
        if req.delegation_exp is not None:
            if req.delegation_exp <= iat + 1:
                raise Conflict(f"the delegation chain expired at {iso(req.delegation_exp)}; no token can be issued")
            exp = min(exp, int(req.delegation_exp))  # the grant never outlives the delegation
        jti = new_id()
        p = req.proposal
        # RFC 8693 act: the current actor outermost, then who delegated to it, back to the root.
        actors = [agent.id, *(link["delegator"] for link in reversed(req.delegation_chain))] if req.delegation_chain else None
        claims = build_access_token_claims(
            issuer=self.settings.issuer, agent_id=agent.id, audience=p.target, issued_at=iat, expires_at=exp,
            jti=jti, action=p.action, target=p.target, tool=p.tool, dataset=p.dataset, arguments=p.arguments,
            request_id=req.id,
            approvers=req.approvers, policies=list(req.decision.get("policies", [])),
            proposal_sha256=req.proposal_sha256, break_glass=req.break_glass, jkt=jkt, actor_chain=actors,
            step_up={a["approver"]: a["step_up"] for a in req.approvals if isinstance(a.get("step_up"), str)},
        )
        token = self.keyring.sign(claims)  # signed before the state changes; discarded if the change fails
        # The target system's own credential, when the target has a plugin: issued (and its
        # handle recorded) before the state changes; revoked by the credentials' settle job
        # whenever the grant ends, whichever way it ends. A target that is down: 503, no token.
        issued = None
        if self.credentials:
            issued = await self.credentials.issue(req.id, agent.id, p.action, p.target, exp)
        cred = {"credential": issued.record()} if issued else {}
        at = iso(now)
        out = await self.store.transition(
            request_id, [APPROVED], ACTIVE,
            {"grant_jti": jti, "grant_exp": str(exp), "collected_at": repr(now), "grant_kid": self.keyring.current_kid,
             "eval_epoch": str(epoch),
             **{k: _json(v) for k, v in cred.items()}},
            [event("token.collected", at, request_id, {"agent": agent.id}, **_bg(req), jti=jti, exp=iso(exp), kid=self.keyring.current_kid,
                   audience=p.target, scope=claims.get("scope"), dpop_jkt=jkt, **cred, **decided)],
            _ms(now), deadline=str(exp * 1000), notify=SHOWN_ONLY + Kind.COLLECTED, want_request=False,
            late=self._late(req, APPROVED, now, {"action": "collect", "agent": agent.id}),
        )
        if not out.ok and issued is not None:
            await self.credentials.discard(issued, request_id)
        if out.result == "late":
            raise DeadlinePassed(f"the deadline to collect the token passed at {iso(req.deadline)}; "
                                 "the grant has expired and no token was issued")
        if out.result == "noop":
            raise Conflict("the token for this request was already collected; a token is issued only once")
        if not out.ok:
            raise Conflict(_explain(out.request or await self.get(request_id)))
        self._count("transitions", to=ACTIVE)
        return IssuedToken(token, "DPoP" if jkt else "Bearer", exp - iat, claims["authorization_details"],
                           issued.to_agent() if issued else None)

    async def complete(self, request_id: str, agent: Agent, outcome: dict | None = None) -> Request:
        """The agent reports the task done: the grant ends now. ``outcome`` (already checked by
        :func:`broker.model.parse_outcome`) is recorded on the request and in ``grant.completed``,
        with the token's use as aggregated so far (issue 18, item 6)."""
        known = await self.store.owner_and_mark(request_id)
        if known is None or known[0] != agent.id:
            raise NotFound(f"no escalation {request_id}")  # the same 404 as get_for_agent
        jti = known[2]
        use = await self.store.token_use(request_id, jti) if jti else None
        now = self._now()
        at = iso(now)
        fields = {"closed_at": repr(now), "closed_by": agent.id, "close_reason": "completed by the agent"}
        data: dict[str, Any] = {}
        if outcome is not None:
            fields["outcome"] = _json(outcome)
            data["outcome"] = outcome
        if jti:
            data["token_use"] = use or {"count": 0}
        out = await self.store.transition(
            request_id, [ACTIVE, APPROVED], COMPLETED, fields,
            [event("grant.completed", at, request_id, {"agent": agent.id}, **_mark(known[1]), **data)],
            _ms(now), deadline="-", retention_ms=self.retention_ms, notify=SHOWN_ONLY + Kind.COMPLETED,
        )
        return await self._finish(out, request_id)

    async def revoke(self, request_id: str, *, by: str, reason: str, channel: str = "api") -> Request:
        """End an approved or active grant before its time."""
        req = await self.get(request_id)
        now = self._now()
        at = iso(now)
        out = await self.store.transition(
            request_id, [ACTIVE, APPROVED], REVOKED,
            {"closed_at": repr(now), "closed_by": by, "close_reason": reason[:MAX_REASON]},
            [event("grant.revoked", at, request_id, {"by": by, "channel": channel}, reason=reason[:MAX_REASON], **_bg(req))],
            _ms(now), deadline="-", retention_ms=self.retention_ms, notify=Kind.REVOKED,
        )
        return await self._finish(out, request_id)

    async def revoke_as(self, request_id: str, approver: Approver, *, reason: str, channel: str,
                        platform_user: str | None = None) -> Request:
        """A person ends a grant early: the request's approvers, its agent's owner, security, or
        (break-glass) the engineer who broke the glass."""
        req = await self.get(request_id)
        why = rules.why_not_revoker(approver, req, self.settings.security_group)
        if why is not None:
            raise NotApprover(why)
        reason = (reason or "").strip() or "revoked by an approver"
        return await self.revoke(request_id, by=approver.id, reason=reason, channel=channel)

    # ------------------------------------------------------------------ kill switch
    async def kill_switch_preview(self, selector: Selector, approver: Approver) -> tuple[int, int]:
        """(pending requests, grants) the kill switch would end now, for a confirmation;
        :class:`NotApprover` unless ``approver`` may pull it."""
        self._check_kill_switch(approver)
        pending = grants = 0
        async for _, row in self._matching(selector):
            if row["status"] == PENDING:
                pending += 1
            else:
                grants += 1
        return pending, grants

    async def kill_switch(self, selector: Selector, approver: Approver, *, reason: str, channel: str,
                          platform_user: str | None = None, batch: int = killswitch.BATCH) -> killswitch.KillResult:
        """The kill switch (security group only): every matching pending request is denied and
        every approved or active grant revoked, in batches of ``batch`` requests per script
        call. Each request gets the state change, outbox entry and wake-up a single deny or
        revoke gives it (so the desks, long polls and signal receivers see each one), each
        batch one audit entry (``killswitch.batch``) naming its requests, and the pull one
        more (``killswitch.engaged``) naming every request it ended; the security channel is
        told once (``Kind.KILL_SWITCH``). A request that moves while the switch runs is read
        again; one that closes on its own is left as it closed."""
        self._check_kill_switch(approver)
        reason = (reason or "").strip()
        if not reason:
            raise InvalidRequest("a reason is required for the kill switch")
        if len(reason) > MAX_REASON:
            raise InvalidRequest(f"the reason is longer than {MAX_REASON} characters")
        now = self._now()
        at = iso(now)
        result = killswitch.KillResult(new_id(), selector)
        actor = {"approver": approver.id, "channel": channel, "platform_user": platform_user}
        found = [(rid, row) async for rid, row in self._matching(selector)]
        step = max(1, batch)
        for start in range(0, len(found), step):
            chunk = found[start:start + step]
            await self._kill_batch([rid for rid, _ in chunk], selector, result, actor, reason, now,
                                   rows=[row for _, row in chunk])
        ended = [*result.revoked, *result.denied]
        summary = event("killswitch.engaged", at, None, actor, kill_switch=result.id, selector=selector.to_dict(),
                        reason=reason, revoked=result.revoked, denied=result.denied)
        text = f"{result.summary()} by {approver.id} via {channel}: {reason}"
        if ended:
            # The security channel is told once, on one of the requests ended (a break-glass one
            # only when nothing else was ended: its alert has its own message).
            plain = [rid for rid in ended if rid not in result.break_glass]
            anchor = (plain or ended)[0]
            await self.store.append([summary], anchor, {"kill_switch_summary": text}, notify=Kind.KILL_SWITCH)
        else:
            await self.store.append([summary])
        self._count("kill_switch", result.count)
        log.warning("%s", text)
        return result

    def _check_kill_switch(self, approver: Approver) -> None:
        why = rules.why_not_kill_switch(approver, self.settings.security_group)
        if why is not None:
            raise NotApprover(why)

    async def _matching(self, selector: Selector):
        """(id, row) of every open request ``selector`` matches, as stored now."""
        async for rid, row in self._open_rows():
            if selector.matches(row, self._owner_of):
                yield rid, row

    async def _kill_batch(self, ids: list[str], selector: Selector, result: "killswitch.KillResult", actor: dict,
                          reason: str, now: float, rows: list | None = None) -> None:
        at = iso(now)
        by = str(actor["approver"])
        denial = {"by": by, "reason": reason, "channel": actor["channel"], "at": at, "kill_switch": result.id}
        plan = _Ending(match=lambda row: selector.matches(row, self._owner_of), by=by, actor=actor,
                       event_type="killswitch.batch",
                       event_data={"kill_switch": result.id, "selector": selector.to_dict(), "reason": reason},
                       close_reason=f"kill switch {result.id}: {reason}"[:MAX_REASON], pending_to=DENIED,
                       denial=_json(denial), mark=result.id)
        await self._end_batch(ids, plan, result, now, rows)

    async def _end_batch(self, ids: list[str], plan: "_Ending", result: "killswitch.KillResult", now: float,
                         rows: list | None = None) -> None:
        """End the open requests among ``ids`` that ``plan.match`` in one script call
        (``revoke_batch.lua``: one audit entry for the batch, each request its own state change,
        outbox entry and wake-up). ``rows``: as just read; the script refuses the batch if any
        status moved since, and then they are read again (bounded; busy ones one by one)."""
        at = iso(now)
        todo = ids
        for attempt in range(6):  # bounded: a request may move between the read and the write
            if rows is None or attempt > 0:
                rows = await self.store.open_rows(todo)
            items = []
            for rid, row in zip(todo, rows):
                if row is None or not plan.match(row):
                    continue  # closed (or changed hands) meanwhile: nothing to end
                bg = row["break_glass"] == "1"
                if row["status"] == PENDING:
                    kind = Kind.DENIED if plan.pending_to == DENIED else Kind.CANCELLED
                    denial = plan.denial if plan.pending_to == DENIED else ""
                    items.append((rid, PENDING, plan.pending_to, str(kind), denial, bg, row["agent"]))
                else:
                    items.append((rid, row["status"], REVOKED, str(Kind.REVOKED), "", bg, row["agent"]))
            if not items:
                return
            ev = event(plan.event_type, at, None, plan.actor, **plan.event_data, requests=[
                {"request_id": rid, "previous": prev, "status": new, "agent": agent or None, **_mark(bg)}
                for rid, prev, new, _, _, bg, agent in items])
            out = await self.store.revoke_batch([i[:5] for i in items], [ev], closed_at=repr(now), closed_by=plan.by,
                                                close_reason=plan.close_reason, kill_switch=plan.mark,
                                                retention_ms=self.retention_ms)
            if out.ok:
                for rid, _, new, _, _, bg, _ in items:
                    (result.revoked if new == REVOKED else result.denied).append(rid)
                    if bg:
                        result.break_glass.add(rid)
                for status in (plan.pending_to, REVOKED):
                    self._count("transitions", sum(1 for i in items if i[2] == status), to=status)
                return
            if out.result != "retry":
                raise Conflict(f"could not end a batch of requests ({out.result})")
            todo = [i[0] for i in items]
            if attempt >= 2 and len(todo) > 1:
                # Busy requests: one per script call, so one that keeps moving holds back no other.
                for rid in todo:
                    await self._end_batch([rid], plan, result, now)
                return
        raise Conflict("a request kept changing while it was being ended; try again")

    async def close_unregistered(self, registered: Callable[[str], bool]) -> int:
        """End what agents no longer in the registry (removed, denied or disabled) still hold:
        approved and active grants are revoked, pending requests withdrawn, in batches like the
        kill switch's (one ``registry.closed`` audit entry per batch naming each request, actor
        ``registry``; each request its own state change and outbox entry). Called when a reload
        of the agents file takes agents away, and at start-up, so a removal noticed by a process
        that then stopped is not lost. Every change is a compare-and-set, so replicas doing it at
        once are harmless. Returns how many changed."""
        now = self._now()
        result = killswitch.KillResult(new_id(), Selector("all"))

        def gone(row) -> bool:
            return bool(row["agent"]) and row["status"] in killswitch.OPEN and not registered(row["agent"])

        plan = _Ending(match=gone, by="registry", actor={"by": "registry", "channel": "registry"},
                       event_type="registry.closed",
                       event_data={"reason": "agent no longer registered (removed from the agents file, disabled, "
                                             "or denied)"},
                       close_reason="", pending_to=CANCELLED, denial="", mark="")
        found = [(rid, row) async for rid, row in self._open_rows()]
        found = [(rid, row) for rid, row in found if gone(row)]
        for start in range(0, len(found), killswitch.BATCH):
            chunk = found[start:start + killswitch.BATCH]
            agents = sorted({row["agent"] for _, row in chunk})
            plan = dataclasses.replace(plan, close_reason=(
                f"agent {', '.join(agents)} is no longer registered (removed from the agents file, disabled, "
                "or denied)")[:MAX_REASON])
            await self._end_batch([rid for rid, _ in chunk], plan, result, now, rows=[row for _, row in chunk])
        return result.count

    async def _open_rows(self):
        """(id, row) of every request that still has a deadline, as stored now."""
        async for ids in self.store.live_ids():
            for rid, row in zip(ids, await self.store.open_rows(ids)):
                if row is not None:
                    yield rid, row

    async def expire(self, request_id: str) -> Outcome:
        """Expire whatever deadline has passed (pending, uncollected or active); idempotent."""
        for _ in range(3):  # bounded: the state may move between the read and the write
            req = await self.store.load(request_id)
            if req is None:
                return await self.store.transition(request_id, [], EXPIRED, {}, [], _ms(self._now()), deadline="-")
            if req.status in TERMINAL:
                await self.store.unschedule(self.store.deadlines, request_id)
                return Outcome("noop", req.status)
            now = self._now()
            at = iso(now)
            why = rules.expiry_reason(req.status)
            kind = rules.expiry_event(req.status)
            out = await self.store.transition(
                request_id, [req.status], EXPIRED,
                {"closed_at": repr(now), "closed_by": "scheduler", "close_reason": why},
                [event(kind, at, request_id, {"by": "scheduler"}, previous=req.status, reason=why, **_bg(req))],
                _ms(now), deadline="-", due_check=True, retention_ms=self.retention_ms, notify=Kind.EXPIRED,
            )
            if out.result == "conflict":
                continue
            if out.ok:
                self._count("transitions", to=EXPIRED)
            return out
        return Outcome("conflict")

    async def expire_due(self, request_ids: list[str]) -> int:
        """Expire the due ones among ``request_ids`` (the scheduler's sweep): one script call
        and ONE audit entry (``requests.expired``, listing each request with its previous
        state and why) for the whole batch, so a sweep's cost is what is due, not a chain hash
        per request. Break-glass grants go one by one (``expire``): they are watched apart.
        Returns how many changed."""
        now = self._now()
        now_ms = _ms(now)
        changed = 0
        todo = list(request_ids)
        for _ in range(5):  # bounded: a request may move between the read and the write
            if not todo:
                break
            rows = await self.store.statuses(todo)
            items: list[tuple[str, str, str]] = []
            one_by_one: list[str] = []
            gone = []  # closed or deleted: nothing left to expire, only their deadline to drop
            for rid, (status, deadline, bg) in zip(todo, rows):
                if status is None or status in TERMINAL:
                    gone.append(rid)
                elif deadline is None or deadline > now_ms:
                    continue  # not due after all (its deadline moved)
                elif bg:
                    one_by_one.append(rid)
                else:
                    items.append((rid, status, rules.expiry_reason(status)))
            if gone:
                await self.store.unschedule(self.store.deadlines, *gone)
            for rid in one_by_one:
                if (await self.expire(rid)).ok:
                    changed += 1
            if not items:
                break
            at = iso(now)
            ev = event("requests.expired", at, None, {"by": "scheduler"}, requests=[
                {"request_id": rid, "type": rules.expiry_event(st), "previous": st, "reason": why}
                for rid, st, why in items])
            out = await self.store.expire_batch(items, [ev], now_ms, repr(now), self.retention_ms)
            if out.ok:
                changed += len(items)
                self._count("transitions", len(items), to=EXPIRED)
                break
            if out.result != "retry":
                break
            todo = [rid for rid, _, _ in items]  # re-read them all: one (at least) moved
        return changed

    # ------------------------------------------------------------------ tokens
    async def introspect(self, token: str, *, server: ResourceServer | None = None) -> dict:
        """RFC 7662 introspection of ``token``: :func:`broker.oauth.introspect`, whose home
        it is (kept here for callers holding a lifecycle)."""
        return await oauth.introspect(self, token, server=server)

    # ------------------------------------------------------------------ operators
    def operator_approver(self, approver_id: str) -> Approver:
        """The approver an operator acts as on the CLI."""
        a = self.directory.approver(approver_id)
        if a is None:
            raise NotApprover(f"no approver '{approver_id}' in the approvers file")
        return a

    @staticmethod
    def os_user() -> str:
        try:
            return getpass.getuser()
        except Exception:  # noqa: BLE001
            return "unknown"


@dataclass(frozen=True)
class _Ending:
    """How a batch of open requests is ended (the kill switch, or agents no longer registered):
    which rows, the actor and ``closed_by``, the batch's audit event, what a pending request
    becomes (denied, with ``denial``, or cancelled) and the request's ``kill_switch`` mark."""

    match: Callable[[dict], bool]
    by: str
    actor: dict
    event_type: str
    event_data: dict
    close_reason: str
    pending_to: str
    denial: str
    mark: str


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# A notification kind with this prefix is queued only when people were shown the request
# (a desk posted it, or it is break-glass): nobody watches a grant that policy gave at once
# for its token being collected or its task completed; the audit log records both.
SHOWN_ONLY = "?"


def _mark(break_glass: bool) -> dict:
    """Audit events of a break-glass grant carry the mark, so they can be watched apart."""
    return {"break_glass": True} if break_glass else {}


def _bg(req: Request) -> dict:
    return _mark(req.break_glass)


def _ms(t: float) -> int:
    return int(t * 1000)


# Traces (broker/tracing.py, issue 18.7): each operation is a span of its request's trace,
# carrying the request id; while tracing is off the wrappers hand back the operation itself.
Lifecycle.submit = traced("jitgate.propose", attributes=lambda agent, proposal, *a, **k: {  # type: ignore[method-assign]
    "agent": agent.id, "action": proposal.action, "target": proposal.target}, result_id=lambda r: r[0].id)(Lifecycle.submit)
for _name, _who in (("approve", "approver"), ("deny", "approver"), ("cancel", "agent"), ("collect", "agent"),
                    ("complete", "agent")):
    setattr(Lifecycle, _name, traced(f"jitgate.{_name}", attributes=lambda rid, who, *a, _who=_who, **k: {
        _who: who.id, "channel": k.get("channel")})(getattr(Lifecycle, _name)))
Lifecycle.revoke = traced("jitgate.revoke", attributes=lambda rid, **k: {  # type: ignore[method-assign]
    "by": k.get("by"), "channel": k.get("channel")})(Lifecycle.revoke)
Lifecycle.expire = traced("jitgate.expire")(Lifecycle.expire)  # type: ignore[method-assign]
