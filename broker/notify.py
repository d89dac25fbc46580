"""The Notifier port: what a chat transport implements to be an approval desk.

The core tells desks what happened with a :class:`Notice`: the :class:`Kind` of event (the
very strings the transition scripts queue in the outbox), the request as it is now, and
the :class:`Audience` the core resolved once (who may still decide, whose approval a
break-glass bypassed, the security group). Desks format; they never re-derive the event
from a sentence or the state, nor who to mention. ``broker.notices`` builds the notices
and fans them out.

The core calls these after a state change has been committed; a transport failure is
logged and audited but never undoes or blocks the change. Message references returned
by ``post_proposal`` are stored with the request so every later change edits the
original message in place.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .directory import Approver, Directory
from .model import Request

if TYPE_CHECKING:
    from .breakglass import BreakGlass
    from .config import Settings
    from .identity.registry import Registry
    from .lifecycle import Lifecycle
    from .notices import Notices
    from .policy import PolicyGate
    from .store import Store

log = logging.getLogger("jitgate.notify")


class Kind(StrEnum):
    """What happened. The values are the wire strings the transition scripts (``broker/lua``,
    ``breakglass.py``) and the scheduler queue in the outbox: never change one, or entries
    queued before an upgrade no longer deliver."""

    PROPOSED = "proposed"        # a request waits for people: post it
    CHANGED = "changed"          # changed while it was being posted (never queued)
    APPROVAL = "approval"        # one approval counted, more needed
    ASKED_AGAIN = "asked_again"  # the agent proposed the same task again, saying something new
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    COLLECTED = "collected"
    COMPLETED = "completed"
    REVOKED = "revoked"
    EXPIRED = "expired"
    REMIND = "remind"            # still pending: nudge who may decide
    ESCALATE = "escalate"        # the backup group may decide now too
    BG_GRANTED = "bg.granted"
    BG_REVIEW_REMINDER = "bg.review_reminder"
    BG_SUSPENDED = "bg.suspended"
    BG_REVIEWED = "bg.reviewed"
    BG_REINSTATED = "bg.reinstated"
    CRED_REVOCATION_PENDING = "cred.revocation_pending"  # a credential's revocation failed; retried
    CRED_ORPHAN = "cred.orphan"  # the reconciler revoked a credential with no active grant
    KILL_SWITCH = "killswitch"   # the kill switch ended many requests: told once to the security channel
    ALTERNATE_PATHS = "alternate_paths"  # an agent's attempts linked to denials reached the threshold (issue 19)
    AUDIT_FAILING = "audit.failing"  # audit cannot record (sealing lags, no sink): new grants refused
    AUDIT_RECOVERED = "audit.recovered"  # audit records again: new grants accepted
    POLICY_REVIEW_DUE = "policy.review_due"  # no policy review recorded for JITGATE_POLICY_REVIEW_DAYS

    @property
    def audit(self) -> bool:
        """An audit-log event (no request behind it): told to the security channel."""
        return self.value.startswith("audit.")

    @property
    def credential(self) -> bool:
        """A credential event: told to the security channel, like break-glass."""
        return self.value.startswith("cred.")

    @property
    def break_glass(self) -> bool:
        """A break-glass event: told to the security channel, not to a proposal message."""
        return self.value.startswith("bg.")

    @classmethod
    def parse(cls, wire: str) -> "Kind | None":
        """The kind an outbox entry names, or None for one this broker does not know."""
        try:
            return cls(wire)
        except ValueError:
            return None


@dataclass(frozen=True)
class Audience:
    """Who a notice is for, resolved once by the core (``broker.notices.audience``) so every
    desk @mentions the same people.

    ``deciders``: who may still decide the request (:func:`broker.rules.deciders`), drawn from
    ``decider_groups`` (only the backup group on an escalation). ``bypassed``: the members of
    the group whose approval a break-glass grant bypassed. ``security``: the security group's
    members. Neither of the last two names the agent's owner or anyone who approved (for
    break-glass: the engineer who broke the glass)."""

    deciders: tuple[Approver, ...] = ()
    decider_groups: tuple[str, ...] = ()
    bypassed: tuple[Approver, ...] = ()
    bypassed_group: str | None = None
    security: tuple[Approver, ...] = ()
    security_group: str | None = None


@dataclass(frozen=True)
class Notice:
    """One thing to tell one desk: ``kind`` on ``request`` (as it is now), for ``audience``.

    ``refs`` are this desk's messages of the request. ``text`` is the core's sentence for the
    security channel (break-glass kinds); ``announcement`` the sentence for the approvers'
    channel when a break-glass bypassed them (``bg.granted``). ``suspended`` is the core's
    answer to "did this grant suspend its engineer's break-glass right?"
    (:meth:`broker.breakglass.BreakGlass.suspended_by`)."""

    kind: Kind
    request: Request
    audience: Audience = field(default_factory=Audience)
    refs: tuple["MessageRef", ...] = ()
    text: str = ""
    announcement: str = ""
    suspended: bool = False

    @property
    def escalated_to(self) -> str | None:
        """The backup group an escalation hands the request to (None for any other kind)."""
        return self.audience.decider_groups[0] if self.kind is Kind.ESCALATE and self.audience.decider_groups else None


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
    """A chat transport (Slack, Teams, console, log). ``broker.notices`` calls the method the
    notice's kind asks for; each is told at least once per event, so each is idempotent."""

    name: str

    async def post_proposal(self, notice: Notice) -> list[MessageRef]:
        """``proposed``: post the proposal where approvers will see it; return the message references."""

    async def update(self, notice: Notice) -> None:
        """Edit the posted messages (``notice.refs``) to show the request as it is now;
        ``notice.kind`` says what changed."""

    async def remind(self, notice: Notice) -> None:
        """``remind`` / ``escalate``: nudge ``notice.audience.deciders`` about a request still
        pending (on an escalation, the backup group ``notice.escalated_to`` may decide too)."""

    async def alert_security(self, notice: Notice) -> None:
        """A break-glass kind: tell the security channel (``notice.text``), mentioning
        ``notice.audience.security``."""

    async def announce(self, notice: Notice) -> None:
        """``bg.granted``: post ``notice.announcement`` (no buttons) where approvals are asked,
        mentioning ``notice.audience.bypassed``, whose approval the break-glass bypassed."""


@dataclass(frozen=True)
class KeySpace:
    """The desk's own corner of Redis: every key it writes starts with ``prefix`` (the
    broker's ``JITGATE_REDIS_PREFIX``), so desks, tests and replicas never collide."""

    redis: Any
    prefix: str

    def key(self, *parts: str) -> str:
        """``prefix`` followed by ``parts`` joined with ``:``."""
        return self.prefix + ":".join(parts)


@dataclass(frozen=True)
class DeskContext:
    """What a desk is given when it starts, instead of the whole broker: the lifecycle (every
    ordinary transition), break-glass, the directory (approvers; ``broker.rules`` answers who
    may decide), the core's settings (read only), its key space in Redis, the notice port,
    and, for the console's pages, the store (requests, the audit log), the agents and the
    policy gate. Nothing else of the broker (keys, verifier, scheduler, outbox) reaches a desk."""

    settings: "Settings"
    lifecycle: "Lifecycle"
    breakglass: "BreakGlass"
    directory: Directory
    keys: KeySpace
    notices: "Notices"
    store: "Store"
    registry: "Registry"
    gate: "PolicyGate"

    @property
    def clock(self):
        """The broker's clock (the lifecycle's)."""
        return self.lifecycle.clock

    @property
    def redis(self):
        """The Redis client of :attr:`keys` (for reads next to the store's, e.g. the audit stream)."""
        return self.keys.redis

    @classmethod
    def of(cls, broker) -> "DeskContext":
        """The context of a built broker (``broker.app.Broker``)."""
        return cls(settings=broker.settings, lifecycle=broker.lifecycle, breakglass=broker.breakglass,
                   directory=broker.directory, keys=KeySpace(broker.redis, broker.settings.redis_prefix),
                   notices=broker.lifecycle.notices, store=broker.store, registry=broker.registry,
                   gate=broker.gate)


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

    async def start(self, ctx: DeskContext) -> None:
        """Start with the broker's :class:`DeskContext` (never the whole broker)."""

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

    async def post_proposal(self, notice: Notice) -> list[MessageRef]:
        request = notice.request
        d = request.decision
        self.log.info(
            "approval needed: %s wants %s on %s for %ss (%s); id=%s",
            request.agent, request.proposal.action, request.proposal.target,
            request.proposal.duration_s, d.get("reason", ""), request.id,
        )
        self.sent.append(("post", request.id, request.status))
        return [MessageRef(self.name, "log", request.id)]

    async def update(self, notice: Notice) -> None:
        request = notice.request
        self.log.info("request %s: %s (status %s)", request.id, notice.kind, request.status)
        self.sent.append(("update", request.id, str(notice.kind)))

    async def remind(self, notice: Notice) -> None:
        request, escalated_to = notice.request, notice.escalated_to
        extra = f"; escalated to {escalated_to}" if escalated_to else ""
        self.log.info("reminder: request %s still pending%s", request.id, extra)
        self.sent.append(("remind", request.id, escalated_to or request.status))

    async def alert_security(self, notice: Notice) -> None:
        self.log.warning("security: %s (request %s)", notice.text, notice.request.id)
        self.sent.append(("security", notice.request.id, notice.text))

    async def announce(self, notice: Notice) -> None:
        group = notice.audience.bypassed_group
        self.log.warning("to %s: %s (request %s)", group or "approvers", notice.announcement, notice.request.id)
        self.sent.append(("announce", notice.request.id, notice.announcement))
