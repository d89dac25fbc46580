"""Policy reviews (issue 23, item 5): ``jitgate policy reviewed --note …`` records a
``policy.reviewed`` audit entry, and the scheduler reminds the security channel when none
has been recorded for ``JITGATE_POLICY_REVIEW_DAYS`` (default 90; 0 turns it off).

The audit log is the record. Two small keys beside it save the daily check a scan of the
log: ``policy:reviewed_at`` (ms of the last review, written right after its entry; a lost
write only means one reminder too many) and ``policy:review_since`` (when this installation
first checked, so a broker that never saw a review reminds a full period after it started,
not on its first day). ``policy:review_reminded`` holds the day (UTC, days since the epoch)
of the last reminder, so at most one goes out a day whichever replica holds the lease.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .audit import event
from .model import iso
from .notify import Kind

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

log = logging.getLogger("jitgate.policyreview")

DAY_S = 86400
CHECK_EVERY_S = 3600.0  # in-process: Redis is asked at most hourly, the reminder goes at most daily


def _keys(life: Lifecycle) -> tuple[str, str, str]:
    p = life.store.prefix
    return p + "policy:reviewed_at", p + "policy:review_since", p + "policy:review_reminded"


async def record_review(life: Lifecycle, operator: str, note: str, *, channel: str = "cli") -> None:
    """Append ``policy.reviewed`` (who, the note, the policy ids in force) and remember when."""
    note = note.strip()
    if not note:
        from .errors import InvalidRequest  # noqa: PLC0415

        raise InvalidRequest("a review needs a note saying what was reviewed")
    now = life._now()
    ev = event("policy.reviewed", str(iso(now)), None, {"operator": operator, "channel": channel}, note=note[:2000],
               policies=list(life.gate.policy_ids), shadow_policies=list(life.gate.shadow_ids))
    await life.store.append([ev])
    await life.store.redis.set(_keys(life)[0], str(int(now * 1000)))


async def last_review_ms(life: Lifecycle) -> int | None:
    """When the last review was recorded (ms), or None."""
    raw = await life.store.redis.get(_keys(life)[0])
    return int(raw) if raw else None  # bytes or str: int() takes both


async def remind_if_due(life: Lifecycle) -> bool:
    """Queue the security reminder when the last review (or, with none, this installation's
    first check) is older than the configured period and none went out today. True when queued."""
    days = life.settings.policy_review_days
    if not days:
        return False
    redis = life.store.redis
    reviewed_key, since_key, reminded_key = _keys(life)
    now = life._now()
    now_ms = int(now * 1000)
    last = await redis.get(reviewed_key)
    if last is None:
        await redis.set(since_key, str(now_ms), nx=True)
        last = await redis.get(since_key)
    if now_ms - int(last) < days * DAY_S * 1000:
        return False
    day = str(int(now // DAY_S))
    before = await redis.set(reminded_key, day, get=True)
    if (before.decode() if isinstance(before, bytes) else before) == day:
        return False
    overdue = (now_ms - int(last)) // (DAY_S * 1000)
    ev = event("policy.review_due", str(iso(now)), None, {"by": "scheduler"}, days_since=overdue, period_days=days)
    await life.store.append([ev], notify=Kind.POLICY_REVIEW_DUE.value)
    log.warning("policy review due: none recorded for %d days (JITGATE_POLICY_REVIEW_DAYS=%d)", overdue, days)
    return True


async def reminder_text(life: Lifecycle) -> str:
    """The security channel's sentence, from the state at delivery."""
    days = life.settings.policy_review_days
    last = await last_review_ms(life)
    when = f"the last was recorded {iso(last / 1000)}" if last else "none has been recorded"
    return (f"Policy review due: no review of the policy set for {days} days or more ({when}). Review the policies "
            "(`jitgate policy coverage --since 30d` helps), then record it with `jitgate policy reviewed --note …`.")
