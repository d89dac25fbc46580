"""How an agent proves who it is on each call: a registered key (a fresh signed
assertion per call) or a SPIFFE JWT-SVID."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import ConfigError
from ..jose import UnusableKey, load_private_key, make_assertion, read_private_key, split_jws
from .errors import JitgateError


def load_key(key: Any) -> Any:
    """A private key from a key object, PEM text or bytes, or the path of a PEM file. A file
    others may read is refused (ConfigError with the ``chmod`` that fixes it), as OpenSSH does;
    so is text or a file that is not an unencrypted Ed25519 or P-256 PEM key."""
    if isinstance(key, os.PathLike) or (isinstance(key, str) and "-----BEGIN" not in key):
        return read_private_key(Path(key))
    if isinstance(key, (bytes, str)):
        try:
            return load_private_key(key)
        except UnusableKey as exc:
            raise ConfigError(str(exc)) from None
    return key


class AgentKey:
    """A registered agent key: signs a fresh assertion (new ``jti``) for every call."""

    def __init__(self, agent_id: str, private_key: Any, *, lifetime_s: int = 60) -> None:
        self.agent_id = agent_id
        self._key = load_key(private_key)
        self._lifetime = lifetime_s

    def authorization(self, audience: str) -> str:
        """``Bearer <assertion>``: a new signed assertion (fresh ``jti``) for ``audience``."""
        return "Bearer " + make_assertion(self._key, agent_id=self.agent_id, audience=audience, lifetime_s=self._lifetime)

    @property
    def signing_key(self) -> Any:
        """The private key (signs delegations and, by default, DPoP proofs)."""
        return self._key

    def __repr__(self) -> str:
        return f"AgentKey({self.agent_id!r})"


class Svid:
    """A SPIFFE JWT-SVID identity; the agent id is the SVID's SPIFFE id.

    ``source`` is a callable ``(audience) -> JWT-SVID`` or the path of a file a SPIFFE
    helper keeps fresh (read on every call). :meth:`from_workload_api` fetches them from
    the SPIFFE Workload API (a SPIRE agent's socket) with the ``spiffe`` package. An SVID
    from a callable is reused until half of its lifetime has passed (SVIDs are bearer
    credentials meant to be reused; the broker accepts them until ``exp``), then fetched
    anew. An SVID has no private key here, so DPoP proofs use a key made for this process.
    """

    def __init__(self, source: Callable[[str], str] | str | os.PathLike) -> None:
        if callable(source):
            self._source = source
            self._cache: dict[str, tuple[str, float]] | None = {}
        else:
            path = Path(source)
            self._source = lambda _audience: path.read_text(encoding="ascii").strip()
            self._cache = None
        self._lock = threading.Lock()
        self._dpop_key = ec.generate_private_key(ec.SECP256R1())
        self.agent_id: str | None = None

    @classmethod
    def from_workload_api(cls, socket_path: str | None = None, *, timeout_s: float = 5.0) -> "Svid":
        """JWT-SVIDs for the broker's audience from the SPIFFE Workload API at ``socket_path``
        (``unix:///run/spire/agent.sock``; unset: ``SPIFFE_ENDPOINT_SOCKET``), each fetch
        bounded by ``timeout_s``. Needs the spiffe extra: ``pip install 'jitgate-client[spiffe]'``
        (or ``'jitgate[spiffe]'`` next to the broker)."""
        try:
            from spiffe import WorkloadApiClient  # noqa: PLC0415 - optional: the spiffe extra
        except ImportError:
            raise JitgateError("the SPIFFE Workload API needs the spiffe package: "
                               "pip install 'jitgate-client[spiffe]' (or 'jitgate[spiffe]' with the broker)") from None
        try:
            workload = WorkloadApiClient(socket_path, default_timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - spiffe raises its own ArgumentError
            raise JitgateError(f"SPIFFE Workload API: {exc}") from None

        def fetch(audience: str) -> str:
            try:
                return workload.fetch_jwt_svid(audience={audience}).token
            except Exception as exc:  # noqa: BLE001 - gRPC and spiffe errors alike
                raise JitgateError(f"cannot fetch a JWT-SVID from the SPIFFE Workload API: {exc}") from None

        return cls(fetch)

    def _token(self, audience: str, now: float) -> str:
        if self._cache is None:
            return self._source(audience).strip()
        with self._lock:
            cached = self._cache.get(audience)
            if cached is not None and now < cached[1]:
                return cached[0]
            token = self._source(audience).strip()
            try:
                claims = split_jws(token, "JWT-SVID")[1]
                exp, iat = float(claims["exp"]), float(claims.get("iat", now))
                self._cache[audience] = (token, iat + (exp - iat) / 2)
            except (ValueError, KeyError, TypeError):
                self._cache.pop(audience, None)  # not reusable; the broker will say what is wrong
            return token

    def authorization(self, audience: str) -> str:
        """``Bearer <JWT-SVID>`` for this audience (may block on the source: call it off the event loop)."""
        token = self._token(audience, time.time())
        try:
            self.agent_id = split_jws(token, "JWT-SVID")[1].get("sub")
        except ValueError:
            pass  # the broker will say what is wrong with it
        return "Bearer " + token

    @property
    def signing_key(self) -> Any:
        """The process's own DPoP key (an SVID brings no private key)."""
        return self._dpop_key

    def __repr__(self) -> str:
        return f"Svid({self.agent_id!r})"
