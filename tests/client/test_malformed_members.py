"""JOSE members of the wrong JSON type are refusals, not crashes: a list where a string belongs is
unhashable, and looking it up in a table raised TypeError (found by mypy on the client, issue 13,
item 7: "broker/client ships py.typed, so it must pass mypy cleanly")."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from broker.client import InvalidToken, verify
from broker.jose import b64url, jwk_thumbprint, parse_public_jwk, public_jwk


@pytest.mark.parametrize("jwk", [{"kty": ["EC"], "crv": "P-256"}, {"kty": "EC", "crv": {"P": 256}}])
def test_a_jwk_with_a_list_for_kty_or_crv_is_refused_as_invalid(jwk):
    """parse_public_jwk (a DPoP proof's header jwk, an agents file entry) raises ValueError, never TypeError."""
    with pytest.raises(ValueError, match="must be an OKP/Ed25519 or EC/P-256 public key"):
        parse_public_jwk(jwk)


def test_a_thumbprint_of_a_jwk_with_a_list_for_kty_is_refused():
    """jwk_thumbprint raises the ValueError it documents for an unknown key type."""
    with pytest.raises(ValueError, match="unsupported key type"):
        jwk_thumbprint({"kty": ["EC"]})


def test_a_token_whose_kid_is_a_list_is_an_invalid_token():
    """A resource server's verify() answers InvalidToken (a 401), not TypeError (a 500), for kid: [...]."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [{**public_jwk(key), "kid": "k1"}]}
    good = jwt.encode({"sub": "a"}, key, algorithm="ES256", headers={"typ": "at+jwt", "kid": "k1"})
    _header, payload, signature = good.split(".")
    header = b64url(json.dumps({"alg": "ES256", "typ": "at+jwt", "kid": ["k1"]}).encode())  # pyjwt would refuse to
    token = f"{header}.{payload}.{signature}"
    with pytest.raises(InvalidToken, match="not in the JWKS"):
        verify(token, jwks, issuer="https://jitgate.test", audience="x")
