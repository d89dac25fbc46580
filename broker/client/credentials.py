"""How an agent proves who it is on each call: a registered key (a fresh signed
assertion per call) or a SPIFFE JWT-SVID."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from ..jose import load_private_key, make_assertion, split_jws


def load_key(key: Any) -> Any:
    """A private key from a key object, PEM text or bytes, or the path of a PEM file."""
    if isinstance(key, os.PathLike) or (isinstance(key, str) and "-----BEGIN" not in key):
        return load_private_key(Path(key).read_bytes())
    if isinstance(key, (bytes, str)):
        return load_private_key(key)
    return key


class AgentKey:
    """A registered agent key: signs a fresh assertion (new ``jti``) for every call."""

    def __init__(self, agent_id: str, private_key: Any, *, lifetime_s: int = 60) -> None:
        self.agent_id = agent_id
        self._key = load_key(private_key)
        self._lifetime = lifetime_s

    def authorization(self, audience: str) -> str:
        return "Bearer " + make_assertion(self._key, agent_id=self.agent_id, audience=audience, lifetime_s=self._lifetime)

    @property
    def signing_key(self) -> Any:
        """The private key (signs delegations and, by default, DPoP proofs)."""
        return self._key

    def __repr__(self) -> str:
        return f"AgentKey({self.agent_id!r})"


class Svid:
    """A SPIFFE JWT-SVID identity. ``source`` is a callable ``(audience) -> JWT-SVID`` (for
    example ``lambda aud: WorkloadApiClient().fetch_jwt_svid(audience={aud}).token`` with
    the ``spiffe`` package) or the path of a file a SPIFFE helper keeps fresh. The agent id
    is the SVID's SPIFFE id. An SVID has no private key here, so DPoP proofs use a key
    made for this process."""

    def __init__(self, source: Callable[[str], str] | str | os.PathLike) -> None:
        if callable(source):
            self._source = source
        else:
            path = Path(source)
            self._source = lambda _audience: path.read_text(encoding="ascii").strip()
        self._dpop_key = ec.generate_private_key(ec.SECP256R1())
        self.agent_id: str | None = None

    def authorization(self, audience: str) -> str:
        token = self._source(audience).strip()
        try:
            self.agent_id = split_jws(token, "JWT-SVID")[1].get("sub")
        except ValueError:
            pass  # the broker will say what is wrong with it
        return "Bearer " + token

    @property
    def signing_key(self) -> Any:
        return self._dpop_key

    def __repr__(self) -> str:
        return f"Svid({self.agent_id!r})"
