"""Signing keys in Redis, rotation, JWKS, and RFC 9068 access tokens checked by independent validators."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time

import jwt as pyjwt
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.clock import ManualClock
from broker.errors import ConfigError, Unauthenticated
from broker.tokens import ROTATION_LAG_S, KeyRing, build_access_token_claims

ISSUER = "https://jitgate.example.com"
AUDIENCE = "prod/payments-api"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def kek() -> bytes:
    return os.urandom(32)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=float(int(time.time())))


@pytest.fixture
def make_ring(redis, prefix, kek, clock):
    def make(**kw) -> KeyRing:
        kw.setdefault("clock", clock)
        return KeyRing(redis, prefix, kw.pop("kek", kek), **kw)

    return make


def claims_at(now: float, **overrides) -> dict:
    args = dict(
        issuer=ISSUER,
        agent_id="deploy-bot",
        audience=AUDIENCE,
        issued_at=int(now),
        expires_at=int(now) + 600,
        jti="grant-1",
        action="deploy",
        target=AUDIENCE,
        tool="kubectl",
        dataset=None,
        request_id="req-1",
        approvers=["alice", "bob"],
        policies=["prod-deploy"],
        proposal_sha256="ab" * 32,
    )
    args.update(overrides)
    return build_access_token_claims(**args)


def thumbprint(jwk: dict) -> str:
    """RFC 7638 thumbprint, computed by joserfc (independently of the code under test)."""
    from joserfc.jwk import KeySet

    return KeySet.import_key_set({"keys": [jwk]}).keys[0].thumbprint()


def forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    """A compact JWS with an arbitrary header and signature."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


async def stored_records(redis, prefix) -> dict[str, dict]:
    raw = await redis.hgetall(f"{prefix}signing:keys")
    return {k.decode(): json.loads(v) for k, v in raw.items()}


# -- keys at rest ------------------------------------------------------------------


async def test_concurrent_ensure_makes_one_current_key(make_ring, redis, prefix):
    """Two replicas starting at once end up with one current key, and both use it."""
    rings = [make_ring() for _ in range(4)]
    await asyncio.gather(*(r.ensure() for r in rings))
    kids = {r.current_kid for r in rings}
    assert len(kids) == 1
    assert list(await stored_records(redis, prefix)) == list(kids)
    assert (await redis.get(f"{prefix}signing:current")).decode() in kids


async def test_ensure_loads_the_existing_key(make_ring):
    """A restarted replica loads the stored key instead of making a new one."""
    first = make_ring()
    await first.ensure()
    second = make_ring()
    await second.ensure()
    assert second.current_kid == first.current_kid


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_stored_record_layout_and_kid(make_ring, redis, prefix, alg):
    """The record holds kid, alg, created_at, retired_at, public_jwk, private_enc; kid is the RFC 7638 thumbprint."""
    ring = make_ring(alg=alg)
    await ring.ensure()
    (record,) = (await stored_records(redis, prefix)).values()
    assert set(record) == {"kid", "alg", "created_at", "retired_at", "public_jwk", "private_enc"}
    assert record["alg"] == alg and record["retired_at"] is None
    assert record["kid"] == ring.current_kid == thumbprint(record["public_jwk"])
    assert record["public_jwk"]["crv"] == ("P-256" if alg == "ES256" else "Ed25519")


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_private_key_is_encrypted_at_rest(make_ring, redis, prefix, kek, alg):
    """Signing keys at rest: the private key never appears in Redis in DER, PEM, raw or JWK form."""
    ring = make_ring(alg=alg)
    await ring.ensure()
    kid = ring.current_kid
    everything = b"".join(k + v for k, v in (await redis.hgetall(f"{prefix}signing:keys")).items())
    blob = unb64url(json.loads(await redis.hget(f"{prefix}signing:keys", kid))["private_enc"])
    der = AESGCM(kek).decrypt(blob[:12], blob[12:], kid.encode())  # nonce || ciphertext, AD = kid
    private_key = serialization.load_der_private_key(der, password=None)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        raw = private_key.private_numbers().private_value.to_bytes(32, "big")
    else:
        raw = private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for secret in (der, pem, pem.splitlines()[1], raw, b64url(raw).encode(), base64.b64encode(der)[:40]):
        assert secret not in everything
    with pytest.raises(InvalidTag):
        AESGCM(kek).decrypt(blob[:12], blob[12:], b"another-kid")


async def test_wrong_kek_refuses_to_start(make_ring, redis, prefix):
    """Fail closed: a key-encryption key that does not decrypt the stored keys refuses, and no new key is made."""
    first = make_ring()
    await first.ensure()
    before = await redis.hgetall(f"{prefix}signing:keys")
    with pytest.raises(ConfigError, match="JITGATE_KEY_ENCRYPTION_KEY does not decrypt the signing keys"):
        await make_ring(kek=os.urandom(32)).ensure()
    assert await redis.hgetall(f"{prefix}signing:keys") == before
    assert (await redis.get(f"{prefix}signing:current")).decode() == first.current_kid


async def test_injected_public_key_without_kek_is_refused(make_ring, redis, prefix, clock):
    """Redis write access without the key-encryption key cannot add a verification key."""
    ring = make_ring()
    await ring.ensure()
    attacker = ec.generate_private_key(ec.SECP256R1())
    numbers = attacker.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")),
           "y": b64url(numbers.y.to_bytes(32, "big"))}
    kid = thumbprint(jwk)
    record = {"kid": kid, "alg": "ES256", "created_at": int(clock.now()), "retired_at": int(clock.now()),
              "public_jwk": {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}, "private_enc": b64url(os.urandom(60))}
    await redis.hset(f"{prefix}signing:keys", kid, json.dumps(record))
    token = pyjwt.encode(claims_at(clock.now()), attacker, algorithm="ES256", headers={"kid": kid, "typ": "at+jwt"})
    with pytest.raises(ConfigError):
        await ring.verify(token, issuer=ISSUER, audience=AUDIENCE)
    assert kid not in {k["kid"] for k in ring.jwks()["keys"]}


def test_bad_settings_refuse(redis, prefix):
    """Fail closed: an unknown alg or a KEK that is not 32 bytes refuses at construction."""
    with pytest.raises(ConfigError, match="JITGATE_SIGNING_ALG"):
        KeyRing(redis, prefix, os.urandom(32), alg="HS256")
    with pytest.raises(ConfigError, match="JITGATE_KEY_ENCRYPTION_KEY"):
        KeyRing(redis, prefix, os.urandom(16))


def test_sign_before_ensure_refuses(make_ring):
    """Fail closed: a ring with no loaded key refuses to sign."""
    with pytest.raises(ConfigError, match="ensure"):
        make_ring().sign({"iss": ISSUER})


# -- sign and verify ---------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_sign_verify_round_trip(make_ring, clock, alg):
    """A signed token verifies and yields its claims; the header is {alg, kid, typ: at+jwt}."""
    ring = make_ring(alg=alg)
    await ring.ensure()
    claims = claims_at(clock.now())
    token = ring.sign(claims)
    assert pyjwt.get_unverified_header(token) == {"alg": alg, "kid": ring.current_kid, "typ": "at+jwt"}
    assert await ring.verify(token, issuer=ISSUER, audience=AUDIENCE) == claims
    assert await ring.verify(token, issuer=ISSUER) == claims


@pytest.fixture
async def ring(make_ring) -> KeyRing:
    ring = make_ring()
    await ring.ensure()
    return ring


async def test_tampered_token_is_refused(ring, clock):
    """RFC 9068 §4: the signature MUST be validated; a changed payload fails."""
    head, _, sig = ring.sign(claims_at(clock.now())).split(".")
    body = b64url(json.dumps(claims_at(clock.now(), agent_id="someone-else")).encode())
    with pytest.raises(Unauthenticated):
        await ring.verify(f"{head}.{body}.{sig}", issuer=ISSUER, audience=AUDIENCE)


async def test_wrong_issuer_is_refused(ring, clock):
    """RFC 9068 §4: the issuer MUST exactly match the iss claim."""
    token = ring.sign(claims_at(clock.now(), issuer=ISSUER + "/"))
    with pytest.raises(Unauthenticated):
        await ring.verify(token, issuer=ISSUER, audience=AUDIENCE)


async def test_wrong_audience_is_refused(ring, clock):
    """RFC 9068 §4: the resource server MUST reject a token whose aud does not name it."""
    token = ring.sign(claims_at(clock.now()))
    with pytest.raises(Unauthenticated):
        await ring.verify(token, issuer=ISSUER, audience="prod/other-api")


async def test_expired_token_is_refused_by_the_injected_clock(ring, clock):
    """RFC 9068 §4: the current time MUST be before exp; time comes from the injected clock."""
    token = ring.sign(claims_at(clock.now()))
    clock.advance(599)
    await ring.verify(token, issuer=ISSUER, audience=AUDIENCE)
    clock.advance(1)
    with pytest.raises(Unauthenticated, match="expired"):
        await ring.verify(token, issuer=ISSUER, audience=AUDIENCE)
    await ring.verify(token, issuer=ISSUER, audience=AUDIENCE, leeway=5)


async def test_token_from_the_future_is_refused(ring, clock):
    """RFC 7519 §4.1.5: a token is not accepted before its nbf (and iat) by the injected clock."""
    token = ring.sign(claims_at(clock.now() + 120))
    with pytest.raises(Unauthenticated):
        await ring.verify(token, issuer=ISSUER, audience=AUDIENCE)
    clock.advance(120)
    await ring.verify(token, issuer=ISSUER, audience=AUDIENCE)


async def test_alg_none_is_refused(ring, clock):
    """RFC 9068 §4: the resource server MUST reject any JWT whose alg is none."""
    token = forge({"alg": "none", "kid": ring.current_kid, "typ": "at+jwt"}, claims_at(clock.now()))
    with pytest.raises(Unauthenticated):
        await ring.verify(token, issuer=ISSUER, audience=AUDIENCE)


async def test_hs256_signed_with_the_public_key_is_refused(ring, clock):
    """RFC 8725 §2.1/§3.1: an HMAC token keyed with the published public key must not verify (alg confusion)."""
    (jwk,) = ring.jwks()["keys"]
    public = pyjwt.PyJWK(jwk).key
    header = {"alg": "HS256", "kid": ring.current_kid, "typ": "at+jwt"}
    for secret in (
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        json.dumps(jwk).encode(),
    ):
        unsigned = forge(header, claims_at(clock.now())).rsplit(".", 1)[0]
        sig = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
        with pytest.raises(Unauthenticated):
            await ring.verify(f"{unsigned}.{b64url(sig)}", issuer=ISSUER, audience=AUDIENCE)


async def test_unknown_kid_is_refused(ring, clock):
    """RFC 9068 §4: the resource server MUST use the keys provided by the authorization server."""
    stranger = ec.generate_private_key(ec.SECP256R1())
    for kid in ("no-such-key", ring.current_kid + "x"):
        token = pyjwt.encode(claims_at(clock.now()), stranger, algorithm="ES256", headers={"kid": kid, "typ": "at+jwt"})
        with pytest.raises(Unauthenticated, match="unknown key"):
            await ring.verify(token, issuer=ISSUER, audience=AUDIENCE)


async def test_token_signed_by_another_key_under_our_kid_is_refused(ring, clock):
    """A valid signature by a foreign key fails even when the header names our kid."""
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = pyjwt.encode(
        claims_at(clock.now()), stranger, algorithm="ES256", headers={"kid": ring.current_kid, "typ": "at+jwt"}
    )
    with pytest.raises(Unauthenticated):
        await ring.verify(token, issuer=ISSUER, audience=AUDIENCE)


async def test_wrong_typ_is_refused(ring, clock):
    """RFC 9068 §2.1/§4: typ MUST be at+jwt (application/at+jwt is the same media type)."""
    claims = claims_at(clock.now())
    with pytest.raises(Unauthenticated, match="typ"):
        await ring.verify(ring.sign(claims, typ="JWT"), issuer=ISSUER, audience=AUDIENCE)
    key = ring._current.private_key
    without = pyjwt.encode(claims, key, algorithm="ES256", headers={"kid": ring.current_kid, "typ": None})
    assert "typ" not in pyjwt.get_unverified_header(without)
    with pytest.raises(Unauthenticated, match="typ"):
        await ring.verify(without, issuer=ISSUER, audience=AUDIENCE)
    assert await ring.verify(ring.sign(claims, typ="application/at+jwt"), issuer=ISSUER) == claims


@pytest.mark.parametrize("missing", ["iss", "exp", "iat", "jti"])
async def test_required_claims(ring, clock, missing):
    """RFC 9068 §2.2: iss, exp, iat and jti are REQUIRED."""
    claims = claims_at(clock.now())
    del claims[missing]
    with pytest.raises(Unauthenticated):
        await ring.verify(ring.sign(claims), issuer=ISSUER)


async def test_garbage_is_refused(ring):
    """Bad input is an Unauthenticated error, never a crash."""
    for token in ("", "a.b.c", "not a jwt", "e30.e30.", forge({"alg": "ES256", "typ": "at+jwt"}, {})):
        with pytest.raises(Unauthenticated):
            await ring.verify(token, issuer=ISSUER)


# -- rotation ----------------------------------------------------------------------


async def test_rotation_keeps_old_tokens_valid_then_drops_the_key(make_ring, redis, prefix, clock):
    """After rotation both keys are published and old tokens verify; retain_s after retirement the old key is gone."""
    ring = make_ring(rotation_s=3600, retain_s=86400)
    await ring.ensure()
    old_kid = ring.current_kid
    old_token = ring.sign(claims_at(clock.now(), expires_at=int(clock.now()) + 86000))
    assert await ring.rotate() is False
    clock.advance(3600)
    assert await ring.rotate() is True
    new_kid = ring.current_kid
    assert new_kid != old_kid
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new_kid, old_kid]
    assert all(k["use"] == "sig" and k["alg"] == "ES256" and "d" not in k for k in ring.jwks()["keys"])
    assert pyjwt.get_unverified_header(ring.sign(claims_at(clock.now())))["kid"] == new_kid
    await ring.verify(old_token, issuer=ISSUER, audience=AUDIENCE)
    assert (await stored_records(redis, prefix))[old_kid]["retired_at"] == int(clock.now())

    clock.advance(86399)
    assert old_kid in {k["kid"] for k in ring.jwks()["keys"]}
    clock.advance(1)
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new_kid]
    with pytest.raises(Unauthenticated):
        await ring.verify(old_token, issuer=ISSUER, audience=AUDIENCE)
    await ring.rotate()
    assert old_kid not in await stored_records(redis, prefix)


async def test_concurrent_rotation_rotates_once(make_ring, redis, prefix, clock):
    """Compare-and-set: several schedulers rotating at once make exactly one new key."""
    rings = [make_ring(rotation_s=3600) for _ in range(5)]
    await asyncio.gather(*(r.ensure() for r in rings))
    clock.advance(3600)
    results = await asyncio.gather(*(r.rotate() for r in rings))
    assert sorted(results) == [False, False, False, False, True]
    assert len(await stored_records(redis, prefix)) == 2
    assert len({r.current_kid for r in rings}) == 1
    assert await rings[0].rotate() is False


async def test_forced_rotation_from_a_stale_view_is_a_no_op(make_ring, redis, prefix):
    """Compare-and-set: a rotation based on a current key that already changed does not apply."""
    a, b = make_ring(), make_ring()
    await asyncio.gather(a.ensure(), b.ensure())
    stale = b.current_kid
    assert await a.rotate(force=True) is True
    script = b._rotate_script  # the exact compare-and-set rotate() runs, given b's stale view
    applied = await script(keys=[f"{prefix}signing:keys", f"{prefix}signing:current"], args=[stale, "x", "{}", "{}"])
    assert applied == 0
    assert (await redis.get(f"{prefix}signing:current")).decode() == a.current_kid
    assert len(await stored_records(redis, prefix)) == 2


async def test_other_replica_verifies_after_rotation(make_ring, clock):
    """A replica that has not seen a rotation re-reads Redis once for the unknown kid, then verifies."""
    a, b = make_ring(), make_ring()
    await a.ensure()
    await b.ensure()
    await a.rotate(force=True)
    token = a.sign(claims_at(clock.now()))
    assert await b.verify(token, issuer=ISSUER, audience=AUDIENCE)
    assert b.current_kid == a.current_kid


async def test_changing_the_alg_setting_rotates(make_ring, clock):
    """A new JITGATE_SIGNING_ALG takes effect at the next rotate(); tokens of the old key still verify."""
    es = make_ring(alg="ES256")
    await es.ensure()
    token = es.sign(claims_at(clock.now()))
    ed = make_ring(alg="EdDSA")
    await ed.ensure()
    assert pyjwt.get_unverified_header(ed.sign({"iss": ISSUER}))["alg"] == "ES256"
    assert await ed.rotate() is True
    assert [k["alg"] for k in ed.jwks()["keys"]] == ["EdDSA", "ES256"]
    assert await ed.verify(token, issuer=ISSUER, audience=AUDIENCE)


async def test_lost_current_pointer_keeps_the_old_key_until_retired(make_ring, redis, prefix, clock):
    """If signing:current is lost, a new key is made, the old one stays published and rotate() retires it."""
    ring = make_ring(retain_s=1000)
    await ring.ensure()
    old_kid = ring.current_kid
    token = ring.sign(claims_at(clock.now()))
    await redis.delete(f"{prefix}signing:current")
    await ring.ensure()
    assert ring.current_kid != old_kid
    assert await ring.verify(token, issuer=ISSUER, audience=AUDIENCE)
    assert await ring.rotate() is False
    assert (await stored_records(redis, prefix))[old_kid]["retired_at"] == int(clock.now())
    clock.advance(1000)
    await ring.rotate()
    assert old_kid not in await stored_records(redis, prefix)


async def test_a_key_never_signs_a_token_that_would_outlive_it(make_ring, clock):
    """Issue 24.5: "Keep every key until the last token it signed has expired" - a ring that keeps retired keys
    for retain_s refuses (ConfigError) to sign a token living longer than that less the rotation lag."""
    ring = make_ring(retain_s=3600)
    await ring.ensure()
    ring.sign(claims_at(clock.now(), expires_at=int(clock.now()) + 3600 - ROTATION_LAG_S))
    with pytest.raises(ConfigError, match="outlive its signing key"):
        ring.sign(claims_at(clock.now(), expires_at=int(clock.now()) + 3600 - ROTATION_LAG_S + 1))



# -- claims --------------------------------------------------------------------------


def test_claims_profile():
    """RFC 9068 §2.2 claims, RFC 9396 authorization_details, the approval record; None fields omitted."""
    claims = claims_at(1000)
    assert claims == {
        "iss": ISSUER,
        "sub": "deploy-bot",
        "aud": AUDIENCE,
        "iat": 1000,
        "nbf": 1000,
        "exp": 1600,
        "jti": "grant-1",
        "client_id": "deploy-bot",
        "scope": f"deploy:{AUDIENCE}",
        "authorization_details": [
            {
                "type": "agent_escalation",
                "actions": ["deploy"],
                "locations": [AUDIENCE],
                "action": "deploy",
                "target": AUDIENCE,
                "tool": "kubectl",
            }
        ],
        "approval": {
            "request_id": "req-1",
            "approvers": ["alice", "bob"],
            "policies": ["prod-deploy"],
            "proposal_sha256": "ab" * 32,
            "break_glass": False,
        },
    }


def test_claims_options():
    """Explicit scope, dataset, DPoP binding (RFC 9449 cnf.jkt) and break-glass appear as given."""
    claims = claims_at(1000, scope="deploy", dataset="orders", jkt="thumb", break_glass=True)
    assert claims["scope"] == "deploy"
    assert claims["authorization_details"][0]["dataset"] == "orders"
    assert claims["cnf"] == {"jkt": "thumb"}
    assert claims["approval"]["break_glass"] is True
    with pytest.raises(ValueError):
        claims_at(1000, expires_at=1000)


def test_act_claim_nesting():
    """RFC 8693 §4.1: the outermost act is the current actor; nested act claims are prior actors."""
    claims = claims_at(1000, actor_chain=["planner", "orchestrator", "alice"])
    assert claims["act"] == {"sub": "planner", "act": {"sub": "orchestrator", "act": {"sub": "alice"}}}
    assert "act" not in claims_at(1000) and "act" not in claims_at(1000, actor_chain=[])


# -- independent validators ----------------------------------------------------------


async def minted(make_ring, alg: str) -> tuple[KeyRing, str, dict]:
    ring = make_ring(alg=alg)
    await ring.ensure()
    claims = claims_at(time.time(), actor_chain=["planner"], jkt="abc")
    return ring, ring.sign(claims), claims


def joserfc_registry(audience: str = AUDIENCE):
    from joserfc import jwt as jose_jwt

    return jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": audience},
        sub={"essential": True},
        client_id={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
    )


async def test_joserfc_validates_es256_with_defaults(make_ring):
    """RFC 9068 §4 by an independent stack: joserfc with default algorithms accepts the token against the JWKS."""
    from joserfc import jwt as jose_jwt
    from joserfc.errors import InvalidClaimError
    from joserfc.jwk import KeySet

    ring, token, claims = await minted(make_ring, "ES256")
    decoded = jose_jwt.decode(token, KeySet.import_key_set(ring.jwks()))
    assert decoded.header["typ"] == "at+jwt" and decoded.header["kid"] == ring.current_kid
    joserfc_registry().validate(decoded.claims)
    assert decoded.claims == claims
    with pytest.raises(InvalidClaimError):
        joserfc_registry("prod/other-api").validate(decoded.claims)


# joserfc flags EdDSA (RFC 9864 deprecates the polymorphic name) with a SecurityWarning
# each time it is used; expected here, and silenced for this test only.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated via RFC 9864:joserfc.errors.SecurityWarning")
async def test_joserfc_validates_eddsa_when_allowed(make_ring):
    """joserfc refuses EdDSA by default and accepts it with algorithms=["EdDSA"] (why ES256 is our default)."""
    from joserfc import jwt as jose_jwt
    from joserfc.errors import UnsupportedAlgorithmError
    from joserfc.jwk import KeySet

    ring, token, claims = await minted(make_ring, "EdDSA")
    keys = KeySet.import_key_set(ring.jwks())
    with pytest.raises(UnsupportedAlgorithmError):
        jose_jwt.decode(token, keys)
    decoded = jose_jwt.decode(token, keys, algorithms=["EdDSA"])
    joserfc_registry().validate(decoded.claims)
    assert decoded.claims == claims


def authlib_validator(jwks: dict, resource_server: str = AUDIENCE):
    from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
    from joserfc.jwk import KeySet

    class Validator(JWTBearerTokenValidator):
        def get_jwks(self):
            # A KeySet, not the dict: authlib deprecates (warns on) a raw JWKS dict.
            return KeySet.import_key_set(jwks)

    return Validator(issuer=ISSUER, resource_server=resource_server)


async def test_authlib_rfc9068_validator_accepts_es256(make_ring):
    """RFC 9068 §4 by an independent stack: authlib's JWTBearerTokenValidator accepts the token and its scope."""
    from authlib.oauth2.rfc6750.errors import InsufficientScopeError, InvalidTokenError

    ring, token, claims = await minted(make_ring, "ES256")
    validator = authlib_validator(ring.jwks())
    checked = validator.authenticate_token(token)
    validator.validate_token(checked, scopes=[claims["scope"]], request=None)
    assert dict(checked) == claims
    with pytest.raises(InsufficientScopeError):
        validator.validate_token(checked, scopes=["restart:prod/payments-api"], request=None)
    other = authlib_validator(ring.jwks(), resource_server="prod/other-api")
    with pytest.raises(InvalidTokenError):
        other.validate_token(other.authenticate_token(token), scopes=None, request=None)


async def test_authlib_rfc9068_validator_refuses_eddsa(make_ring):
    """authlib's validator uses joserfc's default algorithms, so EdDSA tokens fail there (why ES256 is our default)."""
    from authlib.oauth2.rfc6750.errors import InvalidTokenError

    ring, token, _ = await minted(make_ring, "EdDSA")
    with pytest.raises(InvalidTokenError):
        authlib_validator(ring.jwks()).authenticate_token(token)
