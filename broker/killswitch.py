"""What the kill switch ends: a :class:`Selector` (one agent, everything a person owns, one
target, or everything) and what one pull of it did (:class:`KillResult`). Pure data: the one
function that ends the matching requests is :meth:`broker.lifecycle.Lifecycle.kill_switch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from .errors import InvalidRequest
from .model import ACTIVE, APPROVED, PENDING

OPEN = (PENDING, APPROVED, ACTIVE)
BATCH = 300
"""Requests ended per script call: one audit entry each, and Redis is never blocked for long."""
SCOPES = ("agent", "owner", "target", "all")
MAX_VALUE = 256


@dataclass(frozen=True)
class Selector:
    """Which open requests to end: ``scope`` is ``agent``, ``owner``, ``target`` or ``all``
    (``value`` is the agent id, the person's approver id or the target; empty for ``all``)."""

    scope: str
    value: str = ""

    @classmethod
    def of(cls, scope: str, value: str | None = None) -> "Selector":
        """A checked selector; :class:`InvalidRequest` for an unknown scope or a bad value."""
        scope = (scope or "").strip().lower()
        value = (value or "").strip()
        if scope not in SCOPES:
            raise InvalidRequest(f"the kill switch takes one of {', '.join(SCOPES)}")
        if scope == "all":
            if value:
                raise InvalidRequest("'all' takes no value")
            return cls("all")
        if not value or len(value) > MAX_VALUE or not value.isprintable() or " " in value:
            raise InvalidRequest(f"{scope} needs one value (1 to {MAX_VALUE} printable characters, no spaces)")
        return cls(scope, value)

    def describe(self) -> str:
        """The selector in words ("agent deploy-bot", "everything")."""
        return "every open request and grant" if self.scope == "all" else f"{self.scope} {self.value}"

    def to_dict(self) -> dict:
        return {"scope": self.scope, "value": self.value} if self.value else {"scope": self.scope}

    def matches(self, row: Mapping[str, str], owner_of: Callable[[str], str | None]) -> bool:
        """Whether an open request (``Store.open_rows``' row) falls under this selector. An
        owner is matched on the owner recorded with the request, the agents file's owner of
        its agent now, and the engineer of a break-glass grant."""
        if row.get("status") not in OPEN:
            return False
        if self.scope == "all":
            return True
        if self.scope == "agent":
            return row.get("agent") == self.value
        if self.scope == "target":
            return row.get("target") == self.value
        agent = row.get("agent") or ""
        return self.value in (row.get("owner"), row.get("engineer") or None, owner_of(agent) if agent else None)


@dataclass
class KillResult:
    """What one pull of the kill switch did: its id (in every audit entry and on every request
    it ended), the requests denied (they were pending) and the grants revoked (approved or active)."""

    id: str
    selector: Selector
    denied: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    break_glass: set[str] = field(default_factory=set)  # which of them were break-glass grants

    @property
    def count(self) -> int:
        return len(self.denied) + len(self.revoked)

    def summary(self) -> str:
        """One line for people: how many of what, under which selector."""
        return (f"kill switch {self.id} ({self.selector.describe()}): {len(self.revoked)} grant(s) revoked, "
                f"{len(self.denied)} pending request(s) denied")

    def to_dict(self) -> dict:
        return {"id": self.id, "selector": self.selector.to_dict(), "revoked": self.revoked, "denied": self.denied}
