"""Key material for identity: generating and loading agent keys, and the dummy keys that
keep an unknown issuer's answer (and its timing) the same as a bad signature's.

The JWS/JWK primitives themselves live in :mod:`broker.jose` (shared with the client);
these wrappers only turn its :class:`~broker.jose.UnusableKey` into a ConfigError.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .. import jose
from ..jose import UnusableKey, parse_public_jwk as _parse_public_jwk


def generate_key(kind: str = "Ed25519") -> tuple[bytes, dict]:
    """:func:`broker.jose.generate_key`, refusing a kind other than Ed25519 or P-256 with ConfigError."""
    try:
        return jose.generate_key(kind)
    except UnusableKey as exc:
        raise ConfigError(str(exc)) from None


def load_private_key(pem: bytes | str) -> Any:
    """:func:`broker.jose.load_private_key`, refusing anything but an unencrypted Ed25519 or
    P-256 PEM with ConfigError."""
    try:
        return jose.load_private_key(pem)
    except UnusableKey as exc:
        raise ConfigError(str(exc)) from None


_DUMMY_KEYS: dict[str, Any] = {}


def _dummy_key(alg: str) -> Any:
    """A public key of ``alg``'s kind that matches nobody's private key: verifying against it
    costs what verifying against a registered key costs, and always fails."""
    key = _DUMMY_KEYS.get(alg)
    if key is None:
        kind = "Ed25519" if alg == "EdDSA" else "P-256"
        key = _DUMMY_KEYS[alg] = _parse_public_jwk(generate_key(kind)[1])[0]
    return key
