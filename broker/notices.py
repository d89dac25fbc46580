"""Notification fan-out: the one place an outbox entry becomes a :class:`~broker.notify.Notice`
for every desk.

The outbox hands over ``(kind, request id)`` at least once per committed change. This module
reads the request as it is now, parses the kind (the wire strings of :class:`Kind`, so
entries queued before an upgrade still deliver), resolves the audience once
(:func:`audience`: who may still decide, who a break-glass bypassed, security), writes the
core's sentences for break-glass events, and calls the Notifier method the kind asks for
on each desk. A late or repeated delivery is harmless: everything is rendered from the
request as it is now. A desk that fails is named in :class:`PartialDelivery` so that only
it is retried.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson

from . import rules
from .directory import Approver, Directory
from .model import Proposal, Request, iso
from .notify import Audience, Kind, MessageRef, Notice, Notifier, PartialDelivery
from .audit import event

if TYPE_CHECKING:
    from .breakglass import BreakGlass
    from .lifecycle import Lifecycle

log = logging.getLogger("jitgate.notices")

# The Notifier method each kind calls (``proposed`` posts; see :meth:`Notices.deliver`).
_REMINDERS = frozenset({Kind.REMIND, Kind.ESCALATE})
# Told to the security channel only, with the core's sentence (``Notice.text``).
_SECURITY_ONLY = frozenset({Kind.KILL_SWITCH, Kind.ALTERNATE_PATHS})


def audience(kind: Kind, req: Request, directory: Directory, *, security_group: str,
             bypassed_group: str | None = None, owner_of: rules.OwnerOf | None = None) -> Audience:
    """Who ``kind`` on ``req`` is for, by the core's rules, resolved once for every desk.

    An ordinary request's notice names who may still decide it (:func:`broker.rules.deciders`:
    the policy's group, and the backup group once escalated; on ``escalate``, the backup group
    alone, the people who just gained the right). A break-glass notice names the members of
    the group whose approval was bypassed and of the security group, leaving out the agent's
    owner and whoever approved (the engineer who broke the glass)."""
    if not kind.break_glass:
        if kind is Kind.ESCALATE:
            groups = [req.decision.get("backup_group")]
        else:
            groups = [req.decision.get("approver_group"), req.decision.get("backup_group") if req.escalated else None]
        named = tuple(g for g in groups if g)
        return Audience(deciders=tuple(rules.deciders(req, directory, groups=list(named), owner_of=owner_of)),
                        decider_groups=named)

    def members(group: str | None) -> tuple[Approver, ...]:
        if not group:
            return ()
        return tuple(a for a in directory.members(group) if a.id != req.owner and a.id not in req.approvers)

    return Audience(bypassed=members(bypassed_group), bypassed_group=bypassed_group or None,
                    security=members(security_group), security_group=security_group)


def security_text(kind: Kind, req: Request, *, reinstated_by: str | None = None) -> str:
    """The core's sentence for a break-glass event, as the security channel reads it."""
    who = req.engineer or "?"
    what = f"{req.proposal.action} on {req.proposal.target}"
    if kind is Kind.BG_GRANTED:
        return (f"BREAK-GLASS by {who} for {_subject(req)}: {what}, until {_until(req)}. Reason: "
                f"{req.proposal.justification}" + (f" (incident {req.incident})" if req.incident else "")
                + f". Review due {iso(req.review_due)}.")
    if kind is Kind.BG_REVIEW_REMINDER:
        return (f"Break-glass review still open: {who}, {what}; due {iso(req.review_due)}. "
                "Unreviewed, the engineer's break-glass right is suspended.")
    if kind is Kind.BG_SUSPENDED:
        return (f"Break-glass right of {who} SUSPENDED: the review of {req.id} was not acknowledged "
                f"in time. Reinstate with `/jit breakglass-reinstate {who}`.")
    if kind is Kind.BG_REVIEWED:
        return f"Break-glass review of {req.id} ({who}, {what}) acknowledged by {req.reviewed_by}: {req.review_comment}"
    if kind is Kind.BG_REINSTATED:
        return f"Break-glass right of {who} reinstated by {reinstated_by or '?'}."
    raise ValueError(f"{kind} is not a break-glass event")


def credential_text(kind: Kind, req: Request) -> str:
    """The core's sentence for a credential event, as the security channel reads it."""
    what = f"{req.proposal.action} on {req.proposal.target}"
    handle = (req.credential or {}).get("handle", "?")
    if kind is Kind.CRED_REVOCATION_PENDING:
        return (f"Credential revocation pending: {handle} ({what}, request {req.id}) could not be revoked in the "
                "target system; jitgate keeps retrying with back-off.")
    if kind is Kind.CRED_ORPHAN:
        return (f"Reconciler revoked a credential with no active grant behind it in {req.proposal.target} "
                f"(request {req.id}); see the audit log (credential.orphan_revoked).")
    raise ValueError(f"{kind} is not a credential event")


def bypass_text(req: Request) -> str:
    """The approvers' channel's sentence when a break-glass grant bypassed their approval."""
    return (f"Approval bypassed: {req.engineer or '?'} used break-glass for {_subject(req)} "
            f"({req.proposal.action} on {req.proposal.target}, until {_until(req)}). "
            f"Reason: {req.proposal.justification}")


def _subject(req: Request) -> str:
    return f"agent {req.agent}" if req.agent else "themself"


def _until(req: Request) -> str:
    if req.grant_exp:
        return iso(req.grant_exp)
    if req.grant_end:
        return iso(req.grant_end)  # fixed when granted, whenever the token is collected
    return f"{req.approved_duration_s // 60} min after collection"


class Notices:
    """Turns outbox entries into notices and hands them to the desks (all, or the ``only``
    ones a previous attempt missed)."""

    def __init__(self, life: "Lifecycle", breakglass: "BreakGlass | None" = None) -> None:
        self.life = life
        self.breakglass = breakglass
        self.store = life.store

    @property
    def notifiers(self) -> list[Notifier]:
        return self.life.notifiers  # the lifecycle's list: desks added to it are told too

    async def deliver(self, kind: str, request_id: str, only: set[str] | None = None) -> None:
        """Tell the desks about a committed change of kind ``kind`` (a wire string); called
        by the outbox consumer. Raises :class:`PartialDelivery` naming the desks that failed."""
        k = Kind.parse(kind)
        if k is None:
            log.warning("notification of unknown kind %r for %s dropped", kind, request_id)
            return
        if k.audit:
            await self._audit_alert(k, only)
            return
        if k is Kind.POLICY_REVIEW_DUE:
            await self._review_alert(only)
            return
        req = await self.store.load(request_id)
        if req is None:
            return
        if k is Kind.PROPOSED:
            await self._post(req)
            return
        base = await self._notice(k, req)
        refs = [MessageRef.from_dict(m) for m in req.messages]
        failures: dict[str, BaseException] = {}
        for n in self.notifiers:
            if only is not None and n.name not in only:
                continue
            notice = Notice(base.kind, req, base.audience, tuple(r for r in refs if r.transport == n.name),
                            base.text, base.announcement, base.suspended)
            try:
                await self._tell(n, notice)
            except Exception as e:  # noqa: BLE001 - one desk failing must not silence the others
                log.exception("%s could not deliver %s for %s", n.name, kind, request_id)
                failures[n.name] = e
        if failures:
            raise PartialDelivery(set(failures), next(iter(failures.values())))

    async def _audit_alert(self, kind: Kind, only: set[str] | None) -> None:
        """Tell security that audit cannot record (new grants refused) or records again. The
        notice's request stands for the audit log itself (id ``audit``), so every desk renders
        it like any other security alert."""
        life = self.life
        health = life.audit.health if life.audit is not None else None
        reason = health.reason if health is not None and health.reason else ""
        text = (f"audit log failing, new grants are refused: {reason}" if kind is Kind.AUDIT_FAILING
                else "audit log recording again: new grants are accepted")
        req = Request(id="audit", agent="jitgate", status="failing" if kind is Kind.AUDIT_FAILING else "ok",
                      proposal=Proposal(action="audit.seal", target="audit log", justification=text, duration_s=1),
                      proposal_sha256="", decision={}, created_at=life._now())
        await self._alert_security(kind, req, text, only)

    async def _review_alert(self, only: set[str] | None) -> None:
        """Tell security that no policy review was recorded for the configured period (issue 23
        item 5). The notice's request stands for the policy set (id ``policy-review-<day>``: each
        day's reminder is a new alert, not an edit of the last one)."""
        from .policyreview import DAY_S, reminder_text  # noqa: PLC0415

        life = self.life
        now = life._now()
        text = await reminder_text(life)
        req = Request(id=f"policy-review-{int(now // DAY_S)}", agent="jitgate", status="due",
                      proposal=Proposal(action="policy.review", target="policy set", justification=text, duration_s=1),
                      proposal_sha256="", decision={}, created_at=now)
        await self._alert_security(Kind.POLICY_REVIEW_DUE, req, text, only)

    async def _alert_security(self, kind: Kind, req: Request, text: str, only: set[str] | None) -> None:
        """Send a security alert about something that is not a request (the audit log, the policy
        set) to every desk in ``only`` (all when None); PartialDelivery names the desks that failed."""
        life = self.life
        security = tuple(life.directory.members(life.settings.security_group))
        notice = Notice(kind, req, Audience(security=security, security_group=life.settings.security_group), text=text)
        failures: dict[str, BaseException] = {}
        for n in self.notifiers:
            if only is not None and n.name not in only:
                continue
            try:
                await n.alert_security(notice)
            except Exception as e:  # noqa: BLE001 - one desk failing must not silence the others
                log.exception("%s could not deliver %s", n.name, kind)
                failures[n.name] = e
        if failures:
            raise PartialDelivery(set(failures), next(iter(failures.values())))

    async def _tell(self, n: Notifier, notice: Notice) -> None:
        if notice.kind.credential or notice.kind in _SECURITY_ONLY:
            await n.alert_security(notice)
        elif notice.kind.break_glass:
            await n.alert_security(notice)
            if notice.kind is Kind.BG_GRANTED:
                await n.announce(notice)
        elif notice.kind in _REMINDERS:
            await n.remind(notice)
        else:
            await n.update(notice)

    async def _notice(self, kind: Kind, req: Request) -> Notice:
        """The notice of ``kind`` on ``req`` without this desk's refs: audience and sentences."""
        life = self.life
        if kind.credential or kind in _SECURITY_ONLY:
            security = tuple(a for a in life.directory.members(life.settings.security_group))
            if kind is Kind.ALTERNATE_PATHS:
                (said,) = await self.store.request_fields(req.id, "alternate_paths_alert")
                text = said or f"agent {req.agent} keeps trying alternate paths around denials; see the audit log"
            elif kind is Kind.KILL_SWITCH:
                (summary,) = await self.store.request_fields(req.id, "kill_switch_summary")
                text = summary or "the kill switch ended this request; see the audit log (killswitch.engaged)"
            else:
                text = credential_text(kind, req)
            return Notice(kind, req, Audience(security=security, security_group=life.settings.security_group),
                          text=text)
        if not kind.break_glass:
            return Notice(kind, req, audience(kind, req, life.directory, security_group=life.settings.security_group,
                                              owner_of=life._owner_of))
        bypassed, reinstated_by = (v or None for v in await self.store.request_fields(req.id, "bypassed_group",
                                                                                         "reinstated_by"))
        who = audience(kind, req, life.directory, security_group=life.settings.security_group,
                       bypassed_group=bypassed, owner_of=life._owner_of)
        suspended = await self.breakglass.suspended_by(req) if self.breakglass is not None else False
        return Notice(kind, req, who, text=security_text(kind, req, reinstated_by=reinstated_by),
                      announcement=bypass_text(req) if kind is Kind.BG_GRANTED else "", suspended=suspended)

    async def _post(self, req: Request) -> None:
        refs: list[MessageRef] = []
        already = {m["transport"] for m in req.messages}
        failed = []
        notice = await self._notice(Kind.PROPOSED, req)
        for n in self.notifiers:
            if n.name in already:
                continue  # a retried delivery: this desk posted before
            try:
                refs.extend(await n.post_proposal(notice))
            except Exception as e:  # noqa: BLE001
                log.exception("%s could not post request %s", n.name, req.id)
                failed.append((n.name, e))
        # Desks that returned no reference (a console) cannot be skipped on a retry, but
        # re-posting there only re-renders the same state.
        if refs:
            at = iso(self.life._now())
            merged = req.messages + [r.to_dict() for r in refs]
            ev = event("notification.posted", at, req.id, refs=[r.to_dict() for r in refs])
            await self.store.append([ev], req.id, {"messages": orjson.dumps(merged).decode()})
            # Changed while we were posting (an approval on another desk)? Show it.
            now = await self.store.load(req.id)
            if now is not None and now.version != req.version:
                await self.deliver(Kind.CHANGED, req.id)
        if failed:
            raise PartialDelivery({name for name, _ in failed}, failed[0][1])  # desks that posted are skipped

