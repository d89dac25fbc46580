"""The Notifier port: what a chat transport implements to be an approval desk.

The core calls these after a state change has been committed; a transport failure is
logged and audited but never undoes or blocks the change. Message references returned
by ``post_proposal`` are stored with the request so every later change edits the
original message in place.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from .model import Request

log = logging.getLogger("jitgate.notify")


class PartialDelivery(Exception):
    """Some desks could not be told; the outbox retries those (and only those)."""

    def __init__(self, failed: set[str], first: BaseException) -> None:
        super().__init__(f"not delivered to {', '.join(sorted(failed))}: {first!r}")
        self.failed = failed


@dataclass(frozen=True)
class MessageRef:
    """Where one transport posted the proposal (e.g. Slack channel + ts)."""

    transport: str
    destination: str
    ref: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MessageRef":
        return cls(d["transport"], d["destination"], d["ref"], d.get("extra") or {})


@runtime_checkable
class Notifier(Protocol):
    """A chat transport (Slack, Teams, console, log)."""

    name: str

    async def post_proposal(self, request: Request) -> list[MessageRef]:
        """Post the proposal where approvers will see it; return the message references."""

    async def update(self, request: Request, refs: list[MessageRef], event: str) -> None:
        """Edit the posted messages to show the request as it is now; ``event`` says what changed."""

    async def remind(self, request: Request, refs: list[MessageRef], *, escalated_to: str | None = None) -> None:
        """Nudge approvers about a request still pending; ``escalated_to`` names the backup
        group that may now decide too (mention its members)."""

    async def alert_security(self, request: Request, text: str) -> None:
        """Tell the security channel (break-glass, anomalies)."""

    async def announce(self, request: Request, text: str, *, mention_group: str | None = None) -> None:
        """Post an informational message (no buttons) where approvals are asked, mentioning
        ``mention_group``'s members — e.g. that a break-glass bypassed their approval."""


@runtime_checkable
class Desk(Protocol):
    """An approval desk plugged into the broker: a notifier, HTTP routes, and a lifetime.

    Desks are found through the ``jitgate.desks`` entry point group; each entry point is a
    factory ``(settings) -> Desk | None`` that returns None when the desk is not
    configured and raises ``ConfigError`` when it is configured wrongly (fail closed).
    The core never imports a desk.
    """

    name: str
    notifier: Notifier

    def routes(self) -> list:
        """Starlette routes to mount on the broker's server (may be empty)."""

    async def start(self, broker) -> None:
        """Start with the built broker (its lifecycle, store, directory, settings)."""

    async def stop(self) -> None:
        """Stop background work and close connections."""


SENT_KEPT = 10_000


class LoggingNotifier:
    """A notifier that writes to the log: the flow runs without any chat platform."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or log
        # What was said, newest last (tests read it); bounded, as a broker runs for months.
        self.sent: deque[tuple[str, str, str]] = deque(maxlen=SENT_KEPT)

    async def post_proposal(self, request: Request) -> list[MessageRef]:
        d = request.decision
        self.log.info(
            "approval needed: %s wants %s on %s for %ss (%s); id=%s",
            request.agent, request.proposal.action, request.proposal.target,
            request.proposal.duration_s, d.get("reason", ""), request.id,
        )
        self.sent.append(("post", request.id, request.status))
        return [MessageRef(self.name, "log", request.id)]

    async def update(self, request: Request, refs: list[MessageRef], event: str) -> None:
        self.log.info("request %s: %s (status %s)", request.id, event, request.status)
        self.sent.append(("update", request.id, event))

    async def remind(self, request: Request, refs: list[MessageRef], *, escalated_to: str | None = None) -> None:
        extra = f"; escalated to {escalated_to}" if escalated_to else ""
        self.log.info("reminder: request %s still pending%s", request.id, extra)
        self.sent.append(("remind", request.id, escalated_to or request.status))

    async def alert_security(self, request: Request, text: str) -> None:
        self.log.warning("security: %s (request %s)", text, request.id)
        self.sent.append(("security", request.id, text))

    async def announce(self, request: Request, text: str, *, mention_group: str | None = None) -> None:
        self.log.warning("to %s: %s (request %s)", mention_group or "approvers", text, request.id)
        self.sent.append(("announce", request.id, text))
