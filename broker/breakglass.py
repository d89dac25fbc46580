"""Break-glass: an on-call engineer's emergency grant — fast, but time-bounded,
attributable, loudly monitored, rate-limited and reviewed afterwards.

A break-glass grant is an ordinary request created already approved (for an agent,
which collects its token through the normal API) or already active (for the engineer
themself, who gets the token once, in private). Cedar is still asked, with
``context.break_glass = true``, so policies can forbid some targets even in an
emergency. Each grant opens a review the security group must acknowledge before a
deadline; an unreviewed grant suspends the engineer's break-glass right until security
reinstates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from . import rules
from .clock import new_id
from .directory import Approver, aliases
from .errors import Conflict, Forbidden, InvalidRequest, NotApprover, NotFound
from .lifecycle import IssuedToken, Lifecycle
from .notify import Kind
from .model import ACTIVE, APPROVED, Proposal, Request, iso
from .redisline import LuaScript
from .audit import event
from .context import build_context
from .store import events_arg, with_prelude
from .tokens import build_access_token_claims

ME = "me"
MAX_REASON = 500
MAX_INCIDENT = 100

# Check a person's break-glass limits and create the grant in ONE step: drop finished grants
# from the active set, check both limits, create the request and record its slot. A slot
# is never reserved before its request exists, so no other step can take a slot whose
# request it cannot see yet for a finished one (issue 14 item 1: racing confirmations
# purged each other's fresh reservations and went past the limits).
# KEYS: req, deadlines, audit stream, audit head, outbox, active zset, day zset
# ARGV: 1 id, 2 fields json, 3 events json, 4 deadline op, 5 status, 6 notification kind,
#       7 now ms, 8 now - 24 h in ms, 9 max active, 10 max per day, 11 the grant's end ms,
#       12 key prefix
_GRANT_BODY = """
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', ARGV[7])
-- A grant revoked or completed early frees its slot at once (and one whose record is gone).
for _, rid in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do
  local st = redis.call('HGET', ARGV[12] .. '{req:' .. rid .. '}', 'status')
  if st == false or st == 'completed' or st == 'revoked' or st == 'expired' then redis.call('ZREM', KEYS[6], rid) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', ARGV[8])
if redis.call('ZCARD', KEYS[6]) >= tonumber(ARGV[9]) then return {'active', tostring(redis.call('ZCARD', KEYS[6]))} end
if redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[10]) then return {'daily', tostring(redis.call('ZCARD', KEYS[7]))} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'conflict', 'id'} end
audit_append(KEYS[3], KEYS[4], cjson.decode(ARGV[3]))
hset_json(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'status', ARGV[5], 'version', 1)
index_grant(KEYS[1], ARGV[1])
set_deadline(KEYS[2], ARGV[1], KEYS[1], ARGV[4])
outbox(KEYS[5], ARGV[1], ARGV[6])
redis.call('ZADD', KEYS[6], ARGV[11], ARGV[1])
redis.call('ZADD', KEYS[7], ARGV[7], ARGV[1])
redis.call('PEXPIRE', KEYS[6], 7 * 86400000)
redis.call('PEXPIRE', KEYS[7], 2 * 86400000)
return {'ok', ARGV[1], '', redis.call('HGETALL', KEYS[1])}
"""

# Acknowledge a review once: the first acknowledgement wins, a repeat is a no-op.
_ACK_BODY = """
-- KEYS: req, audit stream, audit head, reviews zset, review reminders zset, outbox
-- ARGV: events json, fields json, request id
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if redis.call('HGET', KEYS[1], 'break_glass') ~= '1' then return {'not_bg'} end
local by = redis.call('HGET', KEYS[1], 'reviewed_by')
if by and by ~= '' then return {'noop', by} end
audit_append(KEYS[2], KEYS[3], cjson.decode(ARGV[1]))
hset_json(KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
outbox(KEYS[6], ARGV[3], 'bg.reviewed')
return {'ok'}
"""


class DpopRequired(Forbidden):
    """Break-glass for oneself on a broker that requires DPoP, without a key to bind the token to."""

    code, title = "dpop-required", "A DPoP key is required"


DPOP_HINT = ("this broker requires DPoP-bound tokens (JITGATE_REQUIRE_DPOP) and a token for yourself is bound to a "
             "key you hold; a chat cannot hold one, so break glass for yourself from a terminal: "
             "`jitgate breakglass grant me ACTION TARGET SECONDS REASON --as YOU --dpop-key FILE` "
             "(FILE is made if missing). Break-glass for an agent works here: the agent proves its own key.")


@dataclass(frozen=True)
class BreakGlassLimits:
    """What break-glass allows; all configurable."""

    max_duration_s: int = 3600
    review_s: int = 86400
    max_active: int = 2
    max_per_day: int = 5


@dataclass(frozen=True)
class Preview:
    """What a confirmed command would grant: shown to the engineer before they confirm."""

    subject: str
    action: str
    target: str
    duration_s: int
    requested_s: int
    reason: str
    incident: str | None
    policies: tuple[str, ...]
    note: str | None  # e.g. "cut to 30 min by policy break-glass-on-call"


@dataclass(frozen=True)
class Granted:
    request: Request
    token: IssuedToken | None  # only for ME: show once, privately, never store
    note: str | None


class BreakGlass:
    """The break-glass service (uses the lifecycle's store, gate and key ring)."""

    def __init__(self, lifecycle: Lifecycle, registry, limits: BreakGlassLimits | None = None) -> None:
        self.life = lifecycle
        self.store = lifecycle.store
        self.registry = registry
        self.limits = limits or BreakGlassLimits()
        p = self.store.prefix
        self.reviews = f"{p}bg:reviews"
        self.review_reminders = f"{p}bg:review-reminders"
        self.suspended = self.store.bg_suspended
        self._grant = LuaScript.of(with_prelude(_GRANT_BODY))
        self._ack = LuaScript.of(with_prelude(_ACK_BODY))

    # ------------------------------------------------------------------ checks
    def _now(self) -> float:
        return self.life.clock.now()

    async def suspension(self, engineer_id: str) -> dict | None:
        """Why ``engineer_id``'s right is suspended, or None."""
        return await self.store.suspension(engineer_id)

    async def suspended_by(self, req: Request) -> bool:
        """Whether break-glass grant ``req`` is what suspended its engineer's right now
        (:func:`broker.rules.suspended_by`): the one answer every desk shows. An overdue review
        is not yet a suspension; :meth:`sweep_reviews` records it, then tells the desks."""
        if not req.break_glass or req.reviewed_by or not req.engineer:
            return False
        return rules.suspended_by(req, await self.suspension(req.engineer))

    async def _check_engineer(self, engineer: Approver) -> None:
        oncall = self.life.settings.oncall_group
        suspended = rules.why_suspended(engineer)
        if suspended is not None:
            raise NotApprover(suspended)
        if oncall not in engineer.groups:
            raise NotApprover(f"only members of '{oncall}' may break glass")
        s = await self.suspension(engineer.id)
        if s:
            raise Forbidden(
                f"your break-glass right is suspended: the review of {s.get('request_id')} was not acknowledged "
                f"in time; ask {self.life.settings.security_group} to reinstate it"
            )

    async def preview(self, engineer: Approver, *, subject: str, action: str, target: str, duration_s: int,
                      reason: str, incident: str | None = None, dpop_jkt: str | None = None) -> Preview:
        """Check everything a grant would check and say what it would grant (no state change).

        With ``JITGATE_REQUIRE_DPOP`` a token for oneself (``me``) is DPoP-bound like every
        token the broker issues: without ``dpop_jkt`` (the RFC 7638 thumbprint of the
        engineer's key) it is refused with :class:`DpopRequired`, before anything is counted.
        """
        return (await self._preview(engineer, subject=subject, action=action, target=target, duration_s=duration_s,
                                    reason=reason, incident=incident, dpop_jkt=dpop_jkt))[0]

    async def _preview(self, engineer: Approver, *, subject: str, action: str, target: str, duration_s: int,
                       reason: str, incident: str | None, dpop_jkt: str | None) -> tuple[Preview, str | None]:
        """:meth:`preview`, and the hash of the policy set that decided it."""
        await self._check_engineer(engineer)
        if subject == ME and dpop_jkt is None and self.life.settings.require_dpop:
            raise DpopRequired(DPOP_HINT)
        reason = (reason or "").strip()
        if not reason:
            raise InvalidRequest("a reason is required to break glass")
        if len(reason) > MAX_REASON:
            raise InvalidRequest(f"the reason is longer than {MAX_REASON} characters")
        if incident is not None and (not incident.strip() or len(incident) > MAX_INCIDENT):
            raise InvalidRequest(f"the incident reference must be 1 to {MAX_INCIDENT} characters")
        if subject != ME and self.registry.agent(subject) is None:
            raise InvalidRequest(f"no agent '{subject}' is registered (use 'me' for yourself)")
        proposal = self._proposal(engineer, subject, action, target, duration_s, reason, incident)
        context = build_context(
            confidence=100,  # a person confirmed the intent
            duration_s=proposal.duration_s, posture=await self.life.posture(),
            evidence_count=len(proposal.evidence), delegation_depth=0, now=self._now(), break_glass=True,
        )
        decision = self.life.gate.decide(
            agent_id=subject if subject != ME else engineer.id, action=action, target=target, context=context,
            approver_principal=engineer.id if subject == ME else None,
        )
        if decision.outcome == "deny":
            await self.store.append([event("breakglass.refused", iso(self._now()), None,
                                           {"approver": engineer.id}, break_glass=True, subject=subject,
                                           action=action, target=target, reason=decision.reason,
                                           policies=list(decision.policies),
                                           policy_set_hash=decision.policy_set_hash)])
            raise Forbidden(f"policy refuses this even in an emergency: {decision.reason}")
        granted, note = _cap(duration_s, decision.max_duration_s, decision.policies, self.limits.max_duration_s)
        return (Preview(subject, action, target, granted, duration_s, reason, incident, decision.policies, note),
                decision.policy_set_hash)

    def _proposal(self, engineer: Approver, subject: str, action: str, target: str, duration_s: int,
                  reason: str, incident: str | None) -> Proposal:
        body: dict[str, Any] = {
            "action": action, "target": target, "justification": reason, "duration_s": duration_s,
            "evidence": [{"kind": "break-glass", "title": f"emergency access by {engineer.id}",
                          "excerpt": f"incident {incident}" if incident else "no incident reference given"}],
        }
        if incident:
            body["ticket"] = incident
        return Proposal.parse(body)

    # ------------------------------------------------------------------ grant
    async def grant(self, engineer: Approver, *, subject: str, action: str, target: str, duration_s: int,
                    reason: str, incident: str | None = None, channel: str, platform_user: str | None = None,
                    dpop_jkt: str | None = None) -> Granted:
        """Grant at once (after the engineer confirmed the preview). A token for oneself is
        bound to ``dpop_jkt`` (RFC 9449 ``cnf.jkt``, token type DPoP) when given, and must be
        when the broker requires DPoP."""
        if dpop_jkt is not None and subject != ME:
            raise InvalidRequest("a DPoP key binds only a token for yourself; an agent proves its own key")
        if self.life.audit is not None:
            self.life.audit.check_grants()  # an emergency grant nobody can audit is refused too
        pv, set_hash = await self._preview(engineer, subject=subject, action=action, target=target,
                                           duration_s=duration_s, reason=reason, incident=incident, dpop_jkt=dpop_jkt)
        now = self._now()
        rid = new_id()
        for_me = subject == ME
        grant_end = now + pv.duration_s  # fixed now: no token of this grant lives past it
        proposal = self._proposal(engineer, subject, action, target, pv.duration_s, reason, incident)
        sha = proposal.sha256()
        at = iso(now)
        approval = {"approver": engineer.id, "channel": channel, "at": at, "proposal_sha256": sha, "break_glass": True}
        if platform_user:
            approval["platform_user"] = platform_user
        decision = {
            "outcome": "break_glass", "policies": list(pv.policies), "approvals_required": 0,
            "approver_group": None, "max_duration_s": pv.duration_s, "channel": None, "backup_group": None,
            "reason": f"break-glass by {engineer.id}: {reason}",
        }
        review_due = now + self.limits.review_s
        bypassed = self._normal_group(subject, action, target, pv.duration_s)
        actor = {"approver": engineer.id, "channel": channel, "platform_user": platform_user}
        fields: dict[str, Any] = {
            "id": rid, "agent": "" if for_me else subject, "owner": "", "subject": f"approver:{engineer.id}" if for_me else subject,
            "proposal": _json(proposal.to_dict()), "proposal_sha256": sha, "decision": _json(decision),
            "approvals": _json([approval]), "created_at": repr(now), "break_glass": "1",
            "approved_duration_s": str(pv.duration_s), "incident": incident or "",
            "review_due": repr(review_due), "engineer": engineer.id, "bypassed_group": bypassed or "",
            "policy_set_hash": set_hash or "",
        }
        events = [event("breakglass.granted", at, rid, actor, break_glass=True, subject=subject, action=action,
                        target=target, duration_s=pv.duration_s, requested_s=pv.requested_s, reason=reason,
                        incident=incident, policies=list(pv.policies), proposal_sha256=sha,
                        review_due=iso(review_due), note=pv.note, policy_set_hash=set_hash)]
        token: IssuedToken | None = None
        if for_me:
            iat = int(now)
            exp = iat + pv.duration_s
            jti = new_id()
            claims = build_access_token_claims(
                issuer=self.life.settings.issuer, agent_id=engineer.id, audience=target, issued_at=iat,
                expires_at=exp, jti=jti, action=action, target=target, tool=None, dataset=None, request_id=rid,
                approvers=[engineer.id], policies=list(pv.policies), proposal_sha256=sha, break_glass=True,
                jkt=dpop_jkt,
            )
            claims["client_id"] = "jitgate:break-glass"
            signed = self.life.keyring.sign(claims)  # shown once to the engineer; only the jti is recorded
            token = IssuedToken(signed, "DPoP" if dpop_jkt else "Bearer", exp - iat, claims["authorization_details"])
            fields.update(grant_jti=jti, grant_exp=str(exp), collected_at=repr(now), grant_kid=self.life.keyring.current_kid)
            events.append(event("token.collected", at, rid, actor, break_glass=True, jti=jti, exp=iso(exp),
                                audience=target, kid=self.life.keyring.current_kid, dpop_jkt=dpop_jkt))
            status, deadline = ACTIVE, _ms(exp)
        else:
            fields["grant_end_ms"] = str(_ms(grant_end))
            status, deadline = APPROVED, min(_ms(now + self.life.settings.collect_ttl_s), _ms(grant_end))
        out = await self.store.run_script(
            self._grant,
            [self.store.req_key(rid), self.store.deadlines, self.store.audit_stream, self.store.audit_head,
             self.store.outbox, f"{self.store.prefix}bg:active:{engineer.id}", f"{self.store.prefix}bg:day:{engineer.id}"],
            [rid, orjson.dumps(fields), events_arg(events), str(deadline), status, Kind.BG_GRANTED, _ms(now),
             _ms(now - 86400), self.limits.max_active, self.limits.max_per_day, _ms(grant_end), self.store.prefix],
        )
        if out.result == "active":
            raise Forbidden(f"you already have {self.limits.max_active} active break-glass grants; end one first "
                            "(the `revoke <id>` command)")
        if out.result == "daily":
            raise Forbidden(f"you have used break-glass {self.limits.max_per_day} times in 24 hours; "
                            f"ask {self.life.settings.security_group} for help")
        if not out.ok:
            raise Conflict("could not record the break-glass grant; nothing was granted")
        await self.store.schedule(self.reviews, rid, _ms(review_due))
        await self.store.schedule(self.review_reminders, rid, _ms(review_reminder_at(now, review_due)))
        self.life._count("break_glass", subject="self" if for_me else "agent")
        return Granted(await self.life.get(rid), token, pv.note)

    def _normal_group(self, subject: str, action: str, target: str, duration_s: int) -> str | None:
        """Who would normally have approved this: the approver group of an ordinary request."""
        if subject == ME:
            return None
        try:
            d = self.life.gate.decide(agent_id=subject, action=action, target=target, context=build_context(
                confidence=100, duration_s=duration_s, posture="normal", evidence_count=1, delegation_depth=0,
                now=self._now()))
        except Exception:  # noqa: BLE001 - only used to address a notice
            return None
        return d.approver_group

    async def deliver(self, kind: str, request_id: str, only: set[str] | None = None) -> None:
        """Tell the desks about a break-glass event (:meth:`broker.notices.Notices.deliver`)."""
        await self.life.notices.deliver(kind, request_id, only)

    # ------------------------------------------------------------------ review
    async def acknowledge(self, request_id: str, reviewer: Approver, *, comment: str, channel: str) -> Request:
        """The security group's post-incident review (first acknowledgement wins)."""
        sec = self.life.settings.security_group
        if rules.why_suspended(reviewer) is not None:
            raise NotApprover(rules.why_suspended(reviewer) or "")
        if sec not in reviewer.groups:
            raise NotApprover(f"only members of '{sec}' may acknowledge a break-glass review")
        req = await self.life.get(request_id)
        if req.engineer is not None and req.engineer in aliases(reviewer):
            raise NotApprover("nobody reviews their own break-glass; another member of security must")
        comment = (comment or "").strip()
        if not comment:
            raise InvalidRequest("a comment is required to acknowledge a review")
        if len(comment) > MAX_REASON:
            raise InvalidRequest(f"the comment is longer than {MAX_REASON} characters")
        now = self._now()
        ev = event("breakglass.reviewed", iso(now), request_id, {"approver": reviewer.id, "channel": channel},
                   break_glass=True, comment=comment)
        fields = {"reviewed_by": reviewer.id, "reviewed_at": repr(now), "review_comment": comment}
        verdict = (await self.store.run_script(
            self._ack,
            [self.store.req_key(request_id), self.store.audit_stream, self.store.audit_head, self.reviews,
             self.review_reminders, self.store.outbox],
            [events_arg([ev]), _json(fields), request_id],
        )).result
        if verdict == "missing":
            raise NotFound(f"no request {request_id}")
        if verdict == "not_bg":
            raise InvalidRequest(f"{request_id} is not a break-glass grant")
        return await self.life.get(request_id)

    async def pending_reviews(self, limit: int = 100) -> list[Request]:
        """Break-glass grants whose review is still open, oldest deadline first."""
        out = []
        for rid in await self.store.first_in(self.reviews, limit):
            req = await self.store.load(rid)
            if req is not None:
                out.append(req)
        return out

    async def sweep_reviews(self, limit: int = 100) -> int:
        """Remind before review deadlines; suspend the engineer once one passes. Returns actions taken."""
        now = self._now()
        done = 0
        for rid in await self.store.due_in(self.review_reminders, _ms(now), limit):
            req_due = await self.store.scheduled_at(self.reviews, rid)
            if req_due is None or req_due <= now * 1000:
                # Reviewed, or already overdue: the suspension below is the news, not a reminder.
                await self.store.unschedule(self.review_reminders, rid)
                continue
            await self.store.append([event("breakglass.review_reminder", iso(now), rid, None, break_glass=True,
                                           due=iso(req_due / 1000))], rid, notify=Kind.BG_REVIEW_REMINDER)
            nxt = now + max((req_due / 1000 - now) * 0.8, 60)
            if nxt * 1000 >= req_due:
                await self.store.unschedule(self.review_reminders, rid)
            else:
                await self.store.schedule(self.review_reminders, rid, _ms(nxt))
            done += 1
        for rid in await self.store.due_in(self.reviews, _ms(now), limit):
            engineer, reviewed_by = await self.store.request_fields(rid, "engineer", "reviewed_by")
            if reviewed_by:
                await self.store.unschedule(self.reviews, rid)
                continue
            if engineer:
                info = {"request_id": rid, "since": iso(now)}
                await self.store.append([event("breakglass.suspended", iso(now), rid, None, break_glass=True,
                                               engineer=engineer, reason="review not acknowledged in time")])
                await self.store.suspend(engineer, info)
                # Told only once the suspension is in force, so desks see it when they render.
                await self.store.append([], rid, notify=Kind.BG_SUSPENDED)
            await self.store.unschedule(self.reviews, rid)
            await self.store.unschedule(self.review_reminders, rid)
            done += 1
        return done

    async def reinstate(self, engineer_id: str, by: Approver, *, channel: str) -> None:
        """Security restores a suspended engineer's break-glass right."""
        sec = self.life.settings.security_group
        if rules.why_suspended(by) is not None:
            raise NotApprover(rules.why_suspended(by) or "")
        if sec not in by.groups:
            raise NotApprover(f"only members of '{sec}' may reinstate break-glass rights")
        s = await self.suspension(engineer_id)
        if s is None:
            raise Conflict(f"{engineer_id}'s break-glass right is not suspended")
        rid = s.get("request_id")
        await self.store.append([event("breakglass.reinstated", iso(self._now()), rid,
                                       {"approver": by.id, "channel": channel}, break_glass=True, engineer=engineer_id)],
                                rid, {"reinstated_by": by.id})
        await self.store.lift_suspension(engineer_id)
        await self.store.append([], rid, notify=Kind.BG_REINSTATED)


def _cap(requested_s: int, policy_s: int | None, policies: tuple[str, ...], limit_s: int) -> tuple[int, str | None]:
    """The granted duration and, when it is less than asked, a note naming the limit that
    actually applied: the policy's ``@max_duration``, the installation's break-glass limit
    (``JITGATE_BREAKGLASS_MAX_S``), or both when they are equal."""
    caps = [c for c in (policy_s, limit_s) if c]
    cap = min(caps)
    granted = min(requested_s, cap)
    if granted >= requested_s:
        return granted, None
    by = []
    if policy_s and policy_s == cap:
        by.append(f"policy {', '.join(policies)}")
    if limit_s == cap:
        by.append("the break-glass limit (JITGATE_BREAKGLASS_MAX_S)")
    return granted, f"cut to {_span(granted)} by {' and '.join(by)}"


def _span(seconds: int) -> str:
    """``30 min`` for whole minutes, else ``90 s``: never a rounded figure that is not the grant."""
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def review_reminder_at(granted_at: float, review_due: float) -> float:
    """When the first review reminder of a break-glass grant is due: halfway to the review
    deadline."""
    return granted_at + (review_due - granted_at) / 2


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _ms(t: float) -> int:
    return int(t * 1000)


__all__ = ["ME", "BreakGlass", "BreakGlassLimits", "DpopRequired", "Granted", "Preview"]
