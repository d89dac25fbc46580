"""Property tests over the shapes of JOSE headers and claims, for every verifier in the
project: whatever JSON an attacker puts where a string or a number belongs, the only
outcomes are success or the verifier's documented error (issue 14.9).

Each token is *signed with the right key* after its header and claims were mutated, so the
mutations reach the checks behind the signature, not only the parser in front of it.
Example counts are bounded (``max_examples``; no deadline) to keep the suite fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
import redis.asyncio as aioredis
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.client import InvalidToken, TokenVerifier, verify
from broker.client.verify import ReplayCache, check_binding
from broker.clock import ManualClock
from broker.errors import Unauthenticated
from broker.identity import (
    AssertionVerifier,
    InvalidDelegation,
    Registry,
    SpiffeBundle,
    generate_key,
    load_private_key,
    verify_delegation_chain,
)
from broker.jose import JoseError, access_token_hash, b64url, jwk_thumbprint, make_dpop_proof, public_jwk, verify_dpop_proof
from broker.redisline import RedisLine
from broker.tokens import KeyRing
from bot.console.demo import verified_claims

ISSUER = "https://jitgate.test"
AUDIENCE = "staging/payments-api"
URL = "https://payments.example.com/v1/config"
def now() -> int:
    """The time when the test runs (never at import: a long suite would expire the claims)."""
    return int(time.time())
PROPERTY = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Any JSON value, with the awkward ones well represented: lists and objects where strings
# belong, NaN and infinities (Python's json reads them), huge integers, empty strings.
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["", "ES256", "EdDSA", "none", "HS256", "at+jwt", "dpop+jwt", ISSUER, AUDIENCE]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                    max_leaves=6)
EXTRA_HEADER = ["crit", "b64", "jwk", "kid", "typ", "x5c", "jku"]
EXTRA_CLAIMS = ["nbf", "cnf", "act", "nonce", "ath", "aud", "reason", "actions", "targets"]


@st.composite
def mutated(draw, base: dict, extra: list[str]):
    """``base`` with up to two members dropped or replaced by any JSON and up to two extra
    members; now and then not an object at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(JSON)
    out = dict(base)
    for name in draw(st.lists(st.sampled_from(sorted(base)), max_size=2, unique=True)):
        if draw(st.booleans()):
            del out[name]
        else:
            out[name] = draw(JSON)
    out.update(draw(st.dictionaries(st.sampled_from(extra), JSON, max_size=2)))
    return out


def sign(key, header, claims) -> str:
    """A compact JWS of exactly this header and these claims, signed by ``key`` (Ed25519 or
    P-256) whatever the header says."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing_input.encode())
    else:
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input}.{b64url(signature)}"


def outcome(call, documented, successes: list | None = None):
    """Run ``call``; a documented error is an outcome like success, anything else fails the test.
    ``successes`` counts the calls that passed (a property test whose every example is refused
    would show nothing about the checks behind the first one)."""
    try:
        result = call()
    except documented:
        return None
    if successes is not None:
        successes.append(result)
    return result


# --- resource-server helpers (broker/client/verify.py) --------------------------------

TOKEN_KEY = ec.generate_private_key(ec.SECP256R1())
TOKEN_JWK = {**public_jwk(TOKEN_KEY), "alg": "ES256", "use": "sig"}
JWKS = {"keys": [TOKEN_JWK]}
AGENT_KEY = ec.generate_private_key(ec.SECP256R1())
ACCESS_HEADER = {"alg": "ES256", "typ": "at+jwt", "kid": TOKEN_JWK["kid"]}


def access_claims() -> dict:
    t = now()
    return {"iss": ISSUER, "sub": "reader-bot", "aud": AUDIENCE, "iat": t, "nbf": t, "exp": t + 300,
                 "jti": "grant-1", "cnf": {"jkt": jwk_thumbprint(public_jwk(AGENT_KEY))}}


def unbound_claims() -> dict:
    return {k: v for k, v in access_claims().items() if k != "cnf"}


def proof_for(token: str) -> str:
    return make_dpop_proof(AGENT_KEY, method="GET", url=URL, access_token=token)


@pytest.mark.parametrize("change", [{"kid": [TOKEN_JWK["kid"]]}, {"kid": {"k": 1}}, {"alg": ["ES256"]}, {"alg": {}}])
def test_list_or_object_kid_and_alg_are_invalid_tokens(change):
    """Issue 14.9, the red-team's cases: a list or object kid, a list alg - InvalidToken from verify() and from
    TokenVerifier, not TypeError (a resource server catching InvalidToken crashed on an unauthenticated request)."""
    token = sign(TOKEN_KEY, {**ACCESS_HEADER, **change}, unbound_claims())
    with pytest.raises(InvalidToken):
        verify(token, JWKS, issuer=ISSUER, audience=AUDIENCE)
    verifier = TokenVerifier("http://127.0.0.1:9", audience=AUDIENCE, issuer=ISSUER)
    verifier._jwks, verifier._fetched_at = JWKS, time.monotonic()
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_client_verify_only_succeeds_or_raises_invalid_token():
    """Issue 14.9: verify() raised TypeError for a list/object kid or a list alg; it raises InvalidToken only."""
    ok: list = []

    @PROPERTY
    @given(header=mutated(ACCESS_HEADER, EXTRA_HEADER), claims=mutated(access_claims(), EXTRA_CLAIMS))
    def check(header, claims):
        token = sign(TOKEN_KEY, header, claims)
        got = outcome(lambda: verify(token, JWKS, issuer=ISSUER, audience=AUDIENCE, dpop_proof=proof_for(token),
                                     method="GET", url=URL, scheme="DPoP", replay_cache=ReplayCache()), InvalidToken, ok)
        if got is not None:
            assert header["alg"] == "ES256" and header["kid"] == TOKEN_JWK["kid"] and got["aud"] == AUDIENCE

    check()
    assert ok


def test_token_verifier_only_succeeds_or_raises_invalid_token():
    """Issue 14.9: TokenVerifier (JWKS already fetched) raised TypeError for a list kid; InvalidToken only, and
    no JWKS fetch for a kid that cannot name a key."""
    verifier = TokenVerifier("http://127.0.0.1:9", audience=AUDIENCE, issuer=ISSUER, refresh_s=10**9)
    verifier._jwks, verifier._fetched_at = JWKS, time.monotonic()
    ok: list = []

    @PROPERTY
    @given(header=mutated(ACCESS_HEADER, EXTRA_HEADER), claims=mutated(access_claims(), EXTRA_CLAIMS))
    def check(header, claims):
        token = sign(TOKEN_KEY, header, claims)
        outcome(lambda: verifier.verify(token, dpop_proof=proof_for(token), method="GET", url=URL, scheme="DPoP"),
                InvalidToken, ok)

    check()
    assert ok


PROOF_HEADER = {"typ": "dpop+jwt", "alg": "ES256", "jwk": {k: v for k, v in public_jwk(AGENT_KEY).items() if k != "kid"}}


def proof_claims(token: str) -> dict:
    return {"jti": "p-1", "htm": "GET", "htu": URL, "iat": now(), "ath": access_token_hash(token), "nonce": "n-1"}


def test_check_binding_only_succeeds_or_raises_invalid_token():
    """check_binding (the DPoP half, also behind Introspector) raises InvalidToken only, whatever the claims'
    cnf and the proof's header and claims hold (a list nonce raised TypeError)."""
    token = "opaque.token.value"
    ok: list = []

    @PROPERTY
    @given(claims=mutated(access_claims(), EXTRA_CLAIMS), proof_header=mutated(PROOF_HEADER, EXTRA_HEADER),
           data=st.data())
    def check(claims, proof_header, data):
        proof = sign(AGENT_KEY, proof_header, data.draw(mutated(proof_claims(token), EXTRA_CLAIMS)))
        outcome(lambda: check_binding(claims if isinstance(claims, dict) else {}, token, dpop_proof=proof,
                                      method="GET", url=URL, scheme="DPoP", replay_cache=ReplayCache(),
                                      nonce=["n-1", "n-2"]), InvalidToken, ok)

    check()
    assert ok


def test_dpop_proof_verifier_only_succeeds_or_raises_jose_error():
    """broker/jose.py verify_dpop_proof (the broker's token endpoint and the client's check) raises JoseError only."""
    ok: list = []

    @PROPERTY
    @given(header=mutated(PROOF_HEADER, EXTRA_HEADER), claims=mutated(proof_claims("t.t.t"), EXTRA_CLAIMS))
    def check(header, claims):
        proof = sign(AGENT_KEY, header, claims)
        outcome(lambda: verify_dpop_proof(proof, method="GET", url=URL, now=now(), access_token="t.t.t"), JoseError, ok)

    check()
    assert ok


def test_console_demo_check_only_succeeds_or_raises_value_error():
    """bot/console/demo.py verified_claims (the demo agent checks its token) raises ValueError only, which is what
    its caller catches (pyjwt's own errors are not ValueErrors)."""
    ok: list = []

    @PROPERTY
    @given(header=mutated(ACCESS_HEADER, EXTRA_HEADER), claims=mutated(unbound_claims(), EXTRA_CLAIMS))
    def check(header, claims):
        token = sign(TOKEN_KEY, header, claims)
        outcome(lambda: verified_claims(token, JWKS, issuer=ISSUER, audience=AUDIENCE), ValueError, ok)

    check()
    assert ok


# --- broker-side verifiers (identity/, tokens.py) ------------------------------------
# These talk to Redis, so each test runs its examples on an event loop of its own.


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def registry(tmp_path) -> tuple[Registry, dict]:
    keys = {}
    agents = []
    for agent_id, kind, can_delegate in (("deploy-bot", "Ed25519", True), ("db-bot", "P-256", False)):
        pem, jwk = generate_key(kind)
        keys[agent_id] = load_private_key(pem)
        agents.append({"id": agent_id, "owner": "alice", "public_key": jwk, "can_delegate": can_delegate})
    # A SPIFFE workload is an agent only when the agents file lists it (issue 24 item 3).
    agents.append({"id": "spiffe://example.org/ns/platform/sa/indexer", "owner": "alice"})
    pem, jwk = generate_key("P-256")
    keys["payments-api"] = load_private_key(pem)
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump({"agents": agents, "resource_servers": [{"id": "payments-api", "public_key": jwk}]}))
    return Registry.load(path), keys


def assertion_claims() -> dict:
    t = now()
    return {"iss": "deploy-bot", "sub": "deploy-bot", "aud": ISSUER, "iat": t, "exp": t + 60}


def test_assertion_verifier_only_succeeds_or_raises_unauthenticated(loop, registry, redis_url, prefix):
    """broker/identity/assertions.py AssertionVerifier (every API call, agents and resource servers) raises Unauthenticated only."""
    reg, keys = registry
    line = RedisLine(redis_url)
    base = assertion_claims()  # the verifier's clock reads the claims' own instant: a second that
    # ticks between the two (a loaded machine) must not put every example's iat in the future
    verifier = AssertionVerifier(reg, line, prefix, audience=ISSUER, clock=ManualClock(start=base["iat"]))
    counter = iter(range(10**9))
    ok: list = []

    @PROPERTY
    @given(header=mutated({"alg": "EdDSA", "kid": reg.agent("deploy-bot").kid}, EXTRA_HEADER),
           claims=mutated(base, EXTRA_CLAIMS), server=st.booleans())
    def check(header, claims, server):
        if isinstance(claims, dict):
            claims.setdefault("jti", f"j-{next(counter)}")  # fresh, so a replay is not what refuses it
        key = keys["payments-api"] if server else keys["deploy-bot"]
        if server and isinstance(header, dict) and header.get("alg") == "EdDSA":
            header = {**header, "alg": "ES256"}
        token = sign(key, header, claims)
        call = verifier.verify_resource_server if server else verifier.verify_agent
        outcome(lambda: loop.run_until_complete(call(f"Bearer {token}")), Unauthenticated, ok)

    try:
        check()
    finally:
        loop.run_until_complete(line.aclose())
    assert ok


LINK_HEADER = {"typ": "jitgate-delegation+jwt", "alg": "EdDSA"}


def link_claims() -> dict:
    t = now()
    return {"iss": "deploy-bot", "sub": "db-bot", "aud": ISSUER, "iat": t, "exp": t + 600, "jti": "l-1",
               "actions": ["read"], "targets": ["staging/*"], "reason": "audit"}


def test_delegation_verifier_only_succeeds_or_raises_invalid_delegation(registry):
    """broker/identity/delegation.py verify_delegation_chain raises InvalidDelegation only."""
    reg, keys = registry
    ok: list = []

    @PROPERTY
    @given(header=mutated(LINK_HEADER, EXTRA_HEADER), claims=mutated(link_claims(), EXTRA_CLAIMS))
    def check(header, claims):
        chain = [sign(keys["deploy-bot"], header, claims)]
        outcome(lambda: verify_delegation_chain(chain, registry=reg, requester="db-bot", action="read",
                                                target="staging/payments-api", audience=ISSUER, now=now(),
                                                max_depth=3), InvalidDelegation, ok)

    check()
    assert ok


SVID_KEY = ec.generate_private_key(ec.SECP256R1())
SVID_HEADER = {"alg": "ES256", "kid": "svid-1", "typ": "JWT"}


def svid_claims() -> dict:
    t = now()
    return {"sub": "spiffe://example.org/ns/platform/sa/indexer", "aud": [ISSUER], "iat": t, "exp": t + 300}


def test_svid_verifier_only_succeeds_or_raises_unauthenticated(tmp_path, registry):
    """broker/identity/spiffe.py SpiffeBundle.verify (JWT-SVIDs) raises Unauthenticated only."""
    reg, _keys = registry
    bundle_path = tmp_path / "bundle.json"
    bundle_path.write_text(json.dumps({"keys": [{**public_jwk(SVID_KEY), "kid": "svid-1", "use": "jwt-svid"}]}))
    bundle = SpiffeBundle(bundle_path, "example.org")
    ok: list = []

    @PROPERTY
    @given(header=mutated(SVID_HEADER, EXTRA_HEADER), claims=mutated(svid_claims(), EXTRA_CLAIMS))
    def check(header, claims):
        token = sign(SVID_KEY, header, claims)
        outcome(lambda: bundle.verify(token, reg, ISSUER, now()), Unauthenticated, ok)

    check()
    assert ok


def test_keyring_verify_only_succeeds_or_raises_unauthenticated(loop, redis_url, prefix):
    """broker/tokens.py KeyRing.verify (introspection and revocation read the broker's own tokens) raises
    Unauthenticated only."""
    client = aioredis.from_url(redis_url)
    base = unbound_claims()  # the ring's clock reads the claims' own instant (see above)
    ring = KeyRing(client, prefix, os.urandom(32), clock=ManualClock(start=base["iat"]))
    loop.run_until_complete(ring.ensure())
    key = ring._current
    header_base = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
    ok: list = []

    @PROPERTY
    @given(header=mutated(header_base, EXTRA_HEADER), claims=mutated(base, EXTRA_CLAIMS),
           audience=st.sampled_from([None, AUDIENCE]))
    def check(header, claims, audience):
        token = sign(key.private_key, header, claims)
        outcome(lambda: loop.run_until_complete(ring.verify(token, issuer=ISSUER, audience=audience)), Unauthenticated, ok)

    try:
        check()
    finally:
        async def tidy():
            async for k in client.scan_iter(match=prefix + "*"):
                await client.delete(k)
            await client.aclose()

        loop.run_until_complete(tidy())
    assert ok
