"""The credential port: what a plugin implements to mint real credentials in a target system.

A plugin is found through the ``jitgate.credentials`` entry point group (like the desks): each
entry point is a factory ``(target_id, config, secrets, context) -> CredentialPlugin`` that raises
:class:`~broker.errors.ConfigError` when ``config`` (the target's ``credential:`` mapping in
``targets.yaml``) is wrong. The core imports no plugin.

A plugin issues one credential per grant, named by a *handle* it chooses (a role name, a token
accessor) that begins with its prefix, so it can list what it issued and a revocation never
depends on memory: the handle is recorded before the credential exists.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..errors import BrokerError


class CredentialUnavailable(BrokerError):
    """The target system could not issue the credential now: no token was issued, and the
    grant stays collectable until its deadline (retry after ``retry_after`` seconds)."""

    code, status, title = "credential-unavailable", 503, "Credential unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5, **extra: object) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class IssueFailed(Exception):
    """A plugin could not issue (the target is down, refused, timed out)."""


class RevokeFailed(Exception):
    """A plugin could not revoke; the revocation is retried with back-off."""


@dataclass(frozen=True)
class Grant:
    """What a plugin needs to know about the grant it issues a credential for."""

    request_id: str
    agent: str
    action: str
    target: str
    expires_at: int  # epoch seconds: the credential must stop working then


@dataclass(frozen=True)
class Issued:
    """A credential just issued. ``secret`` goes to the agent once and is never stored;
    ``env`` is how an agent exports it (``jitgate agent token --export``)."""

    plugin: str
    handle: str
    expires_at: int
    secret: dict = field(repr=False)
    env: dict = field(default_factory=dict, repr=False)
    # Where the plugin finds the credential again when its handle alone is not enough (an
    # OpenBao token accessor); not a secret. Recorded beside the handle.
    ref: str | None = None

    @property
    def fingerprint(self) -> str:
        """What the audit log names instead of the secret: SHA-256 of the canonical secret, 16 hex."""
        canon = "\n".join(f"{k}={self.secret[k]}" for k in sorted(self.secret))
        return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()[:16]

    def record(self) -> dict:
        """What the request record and the audit log say was issued (no secret)."""
        out = {"plugin": self.plugin, "handle": self.handle, "fingerprint": self.fingerprint,
               "expires_at": self.expires_at}
        if self.ref:
            out["ref"] = self.ref
        return out

    def to_agent(self) -> dict:
        """The ``credential`` member of the token response."""
        return {"type": self.plugin, **self.secret, "expires_at": self.expires_at, "env": dict(self.env)}


@runtime_checkable
class CredentialPlugin(Protocol):
    """One target system's credentials. Every method is idempotent and has a deadline."""

    name: str
    prefix: str  # every handle starts with it; the reconciler lists by it

    def handle_for(self, grant: Grant) -> str:
        """A new handle for ``grant`` (recorded before :meth:`issue` creates it)."""

    def mapped(self, action: str) -> bool:
        """True if the action→privileges mapping names ``action`` (else no credential is issued)."""

    async def issue(self, handle: str, grant: Grant) -> Issued:
        """Create the credential ``handle`` for ``grant``; raise :class:`IssueFailed`."""

    async def revoke(self, handle: str, ref: str | None = None) -> bool:
        """Remove ``handle`` (``ref``: :attr:`Issued.ref` when it was recorded) and end its
        sessions; False if it did not exist. Raise :class:`RevokeFailed`."""

    async def list_issued(self) -> list[str]:
        """The handles with this plugin's prefix that exist in the target now (bounded)."""

    async def close(self) -> None:
        """Release connections."""
