"""What the console shows, read live from Redis: open requests, recent history, audit
trails and whether the audit chain verifies. Every read is bounded."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson

from broker import audit
from broker.audit import Entry, VerifyResult, verify
from broker.model import TERMINAL, Request

OPEN_SCAN = 500  # requests with a deadline (pending, approved, active) looked at
RECENT_AUDIT = 500  # audit entries read for the main page's history
TRAIL_SCAN = 10_000  # audit entries searched for one request's trail
TRAIL_MAX = 200  # events shown for one request
MAX_SUMMARY = 300


@dataclass(frozen=True)
class AuditEvent:
    """One audit entry, decoded for display."""

    seq: int
    type: str
    at: str
    request_id: str | None
    actor: dict
    data: dict

    @property
    def who(self) -> str:
        a = self.actor
        for key in ("approver", "agent", "operator", "by", "resource_server"):
            if a.get(key):
                value = a[key]
                return ", ".join(value) if isinstance(value, list) else str(value)
        if a.get("policy") is not None:
            return "policy " + ", ".join(a["policy"]) if a["policy"] else "policy"
        return "broker"

    @property
    def channel(self) -> str | None:
        return self.actor.get("channel")

    @property
    def summary(self) -> str:
        """One line saying what happened (plain text; the template escapes it)."""
        d = self.data
        t = self.type
        if t == "proposal.received":
            text = f"proposal received (sha256 {str(d.get('proposal_sha256', ''))[:16]}…)"
        elif t == "policy.decision":
            pols = ", ".join(d.get("policies") or []) or "no policy"
            text = f"policy said {d.get('outcome')} ({pols})"
            if d.get("policy_set_hash"):
                text += f" [policy set {str(d['policy_set_hash'])[:12]}]"
            if d.get("outcome") == "require_approval":
                text += f": {d.get('approvals_required')} from {d.get('approver_group')}"
            if d.get("reason"):
                text += f" — {d['reason']}"
        elif t == "approval.recorded":
            text = f"approval {d.get('count')} of {d.get('required')}"
            if d.get("duration_s"):
                text += f", for at most {d['duration_s']} s"
        elif t == "request.approved":
            text = f"approved for {d.get('approved_duration_s')} s"
        elif t == "request.denied":
            text = f"denied: {d.get('reason', '')}"
        elif t == "token.collected":
            text = f"token collected (jti {str(d.get('jti', ''))[:10]}…, expires {d.get('exp')})"
        elif t == "grant.revoked":
            text = f"grant revoked: {d.get('reason', '')}"
        elif t == "grant.completed":
            text = "task completed; grant ended"
            outcome = d.get("outcome") if isinstance(d.get("outcome"), dict) else None
            if outcome:
                text += f"; outcome {outcome.get('status')}" + (f": {outcome['summary']}" if outcome.get("summary") else "")
            use = d.get("token_use") if isinstance(d.get("token_use"), dict) else None
            if use is not None:
                text += f"; token introspected {use.get('count', 0)} time(s)"
        elif t == "token.used":
            text = f"token first used by {self.actor.get('resource_server', '?')} (jti {str(d.get('jti', ''))[:10]}…)"
        elif t in ("request.expired", "grant.expired"):
            text = f"expired: {d.get('reason', '')}"
        elif t == "requests.expired":
            rs = d.get("requests") or []
            text = f"{len(rs)} expired by the scheduler: " + ", ".join(
                str(r.get("request_id")) for r in rs[:5] if isinstance(r, dict)) + (", …" if len(rs) > 5 else "")
        elif t == "killswitch.batch":
            rs = d.get("requests") or []
            text = f"kill switch: {len(rs)} ended: {d.get('reason', '')}"
        elif t == "registry.closed":
            rs = d.get("requests") or []
            text = f"{len(rs)} ended: {d.get('reason', '')}"
        elif t == "killswitch.engaged":
            text = (f"kill switch pulled: {len(d.get('revoked') or [])} revoked, {len(d.get('denied') or [])} "
                    f"denied: {d.get('reason', '')}")
        elif t == "request.cancelled":
            text = "withdrawn by the agent"
        elif t == "breakglass.granted":
            text = f"BREAK-GLASS grant for {d.get('subject')}, {d.get('duration_s')} s: {d.get('reason', '')}"
            if d.get("incident"):
                text += f" (incident {d['incident']})"
        elif t == "breakglass.reviewed":
            text = f"break-glass review acknowledged: {d.get('comment', '')}"
        elif t == "breakglass.review_reminder":
            text = f"break-glass review still open (due {d.get('due')})"
        elif t == "breakglass.suspended":
            text = f"break-glass right of {d.get('engineer')} suspended: {d.get('reason', '')}"
        else:
            text = t + (" " + orjson.dumps(d).decode() if d else "")
        return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"

    def per_request(self) -> list["AuditEvent"]:
        """This event as each request sees it: the sweep's ``requests.expired`` names many
        requests in one entry, and becomes one ``grant.expired``/``request.expired`` each."""
        if self.type in ("killswitch.batch", "registry.closed"):
            pending_to = "request.denied" if self.type == "killswitch.batch" else "request.cancelled"
            why = f"kill switch: {self.data.get('reason', '')}" if self.type == "killswitch.batch" else \
                str(self.data.get("reason", ""))
            return [AuditEvent(self.seq, "grant.revoked" if r.get("status") == "revoked" else pending_to, self.at,
                               r["request_id"], self.actor, {"reason": why})
                    for r in self.data.get("requests") or []
                    if isinstance(r, dict) and isinstance(r.get("request_id"), str)]
        if self.type != "requests.expired":
            return [self]
        out = []
        for r in self.data.get("requests") or []:
            if isinstance(r, dict) and isinstance(r.get("request_id"), str):
                out.append(AuditEvent(self.seq, str(r.get("type", "request.expired")), self.at, r["request_id"],
                                      self.actor, {"previous": r.get("previous"), "reason": r.get("reason", "")}))
        return out

    @classmethod
    def of(cls, entry: Entry) -> "AuditEvent | None":
        """The entry decoded for display, or None when its event is not a JSON object."""
        body = entry.body()
        if body is None:
            return None
        return cls(entry.seq, str(body.get("type", "?")), str(body.get("at", "")), body.get("request_id"),
                   body.get("actor") or {}, body.get("data") or {})


async def open_requests(ctx, limit: int = OPEN_SCAN) -> list[Request]:
    """Requests still waiting on something (pending, approved, active), soonest deadline first."""
    raw = await ctx.redis.zrange(ctx.store.deadlines, 0, limit - 1)
    out = []
    for rid in raw:
        req = await ctx.store.load(rid.decode())
        if req is not None and req.status not in TERMINAL:
            out.append(req)
    return out


async def recent_events(ctx, count: int = RECENT_AUDIT) -> list[AuditEvent]:
    """The newest ``count`` audit events, newest first."""
    rows = await audit.newest(ctx.redis, ctx.store.audit_stream, count)
    return [e for e in (AuditEvent.of(entry) for entry in rows) if e is not None]


async def recent_closed(ctx, events: list[AuditEvent], limit: int = 20) -> list[Request]:
    """Closed requests that appear in ``events``, most recent first."""
    seen, out = set(), []
    for e in (p for ev in events for p in ev.per_request()):
        rid = e.request_id
        if not rid or rid in seen:
            continue
        seen.add(rid)
        req = await ctx.store.load(rid)
        if req is not None and req.status in TERMINAL:
            out.append(req)
            if len(out) >= limit:
                break
    return out


def trails(events: list[AuditEvent]) -> dict[str, list[AuditEvent]]:
    """Group events by request, oldest first within each."""
    out: dict[str, list[AuditEvent]] = {}
    for e in (p for ev in reversed(events) for p in ev.per_request()):
        if e.request_id:
            out.setdefault(e.request_id, []).append(e)
    return out


async def trail(ctx, request_id: str, scan: int = TRAIL_SCAN) -> tuple[list[AuditEvent], bool]:
    """The audit events of one request, oldest first, searching the newest ``scan`` entries.

    Returns (events, complete): ``complete`` is False when the search stopped before the
    request's first event (it is older than the window; `jitgate audit export` has all).
    """
    needle = orjson.dumps(request_id)
    found: list[AuditEvent] = []
    rows = await audit.newest(ctx.redis, ctx.store.audit_stream, scan)
    complete = len(rows) < scan
    for entry in rows:
        if needle not in entry.event:  # cheap filter before parsing
            continue
        e = AuditEvent.of(entry)
        e = next((p for p in e.per_request() if p.request_id == request_id), None) if e else None
        if e is None:
            continue
        found.append(e)
        if e.type == "proposal.received":
            complete = True
            break
    found.reverse()
    return found[-TRAIL_MAX:], complete


@dataclass
class ChainStatus:
    """Whether the audit chain verifies, kept current cheaply.

    A full ``broker.audit.verify`` runs at most every ``ttl_s`` seconds (it catches a change
    to any old entry); in between, only the entries appended since the last check are
    verified against the last good head. Only a full verification reports the chain as
    broken: when the cheap check does not fit (a race with an append), it falls back to one.
    """

    ttl_s: float = 30.0
    _at: float = field(default=-1e9)
    _result: VerifyResult | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self, ctx) -> VerifyResult:
        async with self._lock:
            r = self._result
            if r is None or not r.ok or time.monotonic() - self._at >= self.ttl_s:
                return await self._full(ctx)
            newer = await audit.extend(ctx.redis, ctx.store.audit_stream, ctx.store.audit_head, r)
            if newer is None:
                return await self._full(ctx)
            self._result = newer
            return newer

    async def _full(self, ctx) -> VerifyResult:
        self._result = await verify(ctx.redis, ctx.store.audit_stream, ctx.store.audit_head)
        self._at = time.monotonic()
        return self._result


async def audit_seq(ctx) -> int:
    """The audit chain's length: it grows with every state change, so it is the change counter."""
    return await audit.length(ctx.redis, ctx.store.audit_head)
