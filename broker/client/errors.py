"""What the client raises. Outcomes an agent should reason about (denied, expired, timed
out) are separate classes from failures of the wire or of the setup."""

from __future__ import annotations

from typing import Any


class JitgateError(Exception):
    """Anything the client raises on purpose."""


class NotGranted(JitgateError):
    """The request ended without a grant; ``status`` says how, ``reason`` why."""

    def __init__(self, reason: str, *, request_id: str | None = None, status: str = "", escalation: dict | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id
        self.status = status
        self.escalation = escalation or {}


class Denied(NotGranted):
    """Policy or a person said no. ``policy_ids`` names the deciding policies (empty when a
    person denied), ``by`` who decided (``policy`` or an approver id)."""

    def __init__(self, reason: str, policy_ids: list[str] | tuple[str, ...] = (), *, by: str | None = None,
                 request_id: str | None = None, escalation: dict | None = None) -> None:
        super().__init__(reason, request_id=request_id, status="denied", escalation=escalation)
        self.policy_ids = list(policy_ids)
        self.by = by


class Expired(NotGranted):
    """Nobody decided before the broker's deadline, or the token was not collected in time."""


class Cancelled(NotGranted):
    """The agent withdrew the request."""


class Revoked(NotGranted):
    """An approved request was revoked before its token was used."""


class TimedOut(JitgateError):
    """The client stopped waiting (its own deadline); the request may still be pending
    at the broker: resume with ``client.wait(request_id)`` or withdraw it."""

    def __init__(self, request_id: str, waited_s: float) -> None:
        super().__init__(f"no decision on {request_id} within {waited_s:.0f} s")
        self.request_id = request_id
        self.waited_s = waited_s


class ApiError(JitgateError):
    """The broker refused a call: ``status`` (HTTP), ``code`` (stable, from the problem
    ``type``) and ``detail`` (a human sentence)."""

    def __init__(self, status: int, code: str, detail: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body


class InvalidRequest(ApiError):
    """400: the proposal or a parameter is malformed."""


class DelegationRefused(InvalidRequest):
    """400: the delegation chain does not hold; ``detail`` names the bad link."""


class AuthenticationFailed(ApiError):
    """401: the agent's assertion (or DPoP proof) was refused."""


class Conflict(ApiError):
    """409: the request is not in a state that allows this (e.g. the token was already collected)."""


class NotFound(ApiError):
    """404: no such request for this agent."""


class TransportError(JitgateError):
    """The broker could not be reached within the retry budget."""


class InvalidToken(JitgateError):
    """A resource server's verification of a token (or its DPoP proof) failed; ``reason`` says
    which check. ``error`` is the code for the ``WWW-Authenticate`` challenge: ``invalid_token``,
    ``invalid_dpop_proof``, or ``use_dpop_nonce`` (send ``DPoP-Nonce`` with it, RFC 9449 section 9)."""

    def __init__(self, reason: str, error: str = "invalid_token") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error

    def challenge(self, nonce: str | None = None) -> dict[str, str]:
        """Headers for the 401: ``WWW-Authenticate: DPoP error=...`` (and ``DPoP-Nonce`` when given)."""
        reason = self.reason.replace("\\", "").replace('"', "'")
        headers = {"WWW-Authenticate": f'DPoP error="{self.error}", error_description="{reason}", algs="ES256 EdDSA"'}
        if nonce is not None:
            headers["DPoP-Nonce"] = nonce
        return headers


_BY_STATUS = {400: InvalidRequest, 401: AuthenticationFailed, 404: NotFound, 409: Conflict}


def api_error(status: int, body: Any) -> ApiError:
    """The ApiError subclass for an HTTP error answer (RFC 9457 problem+json when it is one)."""
    code, detail = "http-error", f"HTTP {status}"
    if isinstance(body, dict):
        type_ = body.get("type")
        if isinstance(type_, str) and type_:
            code = type_.rstrip("/").rsplit("/", 1)[-1]
        if isinstance(body.get("detail"), str):
            detail = body["detail"]
    cls = DelegationRefused if code == "invalid-delegation" else _BY_STATUS.get(status, ApiError)
    return cls(status, code, detail, body)
