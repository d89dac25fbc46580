"""One JWS header check for every verifier (issue 15, "one JOSE home: ... one header check"):
the broker's own KeyRing.verify and a resource server's verify() refuse what the agent
assertion, DPoP, delegation and JWT-SVID verifiers already refused."""

from __future__ import annotations

import json
import os
import time

import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from broker.client import InvalidToken, verify
from broker.clock import ManualClock
from broker.errors import Unauthenticated
from broker.jose import HeaderNotAllowed, KidNotString, b64url, check_header
from broker.tokens import KeyRing, build_access_token_claims

ISSUER = "https://jitgate.test"
NOW = int(time.time())


def _sign(key: ec.EllipticCurvePrivateKey, header: dict, claims: dict) -> str:
    """An ES256 compact JWS of exactly this header and these claims (pyjwt would not sign every header)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.mark.parametrize("extra", [{"b64": True}, {"b64": False}, {"crit": ["exp"]}, {"crit": []}])
async def test_keyring_and_resource_servers_refuse_crit_and_b64(redis_url, prefix, extra):
    """RFC 7515 section 4.1.11: a recipient MUST reject a JWS whose critical extensions it does not
    understand, and jitgate implements none (RFC 7797 ``b64`` included): the broker's own token
    check and the resource servers' verify() refused ``crit`` and ``b64: false`` but accepted a
    signed ``b64: true``; now every verifier refuses them all by the one rule."""
    client = aioredis.from_url(redis_url)
    ring = KeyRing(client, prefix, os.urandom(32), clock=ManualClock(start=NOW))
    try:
        await ring.ensure()
        key = ring._current
        claims = build_access_token_claims(
            issuer=ISSUER, agent_id="a", audience="aud", issued_at=NOW, expires_at=NOW + 300, jti="g-1",
            action="read", target="aud", tool=None, dataset=None, request_id="r-1", approvers=[], policies=["p"],
            proposal_sha256="0" * 64)
        good = _sign(key.private_key, {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}, claims)
        assert (await ring.verify(good, issuer=ISSUER))["jti"] == "g-1"
        assert verify(good, ring.jwks(), issuer=ISSUER, audience="aud", now=NOW)["jti"] == "g-1"
        token = _sign(key.private_key, {"alg": key.alg, "kid": key.kid, "typ": "at+jwt", **extra}, claims)
        with pytest.raises(Unauthenticated):
            await ring.verify(token, issuer=ISSUER)
        with pytest.raises(InvalidToken):
            verify(token, ring.jwks(), issuer=ISSUER, audience="aud", now=NOW)
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.mark.parametrize("header, error", [
    ({"alg": "none"}, "algorithm not allowed"),
    ({"alg": "HS256"}, "algorithm not allowed"),
    ({"alg": ["ES256"]}, "algorithm not allowed"),
    ({"alg": "ES256", "crit": ["b64"], "b64": False}, "unsupported critical header"),
    ({"alg": "ES256", "b64": True}, "unsupported critical header"),
    ({"alg": "EdDSA", "kid": ["k1"]}, "kid must be a string"),
    ({"alg": "EdDSA", "kid": {"k": 1}}, "kid must be a string"),
])
def test_check_header_refuses_by_name(header, error):
    """Issue 15: the one header check names the rule a header breaks, with no broker words."""
    with pytest.raises(HeaderNotAllowed, match=error) as caught:
        check_header(header)
    assert isinstance(caught.value, KidNotString) == ("kid" in error)
    assert not any(word in str(caught.value) for word in ("agent", "approver", "broker"))


def test_check_header_passes_the_algs_asked_for():
    """The allow-list is ES256 and EdDSA unless a caller (JWT-SVIDs) widens it; a string kid passes."""
    assert check_header({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}) == "ES256"
    assert check_header({"alg": "EdDSA"}) == "EdDSA"
    with pytest.raises(HeaderNotAllowed):
        check_header({"alg": "RS256"})
    assert check_header({"alg": "RS256"}, {"RS256"}) == "RS256"
