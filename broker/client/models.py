"""Plain values the client hands back: evidence, an escalation as the broker reports
it, a grant, and a collected token."""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..jose import make_dpop_proof


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence approvers see: a kind, a title, and a link or a short excerpt."""

    kind: str
    title: str
    url: str | None = None
    excerpt: str | None = None

    @classmethod
    def log(cls, title: str, excerpt: str, url: str | None = None) -> "Evidence":
        """A log excerpt (shown as plain text; the broker caps it at 2000 characters)."""
        return cls("log", title, url, excerpt)

    @classmethod
    def link(cls, kind: str, title: str, url: str) -> "Evidence":
        """A link (runbook, ticket, diff, dashboard); approvers see the URL itself."""
        return cls(kind, title, url)

    def to_dict(self) -> dict:
        """The JSON object the API takes."""
        d = {"kind": self.kind, "title": self.title}
        if self.url is not None:
            d["url"] = self.url
        if self.excerpt is not None:
            d["excerpt"] = self.excerpt
        return d


def evidence_list(items: Any) -> list[dict]:
    """Evidence objects or dicts as the JSON list the API takes."""
    out = []
    for item in items or ():
        out.append(item.to_dict() if isinstance(item, Evidence) else dict(item))
    return out


@dataclass(frozen=True)
class Escalation:
    """An escalation request as the broker last reported it (``raw`` is the whole JSON)."""

    id: str
    status: str
    raw: dict = field(repr=False)

    @classmethod
    def from_json(cls, body: dict) -> "Escalation":
        """From the broker's JSON answer."""
        return cls(id=body["id"], status=body["status"], raw=body)

    @property
    def decision(self) -> dict:
        """The policy decision: ``outcome``, ``policies``, ``approvals_required``, ``approver_group``, ``reason``."""
        return self.raw.get("decision") or {}

    @property
    def approvals(self) -> list[dict]:
        """Approvals so far: ``{approver, channel, at}`` each."""
        return self.raw.get("approvals") or []

    @property
    def approvals_required(self) -> int:
        return int(self.raw.get("approvals_required") or self.decision.get("approvals_required") or 0)

    @property
    def denial(self) -> dict | None:
        """``{by, reason}`` once denied, else None."""
        return self.raw.get("denial")

    @property
    def delegation_chain(self) -> list[dict]:
        """The verified delegation links, root first (empty without delegation)."""
        return self.raw.get("delegation_chain") or []

    @property
    def policy_set_hash(self) -> str | None:
        """The content hash of the policy set that decided the proposal."""
        return self.raw.get("policy_set_hash")

    @property
    def outcome(self) -> dict | None:
        """What the agent reported at completion: ``{status, summary?, evidence?}``, or None."""
        return self.raw.get("outcome")

    def summary(self) -> str:
        """One line for a progress display: status, approvals, what it waits for."""
        if self.status == "pending":
            need = self.approvals_required
            group = self.decision.get("approver_group") or "approvers"
            return f"pending: {len(self.approvals)}/{need} approvals from {group}"
        if self.status == "denied" and self.denial:
            return f"denied by {self.denial.get('by')}: {self.denial.get('reason')}"
        return self.status


@dataclass(frozen=True)
class Grant:
    """An approved escalation: what was granted and by whom. Collect its token with
    ``client.collect(grant)`` (once), report completion with ``client.complete(grant)``."""

    request_id: str
    action: str
    target: str
    status: str
    approved_duration_s: int | None
    approvers: tuple[str, ...]
    policies: tuple[str, ...]
    escalation: Escalation = field(repr=False)

    @classmethod
    def from_escalation(cls, esc: Escalation) -> "Grant":
        """The grant of an approved (or active) escalation."""
        raw = esc.raw
        return cls(
            request_id=esc.id,
            action=raw.get("action", ""),
            target=raw.get("target", ""),
            status=esc.status,
            approved_duration_s=raw.get("approved_duration_s"),
            approvers=tuple(a.get("approver", "") for a in esc.approvals),
            policies=tuple(esc.decision.get("policies") or ()),
            escalation=esc,
        )


class Token:
    """A collected access token. ``headers(method, url)`` gives what to send to the
    resource server: ``Authorization: DPoP <token>`` plus a fresh ``DPoP`` proof with
    ``ath`` for a DPoP-bound token, or ``Authorization: Bearer <token>``.

    ``credential`` is the target system's own credential when the target has a credential
    plugin (e.g. ``{"type": "postgresql", "username", "password", "dsn", "env": {...}}``),
    else None: the broker sends it once, with the token, and revokes it when the grant ends."""

    __slots__ = ("access_token", "token_type", "expires_in", "expires_at", "authorization_details", "request_id",
                 "credential", "_dpop_key")

    def __init__(self, body: dict, request_id: str, dpop_key: Any = None, now: float | None = None) -> None:
        self.access_token: str = body["access_token"]
        self.token_type: str = body.get("token_type", "Bearer")
        self.expires_in: int = int(body.get("expires_in", 0))
        self.expires_at: float = (time.time() if now is None else now) + self.expires_in
        self.authorization_details: list = body.get("authorization_details") or []
        credential = body.get("credential")
        self.credential: dict[str, Any] | None = credential if isinstance(credential, dict) else None
        self.request_id = request_id
        self._dpop_key = dpop_key if self.token_type == "DPoP" else None

    @property
    def dpop_bound(self) -> bool:
        """True when the token is bound to this client's DPoP key (send it with :meth:`headers`)."""
        return self._dpop_key is not None

    def headers(self, method: str, url: str, *, nonce: str | None = None) -> dict[str, str]:
        """Headers for one call to a resource server (a new DPoP proof each time, carrying
        ``nonce`` when the server asked for one)."""
        if self._dpop_key is None:
            return {"Authorization": f"Bearer {self.access_token}"}
        proof = make_dpop_proof(self._dpop_key, method=method, url=url, access_token=self.access_token, nonce=nonce)
        return {"Authorization": f"DPoP {self.access_token}", "DPoP": proof}

    def auth(self) -> "DpopAuth":
        """An ``httpx.Auth`` for this token: ``httpx.get(url, auth=token.auth())`` (sync or async)."""
        return DpopAuth(self)

    @property
    def credential_env(self) -> dict[str, str]:
        """The credential as environment variables (``PGUSER``, ``PGPASSWORD``, ...), or {}."""
        env = (self.credential or {}).get("env") or {}
        return {str(k): str(v) for k, v in env.items()}

    def __repr__(self) -> str:  # never the token (or the credential) itself: reprs end up in logs
        cred = f", credential={self.credential.get('type')!r}" if self.credential else ""
        return (f"Token(request_id={self.request_id!r}, token_type={self.token_type!r}, "
                f"expires_in={self.expires_in}{cred})")


class DpopAuth(httpx.Auth):
    """httpx authentication with a collected token: the ``Authorization`` header and, for a
    DPoP-bound token, a fresh proof for each request's own method and URL. When a resource
    server answers ``use_dpop_nonce`` with a ``DPoP-Nonce`` (RFC 9449 section 9), the
    request is sent once more with a proof carrying that nonce, and the latest nonce each
    server hands out is used for the next calls to it."""

    requires_request_body = True  # a retried request sends its body again

    def __init__(self, token: Token) -> None:
        self._token = token
        self._nonces: dict[tuple[str, str, int | None], str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        origin = (request.url.scheme, request.url.host, request.url.port)
        url = str(request.url)
        request.headers.update(self._token.headers(request.method, url, nonce=self._nonces.get(origin)))
        response = yield request
        nonce = response.headers.get("dpop-nonce")
        if not nonce or not self._token.dpop_bound:
            return
        retry = response.status_code in (400, 401) and "use_dpop_nonce" in response.headers.get("www-authenticate", "")
        fresh = nonce != self._nonces.get(origin)
        self._nonces[origin] = nonce
        if retry and fresh:  # once per nonce: a server that refuses its own nonce gets no loop
            request.headers.update(self._token.headers(request.method, url, nonce=nonce))
            yield request


@dataclass(frozen=True)
class TaskOutcome:
    """The resulting action, reported with :meth:`Client.complete`: ``status`` is ``"success"``
    or ``"failure"``; ``summary`` at most 500 characters; ``evidence`` at most 10 ``https://``
    links of at most 2048 characters each. The broker checks these bounds (400 otherwise)."""

    status: str
    summary: str | None = None
    evidence: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """The ``outcome`` object of the completion body."""
        d: dict = {"status": self.status}
        if self.summary is not None:
            d["summary"] = self.summary
        if self.evidence:
            d["evidence"] = list(self.evidence)
        return d
