"""One small error hierarchy: every failure the broker reports carries a stable code.

The API renders these as RFC 9457 problem+json; the chat desks render them as a short
ephemeral message. Callers branch on the class (or ``code``), never on the text.
"""

from __future__ import annotations

PROBLEM_BASE = "https://jitgate.dev/problems/"


class BrokerError(Exception):
    """A failure with a stable ``code``, a human ``detail`` and an HTTP ``status``."""

    code = "broker-error"
    status = 400
    title = "Request failed"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.code

    def to_problem(self, instance: str | None = None) -> dict:
        """Render as an RFC 9457 problem document."""
        body: dict = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class InvalidRequest(BrokerError):
    code, status, title = "invalid-request", 400, "Invalid request"


class PayloadTooLarge(BrokerError):
    code, status, title = "payload-too-large", 413, "Payload too large"


class Unauthenticated(BrokerError):
    code, status, title = "unauthenticated", 401, "Authentication failed"


class Forbidden(BrokerError):
    code, status, title = "forbidden", 403, "Not allowed"


class NotFound(BrokerError):
    code, status, title = "not-found", 404, "Not found"


class Conflict(BrokerError):
    """The request is in a state where this transition cannot happen (e.g. already denied)."""

    code, status, title = "conflict", 409, "Conflict with the current state"


class DeadlinePassed(Conflict):
    """A decision or a collection came after the request's deadline: it was refused and the
    request expired there and then (as the scheduler's sweep would have expired it)."""

    code, title = "deadline-passed", "The deadline has passed"


class AgentDisabled(Forbidden):
    """The agent is marked ``disabled: true`` in the agents file: every call is refused."""

    code, title = "agent-disabled", "Agent disabled"


class NotApprover(Forbidden):
    code, title = "not-an-approver", "Not allowed to decide this request"


class StepUpRequired(Forbidden):
    """The approval counts only with a proof of presence (``@step_up`` or the approvers file's
    ``step_up:`` on a group) that this path did not bring: nothing was recorded."""

    code, title = "step-up-required", "Step-up required"


class PolicyError(BrokerError):
    """Policies could not be loaded or evaluated (start-up refuses; evaluation denies)."""

    code, status, title = "policy-error", 500, "Policy error"


class ConfigError(BrokerError):
    """A setting is missing or wrong: the process refuses to start."""

    code, status, title = "config-error", 500, "Configuration error"


class AuditError(BrokerError):
    """The audit log could not be written; the action it would record did not happen."""

    code, status, title = "audit-unavailable", 503, "Audit log unavailable"


class RateLimited(BrokerError):
    """Too many proposals asking people, from one agent or for one target: nothing was stored
    and nobody was asked; the agent may try again after ``retry_after`` seconds."""

    code, status, title = "rate-limited", 429, "Too many proposals"

    def __init__(self, detail: str, *, retry_after: int, **extra: object) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class Unavailable(BrokerError):
    code, status, title = "unavailable", 503, "Service unavailable"


class PolicyDenied(Forbidden):
    """The policies, deciding again at this step, no longer permit the request: it was
    denied (or its grant revoked) there and then. ``policies`` names the policies that decided."""

    code, title = "policy-denied", "Denied by policy"
