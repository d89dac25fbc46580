"""Platform-neutral wording of a request: what every approval desk says, in one place.

Everything here returns plain, *unescaped* sentences; each platform escapes and truncates
for its own markup (Slack mrkdwn, Adaptive Card text) before showing them. Agent-written
text passes through untouched so the platform's escaping is the single place it is made
inert. Names (agent, approver, group, policy ids) come from operator files.
"""

from __future__ import annotations

import json
import time

from typing import Callable

from broker.rules import fmt_duration  # its home: the core (agents read durations in reasons too)
from broker import rules
from broker.rules import chain_owners
from broker.model import ACTIVE, APPROVED, CANCELLED, COMPLETED, DENIED, EXPIRED, PENDING, REVOKED, Request

# Offered by "approve for less time": every choice below the approvable maximum.
DURATION_CHOICES = (60, 300, 600, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 24 * 3600)

# Events whose outcome the agent's owner hears about directly.
OUTCOME_EVENTS = frozenset({"approved", "denied", "expired", "revoked"})


def plural(n: int, word: str) -> str:
    """``1 approval``, ``2 approvals``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def fmt_time(ts: float | None) -> str:
    """An instant as ``2024-05-01 10:15 UTC`` (the fallback where a platform cannot localise)."""
    if ts is None:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def fmt_confidence(value: float | None) -> str:
    """The agent's confidence as a percentage, or ``not given``."""
    return "not given" if value is None else f"{int(value * 100 + 1e-9)}%"


def approvals_required(req: Request) -> int:
    return int(req.decision.get("approvals_required") or 0)


def approvals_missing(req: Request) -> int:
    """How many more approvals a pending request needs."""
    return max(0, approvals_required(req) - len(req.approvals))


def missing_words(req: Request) -> str:
    """What a pending request still needs, per group for a mixed quorum: ``1 more approval``,
    ``1 approval from security and 2 from sre`` (the core's count, :func:`broker.rules.quorum_missing`)."""
    if rules.quorum(req) is not None:
        return rules.quorum_words(rules.quorum_missing(req))
    return plural(approvals_missing(req), "more approval")


def quorum_lines(req: Request) -> list[str]:
    """For a mixed quorum, one line per group: ``security: 1 of 1 (carol)``, ``sre: 0 of 1``;
    empty for a request that needs its approvals from one group."""
    q = rules.quorum(req)
    if q is None:
        return []
    out = []
    for group, need in q:
        who = [a["approver"] for a in req.approvals if a.get("group") == group]
        out.append(f"{group}: {len(who)} of {need}" + (f" ({', '.join(who)})" if who else ""))
    return out


def arguments_text(req: Request) -> str | None:
    """The proposal's ``arguments`` as the agent sent them (compact JSON, its key order), or None.
    Agent-written: the platform escapes it like any other agent text."""
    args = req.proposal.arguments
    if args is None:
        return None
    return json.dumps(args, ensure_ascii=False, separators=(", ", ": "))


def verdict(req: Request) -> str:
    """The policy's verdict in words: ``needs 2 approvals from sre; decided by policy prod-deploy``."""
    d = req.decision
    reason = d.get("reason")
    if reason:
        return reason
    policies = list(d.get("policies") or [])
    decided = ("policy " if len(policies) == 1 else "policies ") + ", ".join(policies) if policies else "default"
    n = approvals_required(req)
    return f"needs {plural(n, 'approval')} from {d.get('approver_group') or 'nobody'}; decided by {decided}"


approvable_max = rules.approvable_max  # the lifecycle's own bound: offered choices never exceed it


def shorter_durations(req: Request, max_duration_s: int) -> list[int]:
    """The "approve for less time" choices: the standard durations strictly below the maximum."""
    top = approvable_max(req, max_duration_s)
    return [d for d in DURATION_CHOICES if d < top]


def status_line(req: Request) -> str:
    """One sentence saying where the request stands now."""
    s = req.status
    if s == PENDING:
        need = approvals_missing(req)
        have = len(req.approvals)
        line = f"Waiting for {plural(need, 'more approval')}"
        if rules.quorum(req) is not None:
            line = f"Waiting for {missing_words(req)} ({'; '.join(quorum_lines(req))})"
        elif have:
            line += f" ({have} of {approvals_required(req)} so far: {', '.join(req.approvers)})"
        if req.escalated and req.decision.get("backup_group"):
            line += f"; escalated to {req.decision['backup_group']}"
        return line
    if s == APPROVED:
        who = ", ".join(req.approvers) or "policy"
        return f"Approved by {who} for {fmt_duration(req.approved_duration_s)}; waiting for the agent to collect its token"
    if s == ACTIVE:
        return f"Approved by {', '.join(req.approvers) or 'policy'}; token collected, the grant ends at {fmt_time(req.grant_exp)}"
    if s == DENIED:
        den = req.denial or {}
        return f"Denied by {den.get('by', 'policy')}: {den.get('reason', '')}".rstrip(": ")
    if s == EXPIRED:
        line = f"Expired: {req.close_reason or 'deadline passed'}"
        return line + (" (denied by default)" if req.approved_duration_s is None else "")
    if s == CANCELLED:
        return "Withdrawn by the agent"
    if s == COMPLETED:
        line = "Completed: the agent reported the task done and the grant has ended"
        outcome = outcome_line(req)
        return f"{line}. {outcome}" if outcome else line
    if s == REVOKED:
        return f"Revoked by {req.closed_by or 'unknown'}: {req.close_reason or 'no reason given'}"
    return s


def event_sentence(req: Request, event: str) -> str | None:
    """A short sentence for the thread under the proposal saying what just happened, or None
    when the event needs no reply (``changed``, and ``approval`` which is said per approver)."""
    if event == "approved":
        return (f"Approved by {', '.join(req.approvers) or 'policy'} for {fmt_duration(req.approved_duration_s)}. "
                f"{req.agent} may now collect its token.")
    if event == "denied":
        den = req.denial or {}
        return f"Denied by {den.get('by', 'policy')}: {den.get('reason', '')}".rstrip(": ")
    if event == "expired":
        if req.collected_at is not None:
            return "The grant reached its time limit and was revoked."
        if req.approved_duration_s is not None:
            return "Expired: the token was not collected in time; nothing was granted."
        return "Expired: nobody decided before the deadline, so the request is denied by default."
    if event == "cancelled":
        return f"{req.agent} withdrew the request."
    if event == "collected":
        return f"{req.agent} collected its token; the grant ends at {fmt_time(req.grant_exp)}."
    if event == "completed":
        outcome = outcome_line(req)
        return f"{req.agent} reported the task done; the grant has ended." + (f" {outcome}" if outcome else "")
    if event == "revoked":
        return f"Revoked by {req.closed_by or 'unknown'}: {req.close_reason or 'no reason given'}. The token no longer works."
    if event == "asked_again":
        return asked_again_line(req)
    return None


def outcome_line(req: Request) -> str | None:
    """What the agent reported when it completed (issue 18, item 6): ``Outcome: failure —
    <summary> (2 evidence links)``, or None when it reported none. The summary is agent text
    (at most 500 characters, checked by the core); the links are listed by
    :func:`outcome_links`."""
    o = getattr(req, "outcome", None)
    if not isinstance(o, dict) or o.get("status") not in ("success", "failure"):
        return None
    line = f"Outcome reported by the agent: {o['status']}"
    if o.get("summary"):
        line += f" — {o['summary']}"
    links = outcome_links(req)
    if links:
        line += f" ({plural(len(links), 'evidence link')})"
    return line


def outcome_links(req: Request) -> list[str]:
    """The evidence links of the completion outcome, as the agent sent them (https only, at most
    10, each at most 2048 characters: the core checked). Shown, never hidden behind a label."""
    o = getattr(req, "outcome", None)
    links = o.get("evidence") if isinstance(o, dict) else None
    return [u for u in links if isinstance(u, str)][:10] if isinstance(links, list) else []


def event_key(req: Request, event: str) -> str:
    """The say-once marker of ``event``'s thread reply: once per request, except a repeat of the
    proposal, which is said once per repeat."""
    return f"{event}:{req.asked_again}" if event == "asked_again" else event


def asked_again_line(req: Request) -> str | None:
    """What the agent said when it proposed the same task again (dedupe, issue 19), or None."""
    if not req.asked_again:
        return None
    line = f"{req.agent} proposed the same again ({plural(req.asked_again, 'time')} so far; nobody is asked twice)"
    said = req.repeats[-1] if req.repeats else {}
    if said.get("justification"):
        line += f". New justification: {said['justification']}"
    if said.get("evidence") is not None:
        line += f". Evidence now: {plural(len(said['evidence']), 'item')}"
    return line


def approval_sentence(req: Request, index: int) -> str:
    """``bob approved (1 of 2)`` for the approval at ``index``, with a shorter duration if chosen."""
    a = req.approvals[index]
    counted = f" for {a['group']}" if a.get("group") else ""
    line = f"{a['approver']} approved{counted} ({index + 1} of {approvals_required(req)})"
    if a.get("duration_s"):
        line += f" for at most {fmt_duration(a['duration_s'])}"
    return line


def owner_sentence(req: Request, event: str) -> str:
    """What the agent's owner is told on an outcome."""
    p = req.proposal
    what = f"{req.agent}'s request to {p.action} on {p.target}"
    if event == "approved":
        return f"{what} was approved by {', '.join(req.approvers) or 'policy'} for {fmt_duration(req.approved_duration_s)}."
    if event == "denied":
        den = req.denial or {}
        return f"{what} was denied by {den.get('by', 'policy')}: {den.get('reason', '')}".rstrip(": ")
    if event == "expired":
        return f"{what} expired: {req.close_reason or 'deadline passed'}."
    if event == "revoked":
        return f"{what} was revoked by {req.closed_by or 'unknown'}: {req.close_reason or 'no reason given'}."
    return f"{what} is now {req.status}."


def owner_hears(req: Request, event: str) -> bool:
    """Whether the agent's owner is told of ``event`` directly (a DM or personal chat):
    outcomes only, and not a grant that simply ran out after use, nor their own revocation."""
    if event not in OUTCOME_EVENTS:
        return False
    if event == "expired" and req.collected_at is not None:
        return False
    return not (event == "revoked" and req.closed_by == req.owner)


def reminder_sentence(req: Request) -> str:
    """A nudge for a request still pending."""
    group = req.decision.get("approver_group") or "approvers"
    needs = missing_words(req) if rules.quorum(req) is not None else \
        f"{plural(approvals_missing(req), 'more approval')} from {group}"
    return (f"Reminder: {req.agent}'s request to {req.proposal.action} on {req.proposal.target} still needs "
            f"{needs}; it expires at {fmt_time(req.deadline)}.")


def escalation_sentence(req: Request, backup_group: str) -> str:
    """The request now escalates to the backup group."""
    group = req.decision.get("approver_group") or "the approvers"
    return (f"Escalated: nobody from {group} has decided yet, so members of {backup_group} may now decide too "
            f"(still {plural(approvals_missing(req), 'approval')} needed).")


def timeline(req: Request) -> list[str]:
    """Each step so far, oldest first (from the stored request; bounded by its approvals)."""
    steps = [f"{fmt_time(req.created_at)} proposed by {req.agent}"]
    for i, a in enumerate(req.approvals):
        steps.append(f"{a.get('at', '')[:16].replace('T', ' ')} UTC {approval_sentence(req, i)}")
    if req.denial and req.status == DENIED:
        steps.append(f"{str(req.denial.get('at', ''))[:16].replace('T', ' ')} UTC denied by {req.denial.get('by', 'policy')}")
    if req.collected_at is not None:
        steps.append(f"{fmt_time(req.collected_at)} token collected by {req.agent}")
    if req.closed_at is not None and req.status in (EXPIRED, CANCELLED, COMPLETED, REVOKED):
        steps.append(f"{fmt_time(req.closed_at)} {req.status}" + (f" by {req.closed_by}" if req.closed_by else ""))
    return steps


def excluded_line(req) -> str | None:
    """Who may not decide a delegated request and why, for approvers (lifecycle.check_approver
    enforces it): everyone who owns an agent along the chain. None when there is no chain (the
    plain "never the agent's owner" rule is said with the owner)."""
    if not getattr(req, "delegation_chain", None):
        return None
    parts = []
    for person, agents in chain_owners(req).items():
        roles = [f"{a} (the requesting agent)" if a == req.agent else f"{a} (delegated along the chain)" for a in agents]
        parts.append(f"{person}, owner of {', '.join(roles)}")
    if not parts:
        return None
    return ("Excluded from deciding: " + "; ".join(parts)
            + ". Nobody who owns an agent in the delegation chain may approve it.")


def delegation_links(req) -> list[str]:
    """The verified delegation chain, one plain line per link (root first), for approvers:
    who let whom ask for what, until when. Empty when the agent acts for itself."""
    out = []
    for link in getattr(req, "delegation_chain", None) or []:
        if not isinstance(link, dict):
            continue
        actions = ", ".join(link.get("actions") or []) or "?"
        targets = ", ".join(link.get("targets") or []) or "?"
        line = f"{link.get('delegator', '?')} → {link.get('delegate', '?')}: {actions} on {targets}"
        if link.get("reason"):
            line += f" ({link['reason']})"
        out.append(line)
    return out


# ---------------------------------------------------------------------------- break-glass
# What every desk says about a break-glass grant. A sentence that holds an instant takes
# ``when`` (default ``fmt_time``), so a platform may show it localised (Slack's date
# markup); those sentences hold no other variable text, so nothing in them needs escaping.
BG_WARNING = "You are about to break glass"
BG_AT_ONCE = "This grants access at once, without approval."
BG_SHOWN_ONCE = "It is shown only this once and jitgate does not keep it"


def bg_subject(req: Request) -> str:
    """``agent ops-bot`` or ``frank themself``: whom a grant is for."""
    return f"agent {req.agent}" if req.agent else f"{req.engineer or '?'} themself"


def bg_headline(req: Request) -> str:
    """``Break-glass by frank``."""
    return f"Break-glass by {req.engineer or '?'}"


def bg_summary(req: Request) -> str:
    """One line for notifications: who broke glass, for whom, what."""
    p = req.proposal
    return f"{bg_headline(req)} for {bg_subject(req)}: {p.action} on {p.target}"


def bg_duration(pv) -> str:
    """A break-glass preview's duration, and why it was cut when it was."""
    text = fmt_duration(pv.duration_s)
    if pv.note:
        text += f" (requested {fmt_duration(pv.requested_s)}; {pv.note})"
    return text


def bg_confirm_notice(review_s: int, *, place: str) -> str:
    """What confirming sets off; ``place`` is what the platform calls the security room."""
    return (f"The security {place} is told at once and the usual approvers hear that their approval was bypassed. "
            f"The security group must review this within {fmt_duration(review_s)}; unreviewed, your break-glass "
            "right is suspended.")


def bg_grant_line(req: Request) -> str:
    """Where the grant stands now."""
    if req.status == APPROVED:
        return f"Granted; waiting for {req.agent} to collect its token"
    if req.status == ACTIVE:
        return f"Active; ends at {fmt_time(req.grant_exp)}"
    if req.status == REVOKED:
        return f"Revoked by {req.closed_by or 'unknown'}: {req.close_reason or 'no reason given'}"
    if req.status == EXPIRED:
        return "Ended: the time limit passed" if req.collected_at is not None else "Ended: the token was never collected"
    return f"{req.status.capitalize()}: {req.close_reason or ''}".rstrip(": ")


def bg_until(req: Request, when: Callable[[float | None], str] = fmt_time) -> str:
    """Until when the grant runs (or how long, once collected)."""
    if req.grant_exp is not None:
        return when(req.grant_exp)
    if req.status == APPROVED and req.grant_end is not None:
        return f"{when(req.grant_end)} (collect by {when(req.deadline)})"
    if req.status == APPROVED:
        return f"{fmt_duration(req.approved_duration_s)} after collection (collect by {when(req.deadline)})"
    return "not collected"


def bg_event_sentence(req: Request, event: str) -> str | None:
    """A reply under the security alert for a change of the grant, or None."""
    if event == "collected":
        return event_sentence(req, event)
    if event in ("revoked", "expired"):
        return f"{bg_grant_line(req)}." + (" The token no longer works." if event == "revoked" else "")
    return "Completed by the agent; the grant has ended." if event == "completed" else None


def bg_granted(req: Request, note: str | None) -> str:
    """What was granted: ``restart on prod/api for 15 min (cut …)``."""
    p = req.proposal
    return f"{p.action} on {p.target} for {fmt_duration(req.approved_duration_s)}" + (f" ({note})" if note else "")


def bg_review_due(req: Request, when: Callable[[float | None], str] = fmt_time) -> str:
    """That security knows, and by when the review is due."""
    return f"Security has been told; a review is due by {when(req.review_due)}."


def bg_suspended(req: Request) -> str:
    """The consequence of an overdue review."""
    return f"{req.engineer}'s break-glass right is suspended until the security group reinstates it"


def bg_reviews_heading(everyone: bool, *, count: int = 0) -> str:
    """The ``reviews`` answer's heading (``count`` 0: nothing is open)."""
    if not count:
        return "No break-glass review is open." if everyone else "None of your break-glass grants awaits review."
    return "Open break-glass reviews" if everyone else "Your break-glass grants awaiting review"


# --------------------------------------------------------------------------- issue 19, items 3 and 5
def _epoch_of(at: object) -> float | None:
    from datetime import datetime  # noqa: PLC0415 - only these lines parse ISO instants

    try:
        return datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def linked_line(req: Request) -> str | None:
    """``Related to a request bob denied 3 min before this proposal: <reason> …`` when the core
    linked this proposal to a recent denial (alternate paths), else None. Measured from the
    proposal, so the line stays true however late the message is re-rendered."""
    link = req.linked_to
    if not isinstance(link, dict) or not link.get("request"):
        return None
    at = _epoch_of(link.get("at"))
    when = f" {fmt_duration(max(1, int(req.created_at - at)))} before this proposal" if at is not None else ""
    by = link.get("by") or "?"
    who = {"policy": "the policies", "denial-memory": "denial memory"}.get(by, by)
    what = f"{link.get('action') or '?'} on {link.get('target') or '?'}"
    reason = link.get("reason") or "no reason given"
    return (f"Related to a request {who} denied{when}: {reason} (that request: {what}, {link['request']}; "
            f"this one asks {link.get('why') or 'something close to it'})")


def history_lines(req: Request) -> list[str]:
    """The agent's recent history as the core stored it when the proposal arrived
    (:mod:`broker.history`; every desk and re-render shows the same figures): the 24 h's
    requests, grants and denials, grants active and other requests waiting then, the last
    denials with who and why, and whether this proposal is linked to a denial. Empty for a request
    without one (break-glass, or recorded before this existed)."""
    from broker.history import History  # noqa: PLC0415 - the core's dataclass

    h = History.from_dict(req.history)
    if h is None:
        return []
    lines = [f"{req.agent}, 24 h before this proposal: {plural(h.requests_24h, 'request')}, {h.granted_24h} granted, "
             f"{h.denied_24h} denied; then {plural(h.active_grants, 'active grant')}, "
             f"{plural(h.waiting, 'other request')} waiting for people"]
    for d in h.last_denials:
        who = {"policy": "the policies", "denial-memory": "denial memory"}.get(d.by, d.by)
        lines.append(f"denied by {who}: {d.action} on {d.target}: {d.reason or 'no reason given'} ({d.request})")
    lines.append("linked to a recent denial: yes (see above)" if req.linked_to else "linked to a recent denial: no")
    return lines
