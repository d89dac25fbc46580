"""SPIFFE JWT-SVIDs as agent identities, verified against the trust bundle (JITGATE_SPIFFE_BUNDLE)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import jwt
import orjson
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.client import AuthenticationFailed, Client, JitgateError, Svid
from broker.config import Settings
from broker.errors import ConfigError, Unauthenticated
from broker.identity import BAD_SVID, Agent, Registry, SpiffeBundle
from tests.client.conftest import ISSUER, SPIFFE_AGENT, ec_jwk
from tests.support.fake_spire import FakeWorkloadApi

READ = dict(action="read", target="staging/payments-api", justification="index the config", duration=120)


def svid(key, sub: str = SPIFFE_AGENT, *, kid: str = "svid-key-1", alg: str = "ES256", **claims) -> str:
    now = int(time.time())
    body = {"sub": sub, "aud": [ISSUER], "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


def svid_client(live, make) -> Client:
    c = Client(live.url, credential=Svid(make), audience=ISSUER)
    live.clients.append(c)
    return c


async def test_valid_svid_is_accepted_as_the_agent(live):
    """An SVID signed by a bundle key authenticates its SPIFFE id; the agents-file entry gives its team, so the
    staging envelope applies, and the token is DPoP-bound to a key the process made."""
    client = svid_client(live, lambda aud: svid(live.svid_key))
    grant = await client.escalate(**READ)
    token = await client.collect(grant)
    claims = jwt.decode(token.access_token, options={"verify_signature": False})
    assert claims["sub"] == SPIFFE_AGENT and token.token_type == "DPoP" and "jkt" in claims["cnf"]
    assert client.agent_id == SPIFFE_AGENT
    assert (await client.complete(grant)).status == "completed"


async def test_unlisted_workload_of_the_domain_is_refused(live):
    """Issue 24.3 "an identity that is not registered is refused, whatever its credential": a valid SVID of a
    workload the agents file does not list is refused, in the same words as a bad signature (14.15); nothing stored."""
    client = svid_client(live, lambda aud: svid(live.svid_key, "spiffe://example.org/ns/other/sa/job"))
    with pytest.raises(AuthenticationFailed) as unlisted:
        await client.propose(**READ)
    forged = svid_client(live, lambda aud: svid(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(AuthenticationFailed) as bad_signature:
        await forged.propose(**READ)
    assert unlisted.value.detail == bad_signature.value.detail == BAD_SVID
    assert await live.request_ids() == []


async def test_svid_reuse_within_its_lifetime_is_accepted(live):
    """JWT-SVIDs are bearer credentials reused until exp (as SPIRE hands them out): the same SVID works twice."""
    token = svid(live.svid_key)
    client = svid_client(live, lambda aud: token)
    esc = await client.propose(**READ)
    assert (await client.status(esc.id)).id == esc.id


@pytest.fixture
def workload_api(live, tmp_path):
    """A stand-in SPIRE agent on a unix socket, handing out SVIDs signed by the broker's trusted bundle key."""
    api = FakeWorkloadApi(tmp_path / "agent.sock", SPIFFE_AGENT, live.svid_key, "svid-key-1").start()
    yield api
    api.stop()


async def test_svid_from_the_workload_api(live, workload_api):
    """Svid.from_workload_api fetches the JWT-SVID over the SPIFFE Workload API (gRPC, unix socket) for the
    broker's issuer as audience, with the security header; the broker accepts it; one SVID serves many calls."""
    client = Client(live.url, credential=Svid.from_workload_api(workload_api.endpoint), audience=ISSUER)
    live.clients.append(client)
    async with client.grant(**READ) as token:
        claims = jwt.decode(token.access_token, options={"verify_signature": False})
        assert claims["sub"] == SPIFFE_AGENT and token.token_type == "DPoP"
    assert (await live.broker.lifecycle.get(token.request_id)).status == "completed"
    # propose, collect and complete: three signed calls, one fetch (reused until half its lifetime).
    assert len(workload_api.calls) == 1
    assert workload_api.calls[0].audience == [ISSUER] and workload_api.calls[0].metadata["workload.spiffe.io"] == "true"


async def test_svid_is_fetched_again_after_half_its_lifetime(live, workload_api):
    """A cached SVID past half its lifetime is replaced by a fresh fetch, never sent close to expiry."""
    # 4 s: the stand-in, like SPIRE, truncates iat to the second, so half the lifetime ends
    # between 1 and 2 s after the fetch: the first call below has at least 1 s in hand.
    workload_api.ttl_s = 4
    client = Client(live.url, credential=Svid.from_workload_api(workload_api.endpoint), audience=ISSUER)
    live.clients.append(client)
    esc = await client.propose(**READ)
    await client.status(esc.id)
    assert len(workload_api.calls) == 1
    await asyncio.sleep(2.1)  # past half of the lifetime however iat was truncated (the cache follows the wall clock)
    await client.status(esc.id)
    assert len(workload_api.calls) == 2


def test_unreachable_workload_api_is_a_clear_error(tmp_path):
    """No socket: a JitgateError naming the Workload API, not a gRPC stack trace at the first call."""
    with pytest.raises(JitgateError, match="SPIFFE Workload API"):
        Svid.from_workload_api(f"unix://{tmp_path}/missing.sock")


async def test_workload_api_refusal_surfaces_as_a_jitgate_error(live, workload_api):
    """A Workload API that refuses (a workload without a registration entry) is a JitgateError with its reason."""
    workload_api.registered = False
    client = Client(live.url, credential=Svid.from_workload_api(workload_api.endpoint, timeout_s=2), audience=ISSUER)
    live.clients.append(client)
    with pytest.raises(JitgateError, match="cannot fetch a JWT-SVID.*no identity issued"):
        await client.propose(**READ)
    assert await live.request_ids() == []


@pytest.mark.parametrize("make, needle", [
    (lambda key: svid(key, "spiffe://evil.org/ns/platform/sa/indexer"), "trust domain 'evil.org'"),
    (lambda key: svid(ec.generate_private_key(ec.SECP256R1())), BAD_SVID),
    (lambda key: svid(key, kid="other-kid"), BAD_SVID),
    (lambda key: svid(key, aud=["https://other.example"]), "audience"),
    (lambda key: svid(key, exp=int(time.time()) - 120), "expired"),
    (lambda key: svid(key, exp=int(time.time()) + 86400), "longer than"),
    (lambda key: svid(key, "spiffe://example.org/"), "path"),
    (lambda key: jwt.encode({"sub": SPIFFE_AGENT, "aud": ISSUER, "exp": int(time.time()) + 60}, "s" * 32,
                            algorithm="HS256", headers={"kid": "svid-key-1"}), "algorithm not allowed"),
])
async def test_bad_svids_are_refused(live, make, needle):
    """SPIFFE JWT-SVID validation: bundle key and signature, trust domain, audience, expiry; HS256 never."""
    client = svid_client(live, lambda aud: make(live.svid_key))
    with pytest.raises(AuthenticationFailed) as caught:
        await client.propose(**READ)
    assert needle in caught.value.detail
    assert await live.request_ids() == []


def test_bundle_accepts_rsa_keys_and_rotates_on_change(tmp_path):
    """The bundle may hold RSA jwt-svid keys (x509-svid entries are skipped); an edited file is picked up."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = rsa_key.public_key().public_numbers()
    from broker.jose import b64url  # noqa: PLC0415

    rsa_jwk = {"kty": "RSA", "kid": "r1", "use": "jwt-svid", "e": b64url(numbers.e.to_bytes(3, "big")),
               "n": b64url(numbers.n.to_bytes(256, "big"))}
    ec_old = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "bundle.jwks"
    path.write_text(json.dumps({"keys": [{**ec_jwk(ec_old.public_key(), "x"), "use": "x509-svid", "x5c": ["AA=="]},
                                         rsa_jwk]}))
    bundle = SpiffeBundle(path, "example.org")
    registry = Registry([Agent(id=SPIFFE_AGENT, owner=None, team=None, public_jwk=None, kid="")])
    agent, _ = bundle.verify(svid(rsa_key, kid="r1", alg="RS256"), registry, ISSUER, time.time())
    assert agent.id == SPIFFE_AGENT and agent.team is None
    with pytest.raises(Unauthenticated, match="JWT-SVID not accepted"):
        bundle.verify(svid(ec_old, kid="new"), registry, ISSUER, time.time())
    path.write_text(json.dumps({"keys": [ec_jwk(ec_old.public_key(), "new")]}))
    bundle._checked_at = float("-inf")  # skip the two-second re-check interval
    assert bundle.verify(svid(ec_old, kid="new"), registry, ISSUER, time.time())[0].id == SPIFFE_AGENT


def test_bundle_misconfiguration_refuses_start(tmp_path):
    """Fail closed: a bundle without jwt-svid keys, with private keys, or without its trust domain refuses."""
    path = tmp_path / "bundle.jwks"
    path.write_text(json.dumps({"keys": []}))
    with pytest.raises(ConfigError, match="no jwt-svid keys"):
        SpiffeBundle(path, "example.org")
    key = ec.generate_private_key(ec.SECP256R1())
    private = {**ec_jwk(key.public_key(), "k"), "d": b64url_int(key.private_numbers().private_value)}
    path.write_text(json.dumps({"keys": [private]}))
    with pytest.raises(ConfigError, match="private key material"):
        SpiffeBundle(path, "example.org")
    with pytest.raises(ConfigError, match="JITGATE_SPIFFE_TRUST_DOMAIN"):
        Settings.from_env({"JITGATE_ISSUER": ISSUER, "JITGATE_KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                           "JITGATE_SPIFFE_BUNDLE": str(path)})


def b64url_int(value: int) -> str:
    from broker.jose import b64url  # noqa: PLC0415

    return b64url(value.to_bytes(32, "big"))


@pytest.mark.parametrize("how", ["removed", "denied"])
async def test_a_removed_or_denied_spiffe_agent_stops_and_loses_its_grants(live, how):
    """Issue 24.3 "removing a SPIFFE agent does not disable it": once its entry is removed from the agents file (or its
    id listed under denied_spiffe_ids), the reload, with no API traffic, revokes its active grant with an audit entry,
    and its still-valid SVID is refused like a bad signature."""
    client = svid_client(live, lambda aud: svid(live.svid_key))
    grant = await client.escalate(**READ)
    token = await client.collect(grant)
    assert (await live.broker.lifecycle.introspect(token.access_token))["active"] is True

    path = live.broker.settings.agents_file
    doc = yaml.safe_load(path.read_text())
    if how == "removed":
        doc["agents"] = [a for a in doc["agents"] if a["id"] != SPIFFE_AGENT]
    else:
        doc["denied_spiffe_ids"] = [SPIFFE_AGENT]
    path.write_text(yaml.safe_dump(doc))
    later = time.time() + 5
    os.utime(path, (later, later))

    deadline = time.monotonic() + 10
    while (await live.broker.lifecycle.get(grant.request_id)).status != "revoked":
        assert time.monotonic() < deadline, "the removed agent's grant was not revoked"
        await asyncio.sleep(0.05)
    req = await live.broker.lifecycle.get(grant.request_id)
    assert req.closed_by == "registry" and SPIFFE_AGENT in req.close_reason
    assert await live.broker.lifecycle.introspect(token.access_token) == {"active": False}
    store = live.broker.store
    events = [orjson.loads(f[b"event"]) for _, f in await store.redis.xrange(store.audit_stream)]
    revoked = [r for e in events if e["type"] == "registry.closed" for r in e["data"]["requests"]
               if r["request_id"] == grant.request_id]
    assert len(revoked) == 1 and revoked[0]["status"] == "revoked"
    assert [e["actor"]["by"] for e in events if e["type"] == "registry.closed"] == ["registry"]

    again = svid_client(live, lambda aud: svid(live.svid_key))
    with pytest.raises(AuthenticationFailed) as refused:
        await again.propose(**READ)
    assert refused.value.detail == BAD_SVID
