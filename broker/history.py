"""An agent's recent history, as approvers see it next to a proposal (issue 19, item 5).

Computed once in the core, cheaply: the counters come from per-agent indexes the transition
scripts keep (``broker/lua/audit.lua`` ``index_grant``: sorted sets of the last day's
requests, grants and denials, the sets of active grants and waiting requests), read by one
script (``broker/lua/history.lua``); no request is scanned. The desks render it once
(``bot/render.py`` ``history_lines``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

# How many of the last denials are shown with who denied and why.
LAST_DENIALS = 3
MAX_REASON = 200


@dataclass(frozen=True)
class Denial:
    """One recent denial: the request, who denied (a person, ``policy`` or ``denial-memory``), why."""

    request: str
    by: str
    reason: str
    at: str = ""
    action: str = ""
    target: str = ""


@dataclass(frozen=True)
class History:
    """The agent's last 24 hours: requests, how many were granted and denied, the last few
    denials, grants active now and requests waiting for people now."""

    requests_24h: int = 0
    granted_24h: int = 0
    denied_24h: int = 0
    active_grants: int = 0
    waiting: int = 0
    last_denials: tuple[Denial, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["last_denials"] = [asdict(x) for x in self.last_denials]
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "History | None":
        """The history stored with a request, or None (a request from before this existed)."""
        if not isinstance(d, dict):
            return None
        try:
            denials = tuple(Denial(**x) for x in d.get("last_denials", []) if isinstance(x, dict))
            return cls(int(d.get("requests_24h", 0)), int(d.get("granted_24h", 0)), int(d.get("denied_24h", 0)),
                       int(d.get("active_grants", 0)), int(d.get("waiting", 0)), denials)
        except (TypeError, ValueError):
            return None


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v or "")


def parse(raw: list) -> History:
    """The :class:`History` of ``history.lua``'s reply."""
    requests, granted, denied, active, waiting = (int(v) for v in raw[:5])
    denials = []
    rest = raw[5:]
    for i in range(0, len(rest) - 2, 3):
        rid, denial, proposal = _text(rest[i]), _text(rest[i + 1]), _text(rest[i + 2])
        try:
            d = orjson.loads(denial) if denial else {}
            p = orjson.loads(proposal) if proposal else {}
        except orjson.JSONDecodeError:
            d, p = {}, {}
        denials.append(Denial(request=rid, by=str(d.get("by") or "?"), reason=str(d.get("reason") or "")[:MAX_REASON],
                              at=str(d.get("at") or ""), action=str(p.get("action") or ""),
                              target=str(p.get("target") or "")))
    return History(requests, granted, denied, active, waiting, tuple(denials))


async def of(store, agent_id: str) -> History:
    """The agent's history now (one script call)."""
    return parse(await store.history(agent_id, LAST_DENIALS))
