"""Deciding again (issue 16, item 1): the policy set is asked again when an approval is
recorded, when the grant is approved, at collection, and whenever the risk posture or the
loaded policies change. A request the policies no longer permit is denied (pending,
approved) or its grant revoked (active), with the policy ids in the reason the agent reads,
the audit entry and the desks' message.

Two paths after a posture or policy change, so that neither alone bounds how fast a token
goes inactive:

- :func:`reevaluate_open` walks every open request (the deadline set holds exactly the
  pending, approved and active ones), in batches of 500: one pipelined read of the hashes,
  one of the agents' grant counts, a Cedar call per request, and ONE script call
  (``close_batch.lua``) that closes the batch's refused requests with one audit entry;
  cost proportional to the open requests.
- Every change advances the *evaluation epoch* in Redis; each active grant records the
  epoch it was last decided at, and introspection (:func:`recheck_grant`) decides a grant
  stamped with an older epoch again before answering. A token is therefore inactive at the
  first introspection after the change, whether or not the walk has reached it.

Break-glass grants are never decided again: they exist for incidents, and a posture of
``incident`` must not end the on-call engineer's access in the middle of one. They stay
under the security group's review, its revocation and the per-person limits
(``breakglass.py``). Obligations (how many approvals, from which group, the duration cap)
are fixed at submit; deciding again only permits or refuses.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import orjson

from . import alternate, rules
from .audit import event
from .context import GrantUse, build_context
from .identity.delegation import DelegationLink
from .model import ACTIVE, APPROVED, DENIED, PENDING, REVOKED, Request, iso
from .notify import Kind
from .policy import Decision

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

log = logging.getLogger("jitgate.redecide")

OPEN = (PENDING, APPROVED, ACTIVE)
BATCH = 500


def approved_at(req: Request) -> float | None:
    """When ``req`` was approved (its grant's end minus the approved duration), or None."""
    if req.status not in (APPROVED, ACTIVE) or req.grant_end is None or req.approved_duration_s is None:
        return None
    return req.grant_end - req.approved_duration_s


def use_for(req: Request, counts: tuple[int, int, int], now: float) -> GrantUse:
    """The agent's grant use from the index counts, without ``req`` itself."""
    active, active_env, last_hour = counts
    mine = req.status == ACTIVE
    recent = mine and req.collected_at is not None and req.collected_at >= now - 3600
    return GrantUse(active=max(active - mine, 0), active_env=max(active_env - mine, 0),
                    last_hour=max(last_hour - recent, 0))


def context_for(life: Lifecycle, req: Request, stage: str, *, posture: str, now: float, use: GrantUse,
                extra_approval: dict | None = None) -> dict:
    """The Cedar context of ``req`` at ``stage`` (:func:`broker.context.build_context`)."""
    approvals = [*req.approvals, *([extra_approval] if extra_approval else [])]
    p = req.proposal
    return build_context(
        confidence=p.confidence_pct, duration_s=p.duration_s, posture=posture, evidence_count=len(p.evidence),
        delegation_depth=len(req.delegation_chain), now=now, break_glass=req.break_glass, stage=stage,
        approvals=approvals, approved_at=approved_at(req), groups_of=life.groups_of, use=use, proposal=p,
    )


def decide_again(life: Lifecycle, req: Request, context: dict) -> Decision:
    """Ask the policies about ``req`` again (its delegation links too); anything unexpected is a deny."""
    try:
        d = life.gate.decide(agent_id=req.agent, action=req.proposal.action, target=req.proposal.target,
                             context=context)
        if req.delegation_chain and d.outcome != "deny":
            links = [DelegationLink(index=int(link["link"]), delegator=link["delegator"], delegate=link["delegate"],
                                    actions=tuple(link.get("actions") or ()), targets=tuple(link.get("targets") or ()),
                                    issued_at=link.get("issued_at"), expires_at=link.get("expires_at"),
                                    jti=link.get("jti"), reason=link.get("reason"))
                     for link in req.delegation_chain]
            d = life._delegated_decision(d, links, context)
    except Exception as e:  # noqa: BLE001 - unknown means deny
        log.exception("policy evaluation failed while deciding %s again", req.id)
        d = Decision.deny(f"policy evaluation failed: {e.__class__.__name__}")
    if d.policy_set_hash is None:  # a decision made outside the gate (delegation, failure)
        d = dataclasses.replace(d, policy_set_hash=life.gate.policy_set_hash)
    return d


async def record_shadow(life: Lifecycle, req: Request, decision: Decision, stage: str, now: float) -> None:
    """Record that the shadow policies would have refused ``req`` at ``stage`` where the
    enforcing ones permit it (issue 23 item 2): a ``policy.shadow`` entry that changes nothing.
    (A refusal the shadow set would not have made is in the closing entry's ``shadow``.) Best
    effort: a failure to record is logged, never turned into a different outcome."""
    try:
        await life.store.append([event("policy.shadow", str(iso(now)), req.id, None, stage=stage,
                                       decision={"outcome": decision.outcome, "policies": list(decision.policies)},
                                       shadow=dict(decision.shadow or {}))])
    except Exception:  # noqa: BLE001 - the shadow set never changes what happens to a request
        log.exception("could not record the shadow decision on %s", req.id)


def refusal(decision: Decision, stage: str) -> str:
    """The reason the agent reads when a step's decision refuses what was allowed before."""
    return f"the policies no longer permit this ({stage}): {decision.reason}"[:500]


async def state_for(life: Lifecycle, req: Request, now: float) -> tuple[str, int, GrantUse]:
    """(posture, evaluation epoch, the agent's grant use) for deciding ``req`` again now:
    one round trip, uncached (a posture set on another replica counts at once)."""
    stored, epoch, counts = await life.store.decision_state(req.agent, life.env_of(req), int(now * 1000))
    return rules.posture_or_strictest(stored), epoch, use_for(req, counts, now)


async def use_of(life: Lifecycle, reqs: list[Request], now: float) -> list[GrantUse]:
    """Each request's agent grant use (one pipelined round trip for the distinct agents)."""
    pairs = sorted({(r.agent, life.env_of(r)) for r in reqs})
    counts = dict(zip(pairs, await life.store.grant_use(pairs, int(now * 1000))))
    return [use_for(r, counts[(r.agent, life.env_of(r))], now) for r in reqs]


def _closing(req: Request, decision: Decision, stage: str, at: str, now: float) -> tuple[str, dict, bytes, str]:
    """(new status, fields, per-request audit event, notification kind) for closing ``req``."""
    reason = refusal(decision, stage)
    policies = list(decision.policies)
    shadow = {"shadow": dict(decision.shadow)} if decision.shadow else {}  # issue 23 item 2
    if req.status == ACTIVE:
        fields = {"closed_at": repr(now), "closed_by": "policy", "close_reason": reason}
        ev = event("grant.revoked", at, req.id, {"policy": policies}, reason=reason, stage=stage, policies=policies,
                   policy_set_hash=decision.policy_set_hash, **shadow)
        return REVOKED, fields, ev, Kind.REVOKED
    denial = {"by": "policy", "reason": reason, "policies": policies, "at": at, "stage": stage}
    fields = {"denial": orjson.dumps(denial).decode(), "closed_at": repr(now), "closed_by": "policy", "close_reason": reason}
    ev = event("request.denied", at, req.id, {"policy": policies}, reason=reason, stage=stage, previous=req.status,
               policy_set_hash=decision.policy_set_hash, **shadow)
    return DENIED, fields, ev, Kind.DENIED


async def close_one(life: Lifecycle, req: Request, decision: Decision, stage: str) -> bool:
    """Deny (pending, approved) or revoke (active) ``req`` because ``decision`` refuses it:
    one compare-and-set with its audit entry, as a single denial or revocation. False when
    it had moved meanwhile (then nothing changed)."""
    now = life._now()
    to, fields, ev, kind = _closing(req, decision, stage, iso(now), now)
    if to == DENIED and req.agent:
        # A refusal by policy counts for alternate paths as one at submit does (broker/alternate.py).
        agents = [req.agent, *(str(link.get("delegator", "")) for link in req.delegation_chain)]
        await alternate.remember(life, agents, req.owner, req.id, now)
    out = await life.store.transition(req.id, [req.status], to, fields, [ev], int(now * 1000), deadline="-",
                                      retention_ms=life.retention_ms, notify=kind, want_request=False)
    if out.ok:
        life._count("transitions", to=to)
        life._count("redecided", stage=stage)
    return out.ok


async def recheck_grant(life: Lifecycle, request_id: str) -> bool:
    """Decide an active grant again at introspection, after a posture or policy change
    (its epoch stamp is older than the current epoch). Returns whether it is still active;
    a refused grant is revoked at once."""
    req = await life.store.load(request_id)
    if req is None or req.status != ACTIVE:
        return False
    if req.break_glass:
        return True
    now = life._now()
    posture, epoch, use = await state_for(life, req, now)
    decision = decide_again(life, req, context_for(life, req, "recheck", posture=posture, now=now, use=use))
    if decision.outcome == "deny":
        await close_one(life, req, decision, "recheck")
        return False  # revoked now, or it moved (closed) meanwhile: inactive either way
    await life.store.stamp([request_id], epoch)
    return True


async def reevaluate_open(life: Lifecycle, *, trigger: str, batch: int = BATCH) -> dict:
    """Decide every open request again (posture or policy change: ``trigger`` says which).
    Refused ones are closed batch by batch, one audit entry (``requests.redecided``) per
    batch naming each request, its previous state, why and the policies; the active grants
    still permitted are stamped with the epoch. Returns counts."""
    stored, epoch = await life.store.decision_inputs()
    posture = rules.posture_or_strictest(stored)
    checked: set[str] = set()
    closed = 0
    async for ids in life.store.live_ids(batch):
        reqs = [r for r in await life.store.load_many(ids) if r is not None and r.status in OPEN and not r.break_glass]
        for _ in range(5):  # bounded: a request may move between the read and the write
            if not reqs:
                break
            now = life._now()
            uses = await use_of(life, reqs, now)
            refused: list[tuple[Request, Decision]] = []
            kept: list[str] = []
            for req, use in zip(reqs, uses):
                d = decide_again(life, req, context_for(life, req, "recheck", posture=posture, now=now, use=use))
                if d.outcome == "deny":
                    refused.append((req, d))
                elif req.status == ACTIVE:
                    kept.append(req.id)
            checked.update(r.id for r in reqs)
            if kept:
                await life.store.stamp(kept, epoch)
            if not refused:
                break
            at = iso(now)
            items, listed = [], []
            for req, d in refused:
                to, fields, _ev, kind = _closing(req, d, "recheck", at, now)
                items.append((req.id, req.status, to, fields, kind.value))
                listed.append({"request_id": req.id, "type": "grant.revoked" if to == REVOKED else "request.denied",
                               "previous": req.status, "reason": fields["close_reason"], "policies": list(d.policies),
                               "policy_set_hash": d.policy_set_hash,
                               **({"shadow": dict(d.shadow)} if d.shadow else {})})
            ev = event("requests.redecided", at, None, {"by": "policy"}, trigger=trigger, posture=posture, epoch=epoch,
                       requests=listed, policy_set_hash=life.gate.policy_set_hash)
            out = await life.store.close_batch(items, [ev], int(now * 1000), life.retention_ms)
            if out.ok:
                closed += len(items)
                life._count("redecided", len(items), stage="recheck")
                break
            if out.result != "retry":
                break
            # One moved: re-read the refused ones and decide them again.
            again = await life.store.load_many([r.id for r, _ in refused])
            reqs = [r for r in again if r is not None and r.status in OPEN and not r.break_glass]
    return {"checked": len(checked), "closed": closed, "epoch": epoch}

