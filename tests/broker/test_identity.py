"""Agent identity: registry file, key handling and assertion verification against real Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

from broker.clock import ManualClock
from broker.errors import ConfigError, Unauthenticated
from broker.identity import (
    Agent,
    BAD_ASSERTION,
    AssertionVerifier,
    Registry,
    ResourceServer,
    add_agent,
    generate_key,
    jwk_thumbprint,
    load_private_key,
    make_assertion,
    public_jwk,
)
from broker.redisline import RedisLine

AUD = "https://jitgate.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def claims_for(agent_id: str, now: float, **changes) -> dict:
    claims = {"iss": agent_id, "sub": agent_id, "aud": AUD, "iat": int(now), "exp": int(now) + 60, "jti": os.urandom(8).hex()}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@dataclass
class World:
    path: Path
    registry: Registry
    clock: ManualClock
    verifier: AssertionVerifier
    ed_key: ed25519.Ed25519PrivateKey  # agent "deploy-bot"
    ec_key: ec.EllipticCurvePrivateKey  # agent "db-bot", kid "db-key-1"
    rs_key: ec.EllipticCurvePrivateKey  # resource server "payments-api"

    def bearer(self, token: str) -> str:
        return f"Bearer {token}"

    def assertion(self, key=None, agent_id: str = "deploy-bot", **kw) -> str:
        return make_assertion(key or self.ed_key, agent_id=agent_id, audience=AUD, now=self.clock.now(), **kw)


def write_agents_file(path: Path, agents: list, servers: list | None = None) -> None:
    data: dict = {"agents": agents}
    if servers is not None:
        data["resource_servers"] = servers
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def new_verifier(registry, line, prefix, clock) -> AssertionVerifier:
    return AssertionVerifier(registry, line, prefix, audience=AUD, clock=clock)


@pytest.fixture
def world(tmp_path, line, prefix) -> World:
    ed_pem, ed_jwk = generate_key("Ed25519")
    ec_pem, ec_jwk = generate_key("P-256")
    rs_pem, rs_jwk = generate_key("P-256")
    ec_jwk["kid"] = "db-key-1"
    del rs_jwk["kid"]
    path = tmp_path / "agents.yaml"
    write_agents_file(
        path,
        [
            {"id": "deploy-bot", "owner": "alice", "team": "platform", "public_key": ed_jwk},
            {"id": "db-bot", "owner": "bob", "team": "data", "public_key": ec_jwk, "can_delegate": True},
        ],
        [{"id": "payments-api", "public_key": rs_jwk}],
    )
    registry = Registry.load(path)
    clock = ManualClock()
    return World(
        path=path,
        registry=registry,
        clock=clock,
        verifier=new_verifier(registry, line, prefix, clock),
        ed_key=load_private_key(ed_pem),
        ec_key=load_private_key(ec_pem),
        rs_key=load_private_key(rs_pem),
    )


async def refused(world: World, token: str, detail: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        await world.verifier.verify_agent(world.bearer(token))
    assert info.value.detail == detail


# --- happy paths ------------------------------------------------------------------------


async def test_ed25519_assertion_verifies(world):
    """An Ed25519 (EdDSA) assertion from a registered agent is accepted and its claims returned."""
    agent, claims = await world.verifier.verify_agent(world.bearer(world.assertion(jti="j-1")))
    assert agent.id == "deploy-bot" and agent.owner == "alice" and agent.team == "platform"
    assert agent.can_delegate is False
    assert claims["jti"] == "j-1" and claims["aud"] == AUD and claims["exp"] - claims["iat"] == 60


async def test_p256_assertion_with_kid_verifies(world):
    """A P-256 (ES256) assertion carrying the registered kid is accepted."""
    token = world.assertion(world.ec_key, agent_id="db-bot", kid="db-key-1")
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    agent, _ = await world.verifier.verify_agent(world.bearer(token))
    assert agent.id == "db-bot" and agent.kid == "db-key-1" and agent.can_delegate is True


async def test_scheme_is_case_insensitive(world):
    """RFC 6750: the scheme is case-insensitive."""
    agent, _ = await world.verifier.verify_agent(f"bEaReR   {world.assertion()}")
    assert agent.id == "deploy-bot"


@pytest.mark.parametrize("aud", [["https://other.example", AUD], [AUD, AUD], [AUD], AUD + "/", {"aud": AUD}])
async def test_audience_must_be_the_broker_alone(world, aud):
    """RFC 7523bis section 3: the assertion's aud is the authorization server's issuer identifier as its
    sole value (issue 14.6: a list holding the issuer plus other audiences was accepted)."""
    await refused(world, world.assertion(extra={"aud": aud}), "audience does not match this broker")
    with pytest.raises(Unauthenticated, match="audience does not match this broker"):
        await world.verifier.verify_resource_server(world.bearer(
            make_assertion(world.rs_key, agent_id="payments-api", audience=aud, now=world.clock.now())))


async def test_verifier_uses_the_injected_clock(tmp_path, line, prefix, world):
    """Expiry and replay are judged on the injected clock, even one far from real time."""
    clock = ManualClock(start=1_000_000_000)
    verifier = new_verifier(world.registry, line, prefix, clock)
    token = make_assertion(world.ed_key, agent_id="deploy-bot", audience=AUD, now=clock.now())
    await verifier.verify_agent(world.bearer(token))
    with pytest.raises(Unauthenticated, match="assertion replayed"):
        await verifier.verify_agent(world.bearer(token))


async def test_jti_is_remembered_until_the_assertion_is_dead(world, redis, prefix):
    """The replay key lives at least until exp + leeway and not much longer."""
    await world.verifier.verify_agent(world.bearer(world.assertion(jti="abc", lifetime_s=120)))
    ttl_ms = await redis.pttl(f"{prefix}jti:deploy-bot:abc")
    assert (120 + 30) * 1000 - 2000 < ttl_ms <= (120 + 60) * 1000


# --- algorithm and key confusion ---------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_refused(world, alg):
    """DESIGN agent identity: an unsigned (alg none) assertion is refused."""
    token = compact({"alg": alg, "typ": "JWT"}, claims_for("deploy-bot", world.clock.now()))
    await refused(world, token, "algorithm not allowed")


@pytest.mark.parametrize("which", ["pem", "raw"])
async def test_hs256_signed_with_the_public_key_is_refused(world, which):
    """DESIGN agent identity: HS256 keyed with the agent's public key (key confusion) is refused."""
    public = world.ed_key.public_key()
    if which == "pem":
        secret = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        secret = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims_for("deploy-bot", world.clock.now())).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    await refused(world, f"{header}.{payload}.{b64(mac)}", "algorithm not allowed")


async def test_rs256_is_refused(world):
    """DESIGN agent identity: only EdDSA and ES256 are accepted; an RS256 assertion is refused."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims_for("deploy-bot", world.clock.now()), rsa_key, algorithm="RS256")
    await refused(world, token, "algorithm not allowed")


async def test_header_alg_must_match_the_registered_key_type(world):
    """DESIGN agent identity: an ES256 assertion for an Ed25519-registered agent is refused."""
    token = world.assertion(world.ec_key, agent_id="deploy-bot")
    await refused(world, token, BAD_ASSERTION)


async def test_eddsa_for_a_p256_agent_is_refused(world):
    """DESIGN agent identity: an EdDSA assertion for a P-256-registered agent is refused."""
    token = world.assertion(world.ed_key, agent_id="db-bot")
    await refused(world, token, BAD_ASSERTION)


async def test_unknown_kid_is_refused(world):
    """DESIGN agent identity: a kid header other than the registered key's is refused."""
    await refused(world, world.assertion(kid="someone-elses-key"), BAD_ASSERTION)


async def test_kid_defaults_to_the_rfc7638_thumbprint(world):
    """Without a kid in the JWK the registered kid is its thumbprint, and that kid is accepted."""
    agent = world.registry.agent("deploy-bot")
    assert agent.kid == jwk_thumbprint(agent.public_jwk)
    assert (await world.verifier.verify_agent(world.bearer(world.assertion(kid=agent.kid))))[0] is agent


async def test_unknown_agent_is_refused(world):
    """DESIGN agent identity: an assertion from an unregistered id is refused."""
    await refused(world, world.assertion(agent_id="stranger"), BAD_ASSERTION)


async def test_signature_by_another_key_is_refused(world):
    """DESIGN agent identity: a well-formed assertion not signed by the registered key is refused."""
    impostor = ed25519.Ed25519PrivateKey.generate()
    await refused(world, world.assertion(impostor), BAD_ASSERTION)


async def test_tampered_payload_is_refused(world):
    """A payload changed after signing fails the signature check."""
    header, _, signature = world.assertion().split(".")
    payload = b64(json.dumps(claims_for("deploy-bot", world.clock.now(), exp=int(world.clock.now()) + 90)).encode())
    await refused(world, f"{header}.{payload}.{signature}", BAD_ASSERTION)


async def test_crit_header_is_refused(world):
    """RFC 7515 4.1.11: a critical extension we do not implement (b64=false) is refused."""
    token = jwt.encode(
        claims_for("deploy-bot", world.clock.now()), world.ed_key, algorithm="EdDSA", headers={"crit": ["exp"], "exp": 1}
    )
    await refused(world, token, "unsupported critical header")


# --- claims -------------------------------------------------------------------------------


async def test_wrong_audience_is_refused(world):
    """DESIGN agent identity: aud must be the broker's issuer URL."""
    token = make_assertion(world.ed_key, agent_id="deploy-bot", audience="https://evil.example", now=world.clock.now())
    await refused(world, token, "audience does not match this broker")


async def test_expired_assertion_is_refused(world):
    """DESIGN agent identity: an assertion past exp (plus leeway) is refused; within leeway it passes."""
    late = world.assertion(lifetime_s=60)
    stale = world.assertion(lifetime_s=60)
    world.clock.advance(60 + 29)
    await world.verifier.verify_agent(world.bearer(late))
    world.clock.advance(1)
    await refused(world, stale, "assertion expired")


async def test_lifetime_over_five_minutes_is_refused(world):
    """DESIGN agent identity: exp is at most 5 minutes after iat."""
    await world.verifier.verify_agent(world.bearer(world.assertion(lifetime_s=300)))
    await refused(world, world.assertion(lifetime_s=301), "assertion lifetime exceeds 300 s")


async def test_iat_in_the_future_is_refused(world):
    """An assertion issued more than the leeway ahead of the broker's clock is refused."""
    token = make_assertion(world.ed_key, agent_id="deploy-bot", audience=AUD, now=world.clock.now() + 31)
    await refused(world, token, "assertion issued in the future")


async def test_nbf_in_the_future_is_refused(world):
    """RFC 7519 4.1.5: an assertion not yet valid is refused."""
    token = world.assertion(extra={"nbf": int(world.clock.now()) + 45})
    await refused(world, token, "assertion not yet valid")


@pytest.mark.parametrize("claim", ["jti", "iat", "exp", "aud", "sub"])
async def test_missing_required_claim_is_refused(world, claim):
    """DESIGN agent identity: iss, sub, aud, iat, exp and jti are all required."""
    claims = claims_for("deploy-bot", world.clock.now(), **{claim: None})
    token = jwt.encode(claims, world.ed_key, algorithm="EdDSA")
    await refused(world, token, f"assertion lacks the {claim!r} claim")


async def test_iss_must_equal_sub(world):
    """DESIGN agent identity: iss = sub = agent id; a different sub is refused."""
    await refused(world, world.assertion(extra={"sub": "db-bot"}), "sub must equal iss")


@pytest.mark.parametrize("jti", ["", "x" * 129, "a:b", 42])
async def test_bad_jti_is_refused(world, jti):
    """A jti must be a string of 1 to 128 characters (and no ':' so replay keys cannot collide)."""
    await refused(world, world.assertion(jti="ok", extra={"jti": jti}), "jti must be 1 to 128 printable characters without ':'")


async def test_non_numeric_times_are_refused(world):
    """iat and exp must be numbers (NaN and strings refused)."""
    token = world.assertion(extra={"exp": "tomorrow"})
    await refused(world, token, "iat and exp must be numbers")


# --- replay ---------------------------------------------------------------------------------


async def test_replayed_jti_is_refused_across_verifiers(world, redis_url, prefix):
    """DESIGN agent identity: a replayed jti is refused, also by another broker replica sharing Redis."""
    token = world.assertion()
    other_line = RedisLine(redis_url)  # the other replica's own connection
    try:
        replica = new_verifier(world.registry, other_line, prefix, world.clock)
        await world.verifier.verify_agent(world.bearer(token))
        with pytest.raises(Unauthenticated, match="assertion replayed"):
            await replica.verify_agent(world.bearer(token))
        with pytest.raises(Unauthenticated, match="assertion replayed"):
            await world.verifier.verify_agent(world.bearer(world.assertion(jti=jwt.decode(token, options={"verify_signature": False})["jti"])))
    finally:
        await other_line.aclose()


async def test_failed_assertion_does_not_burn_its_jti(world, redis, prefix):
    """DESIGN agent identity: a refused assertion does not use up its jti."""
    bad = make_assertion(world.ed_key, agent_id="deploy-bot", audience="https://evil.example", now=world.clock.now(), jti="once")
    await refused(world, bad, "audience does not match this broker")
    await refused(world, world.assertion(jti="once", lifetime_s=301), "assertion lifetime exceeds 300 s")
    assert await redis.exists(f"{prefix}jti:deploy-bot:once") == 0
    await world.verifier.verify_agent(world.bearer(world.assertion(jti="once")))


async def test_same_jti_from_two_agents_is_not_a_replay(world):
    """Replay is tracked per issuer: two agents may pick the same jti."""
    await world.verifier.verify_agent(world.bearer(world.assertion(jti="same")))
    await world.verifier.verify_agent(world.bearer(world.assertion(world.ec_key, agent_id="db-bot", jti="same")))


# --- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", "Bearer", "Bearer   "])
async def test_missing_assertion_is_refused(world, value):
    """An absent or blank Authorization header is refused."""
    with pytest.raises(Unauthenticated, match="missing bearer assertion"):
        await world.verifier.verify_agent(value)


async def test_other_scheme_is_refused(world):
    """Only the Bearer scheme is accepted."""
    with pytest.raises(Unauthenticated, match="Bearer scheme"):
        await world.verifier.verify_agent("Basic ZGVwbG95LWJvdDpodW50ZXIy")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b",
        "a.b.c.d",
        "!!!.???.###",
        "e30.e30",
        f"{b64(b'[1]')}.{b64(b'{}')}.",
        f"{b64(b'{not json')}.{b64(b'{}')}.c2ln",
        f"{b64(json.dumps({'alg': 'EdDSA'}).encode())}.{b64(b'[]')}.c2ln",
        "a" * 9000 + ".b.c",
    ],
)
async def test_garbage_token_is_refused(world, token):
    """Tokens that are not a compact JWS with JSON object header and payload are refused as malformed."""
    await refused(world, token, "malformed assertion")


async def test_non_string_iss_is_refused(world):
    """An iss that is not a string is an unknown agent, not a crash."""
    token = compact({"alg": "EdDSA"}, claims_for("deploy-bot", world.clock.now(), iss=["deploy-bot"]), b"sig")
    await refused(world, token, BAD_ASSERTION)


# --- resource servers -----------------------------------------------------------------------


async def test_resource_server_assertion_verifies(world):
    """DESIGN agent identity: resource servers authenticate with their own registered key."""
    token = world.assertion(world.rs_key, agent_id="payments-api")
    server, claims = await world.verifier.verify_resource_server(world.bearer(token))
    assert isinstance(server, ResourceServer) and server.id == "payments-api" and claims["iss"] == "payments-api"


async def test_agent_cannot_authenticate_as_resource_server(world):
    """DESIGN agent identity: an agent's assertion is refused at the resource-server check, and vice versa."""
    with pytest.raises(Unauthenticated) as info:
        await world.verifier.verify_resource_server(world.bearer(world.assertion()))
    assert info.value.detail == BAD_ASSERTION
    await refused(world, world.assertion(world.rs_key, agent_id="payments-api"), BAD_ASSERTION)


# --- registry file ----------------------------------------------------------------------------


def test_missing_file_is_an_empty_registry(tmp_path):
    """A missing agents file loads as an empty registry."""
    registry = Registry.load(tmp_path / "absent.yaml")
    assert registry.agents == () and registry.resource_servers == () and registry.agent("x") is None


def test_registry_refuses_private_jwk(tmp_path):
    """DESIGN agent identity: the agents file must hold public keys only (a JWK with "d" is refused)."""
    key = ed25519.Ed25519PrivateKey.generate()
    jwk = public_jwk(key)
    jwk["d"] = b64(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))
    path = tmp_path / "agents.yaml"
    write_agents_file(path, [{"id": "deploy-bot", "public_key": jwk}])
    with pytest.raises(ConfigError, match="agents file must hold public keys only") as info:
        Registry.load(path)
    assert str(path) in info.value.detail and "agents[0] (id 'deploy-bot')" in info.value.detail


def _jwk_of(public) -> dict:
    if isinstance(public, x25519.X25519PublicKey):
        return {"kty": "OKP", "crv": "X25519", "x": b64(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))}
    if isinstance(public, rsa.RSAPublicKey):
        n = public.public_numbers()
        return {"kty": "RSA", "n": b64(n.n.to_bytes(256, "big")), "e": "AQAB"}
    numbers = public.public_numbers()
    size = (public.curve.key_size + 7) // 8
    crv = {"secp384r1": "P-384", "secp256k1": "secp256k1"}[public.curve.name]
    return {"kty": "EC", "crv": crv, "x": b64(numbers.x.to_bytes(size, "big")), "y": b64(numbers.y.to_bytes(size, "big"))}


@pytest.mark.parametrize(
    "make",
    [
        lambda: ec.generate_private_key(ec.SECP384R1()).public_key(),
        lambda: ec.generate_private_key(ec.SECP256K1()).public_key(),
        lambda: x25519.X25519PrivateKey.generate().public_key(),
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
    ],
    ids=["P-384", "secp256k1", "X25519", "RSA"],
)
def test_registry_refuses_other_curves_and_key_types(tmp_path, make):
    """DESIGN agent identity: only Ed25519 or P-256 public keys are accepted."""
    path = tmp_path / "agents.yaml"
    write_agents_file(path, [{"id": "deploy-bot", "public_key": _jwk_of(make())}])
    with pytest.raises(ConfigError, match="OKP/Ed25519 or EC/P-256"):
        Registry.load(path)


def test_registry_refuses_point_off_the_curve(tmp_path):
    """A P-256 JWK whose point is not on the curve is refused."""
    jwk = generate_key("P-256")[1]
    jwk["y"] = b64((int.from_bytes(base64.urlsafe_b64decode(jwk["y"] + "=="), "big") ^ 1).to_bytes(32, "big"))
    path = tmp_path / "agents.yaml"
    write_agents_file(path, [{"id": "deploy-bot", "public_key": jwk}])
    with pytest.raises(ConfigError, match="not a valid public key"):
        Registry.load(path)


def test_registry_refuses_duplicate_ids(tmp_path):
    """Agent ids are unique (also across agents and resource servers)."""
    path = tmp_path / "agents.yaml"
    write_agents_file(path, [{"id": "a", "public_key": generate_key()[1]}, {"id": "a", "public_key": generate_key()[1]}])
    with pytest.raises(ConfigError, match=r"agents\[1\] \(id 'a'\): duplicate id, already used by agents\[0\]"):
        Registry.load(path)
    write_agents_file(path, [{"id": "a", "public_key": generate_key()[1]}], [{"id": "a", "public_key": generate_key()[1]}])
    with pytest.raises(ConfigError, match="duplicate id"):
        Registry.load(path)


def test_registry_refuses_one_key_for_two_entries(tmp_path):
    """Two entries with the same public key could sign as each other: refused."""
    jwk = generate_key()[1]
    path = tmp_path / "agents.yaml"
    write_agents_file(path, [{"id": "a", "public_key": jwk}, {"id": "b", "public_key": dict(jwk, kid="other")}])
    with pytest.raises(ConfigError, match="same public key as agents"):
        Registry.load(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("agents: [\n", "not valid YAML"),
        ("- just a list\n", "must be a mapping"),
        ("agent: []\n", "unknown top-level key"),
        ("agents: {id: a}\n", "'agents' must be a list"),
        ("agents:\n  - id: 'bad id!'\n    public_key: {}\n", "'id' must be 1 to 128"),
        ("agents:\n  - id: a\n", "'public_key' is required"),
        ("agents:\n  - id: a\n    owner: 7\n    public_key: {kty: OKP}\n", "'owner' must be"),
        ("agents:\n  - id: a\n    id: b\n", "duplicate key 'id'"),
        ("agents:\n  - {id: a, publick_key: {}}\n", "unknown key(s) publick_key"),
    ],
)
def test_malformed_file_names_file_and_entry(tmp_path, text, message):
    """A malformed agents file refuses to load, naming the file (and the entry where there is one)."""
    path = tmp_path / "agents.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Registry.load(path)
    assert message in info.value.detail and str(path) in info.value.detail


def test_jwk_thumbprint_matches_rfc8037_example():
    """RFC 8037 appendix A.3: the Ed25519 JWK thumbprint test vector."""
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert jwk_thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


@pytest.mark.parametrize("kind", ["Ed25519", "P-256"])
def test_generated_key_round_trips(kind):
    """generate_key gives a PKCS#8 PEM and the matching public JWK with its thumbprint as kid."""
    pem, jwk = generate_key(kind)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_jwk(load_private_key(pem)) == jwk and jwk["kid"] == jwk_thumbprint(jwk) and "d" not in jwk


def test_unsupported_keys_are_refused():
    """Only Ed25519 and P-256 keys can be generated or loaded."""
    with pytest.raises(ConfigError):
        generate_key("RSA")
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigError):
        load_private_key(rsa_pem)
    with pytest.raises(ConfigError):
        load_private_key(b"not a key")


def test_agent_is_hashable_and_hides_its_key():
    """Agents compare by their data, hash without the JWK dict, and keep the key object out of repr."""
    jwk = generate_key()[1]
    one = Agent(id="a", owner=None, team=None, public_jwk=jwk, kid=jwk["kid"])
    two = Agent(id="a", owner=None, team=None, public_jwk=dict(jwk), kid=jwk["kid"])
    assert one == two and hash(one) == hash(two) and "_key" not in repr(one) and one.alg == "EdDSA"


# --- add_agent and reload ------------------------------------------------------------------------


def test_add_agent_round_trip(tmp_path):
    """add_agent creates the file, inserts after the last agent keeping comments, and the registry loads it."""
    path = tmp_path / "conf" / "agents.yaml"
    first = add_agent(path, id="deploy-bot", owner="alice", team="platform", public_jwk=generate_key()[1])
    servers = f"# introspection callers\nresource_servers:\n  - id: payments-api\n    public_key: {json.dumps(generate_key('P-256')[1])}\n"
    path.write_text("# agents of the platform team\n" + path.read_text() + servers)
    second = add_agent(path, id="db-bot", owner=None, team=None, public_jwk=generate_key("P-256")[1])
    text = path.read_text()
    assert text.startswith("# agents of the platform team\nagents:\n") and text.endswith(servers)
    registry = Registry.load(path)
    assert registry.agents == (first, second) and registry.agent("db-bot").owner is None
    assert registry.resource_server("payments-api") is not None
    assert [p.name for p in path.parent.iterdir()] == ["agents.yaml"]


def test_add_agent_keeps_layout_when_agents_come_last(tmp_path):
    """When agents is the last section the new entry is appended as text (comments survive)."""
    path = tmp_path / "agents.yaml"
    path.write_text("resource_servers: []\n# who may ask\nagents:\n  - id: a  # first one\n"
                    f"    public_key: {json.dumps(generate_key()[1])}\n")
    before = path.read_text()
    add_agent(path, id="b", owner="carol", team=None, public_jwk=generate_key()[1])
    assert path.read_text().startswith(before)
    assert [a.id for a in Registry.load(path).agents] == ["a", "b"]


def test_add_agent_refuses_duplicates_and_private_keys(tmp_path):
    """add_agent refuses a duplicate id and a private JWK, leaving the file untouched."""
    path = tmp_path / "agents.yaml"
    add_agent(path, id="deploy-bot", owner="alice", team=None, public_jwk=generate_key()[1])
    before = path.read_text()
    with pytest.raises(ConfigError, match="already exists"):
        add_agent(path, id="deploy-bot", owner="bob", team=None, public_jwk=generate_key()[1])
    private = dict(generate_key()[1], d="AAAA")
    with pytest.raises(ConfigError, match="agents file must hold public keys only"):
        add_agent(path, id="other-bot", owner=None, team=None, public_jwk=private)
    assert path.read_text() == before


def test_reload_if_changed(tmp_path):
    """reload_if_changed picks up a new file, ignores an unchanged one, and keeps old data on a broken one."""
    path = tmp_path / "agents.yaml"
    add_agent(path, id="a", owner=None, team=None, public_jwk=generate_key()[1])
    registry = Registry.load(path)
    assert registry.reload_if_changed() is False
    add_agent(path, id="b", owner=None, team=None, public_jwk=generate_key()[1])
    assert registry.reload_if_changed() is True and registry.agent("b") is not None
    path.write_text("agents: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        registry.reload_if_changed()
    assert [a.id for a in registry.agents] == ["a", "b"]
    assert registry.reload_if_changed() is False  # the same broken version is reported once
    write_agents_file(path, [{"id": "c", "public_key": generate_key()[1]}])
    assert registry.reload_if_changed() is True and [a.id for a in registry.agents] == ["c"]


async def test_verifier_sees_reloaded_registry(world):
    """An agent removed from the file stops authenticating after reload."""
    write_agents_file(world.path, [{"id": "db-bot", "public_key": world.registry.agent("db-bot").public_jwk}])
    stamp = time.time() + 5
    os.utime(world.path, (stamp, stamp))
    assert world.registry.reload_if_changed() is True
    await refused(world, world.assertion(), BAD_ASSERTION)
