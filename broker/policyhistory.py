"""Policy decisions read back from the audit log (issue 23, items 2, 3 and 5).

Every proposal leaves two entries at submit: ``proposal.received`` (the agent, the proposal)
and ``policy.decision`` (the decision, the policies that decided it, the full Cedar
``context`` it was decided from, and ``shadow`` when the shadow set disagreed). From them:

- :func:`shadow_report`: the requests where the shadow policies would have decided
  otherwise: at submit; at a re-decision that closed a request (``request.denied`` /
  ``grant.revoked``, and each request of a ``requests.redecided`` batch, carry ``shadow``
  too); at a re-decision the shadow set would have refused (``policy.shadow``);
- :func:`replay`: every recorded proposal decided again by a candidate policy set, and what
  would change;
- :func:`coverage`: how often each policy decided, and which never did.

The period is the entries' append time (the audit stream id, Redis time), read in bounded
batches; nothing here writes. The entities (agents' teams, targets' environments) are today's,
as the files say now: replay answers "this policy set on last week's proposals". Proposals
that came through a delegation chain are not replayed (their links are not decided again
here) and are counted as skipped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .audit import entries
from .errors import BrokerError, InvalidRequest
from .policy import COMPARED, DEFAULT_DENY, Decision, PolicyGate, differences

_SINCE = re.compile(r"([0-9]{1,6})([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_ROWS = 10_000  # rows a report keeps (counts go on past it)


def parse_since(text: str) -> int:
    """``"24h"``, ``"7d"``, ``"90m"``, ``"3600"`` (seconds) → seconds; InvalidRequest otherwise."""
    match = _SINCE.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise InvalidRequest(f"--since must look like 24h, 7d, 30d or 90m, got {text!r}")
    return int(match.group(1)) * _UNIT[match.group(2)]


async def since(redis, stream: str, since_ms: int) -> AsyncIterator[dict]:
    """The event bodies appended at or after ``since_ms`` (Redis time), oldest first."""
    async for entry in entries(redis, stream, after=f"{max(since_ms - 1, 0)}-18446744073709551615"):
        body = entry.body()
        if body is not None:
            yield body


@dataclass
class Proposed:
    """One audited proposal: who asked what, and what the policies said at submit."""

    request_id: str
    at: str
    agent: str
    action: str
    target: str
    delegated: bool
    decision: dict | None = None
    context: dict | None = None
    shadow: dict | None = None


def _proposed(body: dict, seen: dict[str, Proposed]) -> Proposed | None:
    """Fold one event into ``seen``; return the proposal when this event completed it."""
    kind, rid, data = body.get("type"), body.get("request_id"), body.get("data") or {}
    if not isinstance(rid, str) or not isinstance(data, dict):
        return None
    if kind == "proposal.received":
        proposal = data.get("proposal") or {}
        actor = body.get("actor") or {}
        seen[rid] = Proposed(rid, str(body.get("at", "")), str(actor.get("agent", "")), str(proposal.get("action", "")),
                             str(proposal.get("target", "")), bool(data.get("delegation_chain")))
    elif kind == "policy.decision" and rid in seen:
        p = seen.pop(rid)
        p.decision = {k: v for k, v in data.items() if k not in ("context", "shadow")}
        p.context, p.shadow = data.get("context"), data.get("shadow")
        return p
    return None


async def proposals(redis, stream: str, since_ms: int) -> AsyncIterator[Proposed]:
    """The proposals decided in the period, with their recorded decision and context."""
    seen: dict[str, Proposed] = {}
    async for body in since(redis, stream, since_ms):
        p = _proposed(body, seen)
        if p is not None:
            yield p
        if len(seen) > MAX_ROWS:  # a received without its decision (never: both go in one step)
            seen.pop(next(iter(seen)))


def _brief(d: dict) -> str:
    """An outcome with its obligations, as a table cell: ``require_approval 2×sre ≤900s``."""
    out = str(d.get("outcome"))
    if d.get("outcome") == "require_approval":
        out += f" {d.get('approvals_required')}×{d.get('approver_group') or '-'}"
    if d.get("outcome") != "deny" and d.get("max_duration_s"):
        out += f" ≤{d.get('max_duration_s')}s"
    return out


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()
    return "\n".join([line, *("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)])


# --------------------------------------------------------------------------- shadow report


async def shadow_report(redis, stream: str, since_ms: int) -> dict:
    """The requests where the shadow set would have decided otherwise, and counts per shadow policy."""
    rows: list[dict] = []
    per_policy: Counter[str] = Counter()
    seen: dict[str, Proposed] = {}
    asked: dict[str, Proposed] = {}
    total = 0
    async for body in since(redis, stream, since_ms):
        p = _proposed(body, seen)
        data = body.get("data") or {}
        if p is not None:
            asked[p.request_id] = p
            total += 1
            if len(asked) > MAX_ROWS:
                asked.pop(next(iter(asked)))
        if not isinstance(data, dict):
            continue
        if body.get("type") == "requests.redecided":  # the walk after a change: one entry per batch
            for item in data.get("requests") or []:
                if isinstance(item, dict) and isinstance(item.get("shadow"), dict):
                    row = {"at": body.get("at"), "request_id": item.get("request_id"),
                           "data": {"stage": "recheck", "shadow": item["shadow"]}}
                    _shadow_row(row, None, asked, rows, per_policy)
            continue
        if isinstance(data.get("shadow"), dict):
            _shadow_row({"at": body.get("at"), "request_id": body.get("request_id"), "data": data}, p, asked, rows,
                        per_policy)
    return {"since_ms": since_ms, "decisions": total, "disagreements": len(rows), "by_policy": dict(per_policy),
            "requests": rows}


def _shadow_row(body: dict, p: Proposed | None, asked: dict[str, Proposed], rows: list[dict],
                per_policy: Counter[str]) -> None:
    """Add one disagreement (``body``: ``at``, ``request_id``, ``data`` with ``shadow``) to the report."""
    data = body["data"]
    shadow = data["shadow"]
    rid = str(body.get("request_id", ""))
    origin = asked.get(rid)
    if p is not None:
        stage, enforcing = "submit", p.decision or {}
    else:  # a re-decision: policy.shadow (it permitted) or the entry that closed the request
        stage = str(data.get("stage") or "recheck")
        enforcing = data["decision"] if isinstance(data.get("decision"), dict) else {"outcome": "deny", "policies": []}
    for policy in shadow.get("policies") or [DEFAULT_DENY]:
        per_policy[str(policy)] += 1
    if len(rows) < MAX_ROWS:
        rows.append({"at": body.get("at"), "request_id": rid, "stage": stage,
                     "agent": origin.agent if origin else None, "action": origin.action if origin else None,
                     "target": origin.target if origin else None,
                     "decision": {k: enforcing.get(k) for k in (*COMPARED, "policies")},
                     "shadow": shadow})


def render_shadow(report: dict) -> str:
    """The shadow report as a table, then the counts per shadow policy."""
    if not report["requests"]:
        return f"no disagreements: the shadow policies agreed with all {report['decisions']} decisions of the period"
    rows = [[str(r["at"]), r["request_id"], r["stage"], f"{r['agent'] or '?'} {r['action'] or '?'} {r['target'] or '?'}",
             _brief(r["decision"]), _brief(r["shadow"]), ",".join(r["shadow"].get("policies") or [DEFAULT_DENY])]
            for r in report["requests"]]
    table = _table(["AT", "REQUEST", "STAGE", "AGENT ACTION TARGET", "ENFORCED", "SHADOW", "SHADOW POLICIES"], rows)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report["by_policy"].items(), key=lambda kv: (-kv[1], kv[0])))
    return (f"{table}\n\n{report['disagreements']} disagreement(s) in {report['decisions']} decisions; "
            f"by shadow policy: {counts}")


# --------------------------------------------------------------------------- replay


def change_kind(before: dict, after: dict) -> str:
    """``auto_grant → require_approval``, or for the same outcome what differs
    (``group sre → security``, ``cap 900 → 300``, ``approvals 1 → 2``)."""
    if before.get("outcome") != after.get("outcome"):
        return f"{before.get('outcome')} → {after.get('outcome')}"
    words = {"approvals_required": "approvals", "approver_group": "group", "max_duration_s": "cap"}
    return "; ".join(f"{words[k]} {before.get(k)} → {after.get(k)}" for k in differences(before, after))


@dataclass
class ReplayReport:
    """What a candidate policy set would have changed in the period."""

    replayed: int = 0
    unchanged: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    changes: list[dict] = field(default_factory=list)
    by_policy: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"replayed": self.replayed, "unchanged": self.unchanged, "changed": len(self.changes),
                "skipped": dict(self.skipped), "by_policy": dict(self.by_policy), "by_kind": dict(self.by_kind),
                "changes": self.changes}

    def render(self) -> str:
        head = (f"replayed {self.replayed} decisions: {len(self.changes)} would change, {self.unchanged} unchanged"
                + (f", skipped {sum(self.skipped.values())} ({', '.join(f'{k} {v}' for k, v in sorted(self.skipped.items()))})"
                   if self.skipped else ""))
        if not self.changes:
            return head
        rows = [[c["request_id"], f"{c['agent']} {c['action']} {c['target']}", _brief(c["before"]), _brief(c["after"]),
                 ",".join(c["after"]["policies"] or [DEFAULT_DENY]), c["change"]] for c in self.changes]
        table = _table(["REQUEST", "AGENT ACTION TARGET", "RECORDED", "CANDIDATE", "CANDIDATE POLICIES", "CHANGE"], rows)
        kinds = "\n".join(f"  {v:5d}  {k}" for k, v in sorted(self.by_kind.items(), key=lambda kv: (-kv[1], kv[0])))
        policies = "\n".join(f"  {v:5d}  {k}" for k, v in sorted(self.by_policy.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{head}\n\n{table}\n\nchanges by kind:\n{kinds}\nchanges by candidate policy:\n{policies}"


def _decide(gate: PolicyGate, p: Proposed) -> Decision:
    return gate.decide(agent_id=p.agent, action=p.action, target=p.target, context=p.context or {})


async def replay(redis, stream: str, since_ms: int, candidate: PolicyGate) -> ReplayReport:
    """Decide every proposal of the period again with ``candidate`` from its recorded context;
    report each whose outcome, approvals, approver group or duration cap would change."""
    report = ReplayReport()
    async for p in proposals(redis, stream, since_ms):
        if p.delegated:
            report.skipped["delegated"] += 1
            continue
        if not isinstance(p.context, dict) or not p.decision:
            report.skipped["no recorded context"] += 1
            continue
        try:
            after = _decide(candidate, p).to_dict()
        except BrokerError:  # a context recorded before its keys existed, or a name no longer valid
            report.skipped["context the candidate cannot read"] += 1
            continue
        report.replayed += 1
        before = p.decision
        if not differences(before, after):
            report.unchanged += 1
            continue
        kind = change_kind(before, after)
        report.by_kind[kind] += 1
        for policy in after["policies"] or [DEFAULT_DENY]:
            report.by_policy[policy] += 1
        if len(report.changes) < MAX_ROWS:
            report.changes.append({
                "request_id": p.request_id, "at": p.at, "agent": p.agent, "action": p.action, "target": p.target,
                "before": {k: before.get(k) for k in (*COMPARED, "policies")},
                "after": {k: after[k] for k in (*COMPARED, "policies")}, "change": kind})
    return report


# --------------------------------------------------------------------------- coverage


async def coverage(redis, stream: str, since_ms: int, policy_ids: tuple[str, ...]) -> dict:
    """Per loaded policy, how many submit decisions it determined and their outcomes (most
    frequent first) with the most frequent action/target pairs; and the policies that never
    determined a decision in the period."""
    per: dict[str, Counter[str]] = {pid: Counter() for pid in policy_ids}
    pairs: dict[str, Counter[str]] = {pid: Counter() for pid in policy_ids}
    total = 0
    async for p in proposals(redis, stream, since_ms):
        total += 1
        decision = p.decision or {}
        for policy in decision.get("policies") or [DEFAULT_DENY]:
            key = str(policy)
            if key not in per and len(per) > 10_000:
                continue
            per.setdefault(key, Counter())[str(decision.get("outcome"))] += 1
            pairs.setdefault(key, Counter())[f"{p.action} {p.target}"] += 1
    policies: list[dict[str, Any]] = [{"id": pid, "loaded": pid in policy_ids, "decisions": sum(c.values()),
                 "outcomes": dict(c.most_common()), "top": [k for k, _ in pairs[pid].most_common(3)]}
                for pid, c in per.items()]
    policies.sort(key=lambda d: (-int(d["decisions"]), str(d["id"])))
    return {"since_ms": since_ms, "decisions": total,
            "never_matched": sorted(pid for pid in policy_ids if not per[pid]), "policies": policies}


def render_coverage(report: dict) -> str:
    rows = [[d["id"] + ("" if d["loaded"] else " (not loaded now)"), str(d["decisions"]),
             ", ".join(f"{k} {v}" for k, v in d["outcomes"].items()) or "-", "; ".join(d["top"]) or "-"]
            for d in report["policies"]]
    table = _table(["POLICY", "DECISIONS", "OUTCOMES", "MOST FREQUENT"], rows)
    never = ", ".join(report["never_matched"]) or "none"
    return f"{table}\n\n{report['decisions']} decisions in the period; policies that never decided one: {never}"


def as_json(value: Any) -> Any:
    """``value`` ready for ``json.dumps`` (reports are plain dicts already)."""
    return value.to_dict() if hasattr(value, "to_dict") else value
