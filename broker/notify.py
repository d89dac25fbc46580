"""The Notifier port: what a chat transport implements to be an approval desk.

The core calls these after a state change has been committed; a transport failure is
logged and audited but never undoes or blocks the change. Message references returned
by ``post_proposal`` are stored with the request so every later change edits the
original message in place.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from .model import Request

log = logging.getLogger("jitgate.notify")


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

    async def remind(self, request: Request, refs: list[MessageRef]) -> None:
        """Nudge approvers about a request still pending."""

    async def alert_security(self, request: Request, text: str) -> None:
        """Tell the security channel (break-glass, anomalies)."""


class LoggingNotifier:
    """A notifier that writes to the log: the flow runs without any chat platform."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or log
        self.sent: list[tuple[str, str, str]] = []

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

    async def remind(self, request: Request, refs: list[MessageRef]) -> None:
        self.log.info("reminder: request %s still pending", request.id)
        self.sent.append(("remind", request.id, request.status))

    async def alert_security(self, request: Request, text: str) -> None:
        self.log.warning("security: %s (request %s)", text, request.id)
        self.sent.append(("security", request.id, text))


class Dispatcher:
    """Runs notifier calls in the background with a bound on what may be in flight."""

    def __init__(self, notifiers: list[Notifier], max_in_flight: int = 1000, timeout_s: float = 30.0) -> None:
        self.notifiers = list(notifiers)
        self._tasks: set[asyncio.Task] = set()
        self._limit = max_in_flight
        self._timeout = timeout_s

    def submit(self, coro_factory) -> None:
        """Schedule ``coro_factory()``; drop (and log) when too much is in flight."""
        if len(self._tasks) >= self._limit:
            log.error("notification dropped: %d notifications in flight", len(self._tasks))
            return
        task = asyncio.get_running_loop().create_task(self._guard(coro_factory))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro_factory) -> None:
        try:
            await asyncio.wait_for(coro_factory(), self._timeout)
        except Exception:  # noqa: BLE001 - a transport failure must never reach the agent
            log.exception("notification failed")

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for notifications in flight (tests, shutdown)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=remaining)
