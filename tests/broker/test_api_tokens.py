"""Token endpoints, discovery documents and health, over HTTP."""

from __future__ import annotations

import dataclasses

import jwt
import pytest
import yaml
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from broker.errors import ConfigError
from broker.identity import Registry, add_resource_server, generate_key, load_private_key
from tests.support.harness import ISSUER


async def _active_token(harness, agent="reader-bot") -> tuple[str, str]:
    rid = (await harness.propose(agent, action="read", target="staging/payments-api", duration_s=300)).json()["id"]
    return rid, (await harness.collect(rid, agent)).json()["access_token"]


async def test_token_passes_independent_rfc9068_validators(harness):
    """RFC 9068 §4: a resource server validates the token with the issuer's published keys (joserfc, authlib defaults)."""
    _rid, token = await _active_token(harness)
    jwks = (await harness.client.get("/.well-known/jwks.json")).json()
    keyset = KeySet.import_key_set(jwks)

    decoded = jose_jwt.decode(token, keyset)
    assert decoded.header["typ"] == "at+jwt" and decoded.header["alg"] == "ES256" and decoded.header["kid"]
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": "staging/payments-api"},
        sub={"essential": True}, jti={"essential": True}, client_id={"essential": True},
    )
    registry.validate(decoded.claims)

    class Validator(JWTBearerTokenValidator):
        def get_jwks(self):
            return keyset

    validator = Validator(issuer=ISSUER, resource_server="staging/payments-api")
    claims = validator.authenticate_token(token)
    validator.validate_token(claims, scopes=None, request=None)
    assert claims["sub"] == "reader-bot"


async def test_token_claims_follow_design(harness):
    """DESIGN token: exp within the approved window, jti, client_id, authorization_details and approval claims."""
    rid, token = await _active_token(harness)
    c = jwt.decode(token, options={"verify_signature": False})
    assert c["exp"] - c["iat"] == 300 and c["nbf"] == c["iat"]
    assert c["client_id"] == "reader-bot" and c["iss"] == ISSUER
    (detail,) = c["authorization_details"]
    assert detail["type"] == "agent_escalation" and detail["action"] == "read" and detail["target"] == "staging/payments-api"
    assert c["approval"]["request_id"] == rid and c["approval"]["break_glass"] is False
    req = (await harness.status(rid, "reader-bot")).json()
    assert req["grant"]["jti"] == c["jti"]


async def test_introspection_reports_active_claims(harness):
    """RFC 7662 §2.2: an active token's introspection carries active=true and its claims."""
    _rid, token = await _active_token(harness)
    body = (await harness.introspect(token)).json()
    assert body["active"] is True and body["sub"] == "reader-bot" and body["scope"]


async def test_revoke_by_resource_server_is_visible_at_once(harness):
    """RFC 7009: a revoked token is inactive on the next introspection."""
    rid, token = await _active_token(harness)
    r = await harness.client.post("/v1/revoke", data={"token": token}, headers=harness.auth("payments-api"))
    assert r.status_code == 200
    assert (await harness.introspect(token)).json() == {"active": False}
    body = (await harness.status(rid, "reader-bot")).json()
    assert body["status"] == "revoked" and body["closed"]["by"] == "resource_server:payments-api"


async def test_agent_revokes_own_token_only(harness):
    """An agent may revoke its own token; another agent's attempt is refused and changes nothing."""
    rid, token = await _active_token(harness)
    other = await harness.client.post("/v1/revoke", data={"token": token}, headers=harness.auth("deploy-bot"))
    assert other.status_code == 403
    assert (await harness.introspect(token)).json()["active"] is True
    own = await harness.client.post("/v1/revoke", data={"token": token}, headers=harness.auth("reader-bot"))
    assert own.status_code == 200
    assert (await harness.status(rid, "reader-bot")).json()["status"] == "revoked"


def _add_servers(harness, **servers) -> None:
    """Register resource servers (id -> audiences, None for none) with fresh keys and reload the registry."""
    for server_id, audiences in servers.items():
        pem, jwk = generate_key("P-256")
        harness.keys[server_id] = load_private_key(pem)
        add_resource_server(harness.settings.agents_file, id=server_id, public_jwk=jwk, audiences=audiences)
    assert harness.broker.registry.reload_if_changed()


async def _introspect_as(harness, server_id: str, token: str) -> dict:
    r = await harness.client.post("/v1/introspect", data={"token": token}, headers=harness.auth(server_id))
    assert r.status_code == 200
    return r.json()


async def test_introspection_answers_only_about_the_servers_own_audiences(harness):
    """RFC 7662 section 4 / issue 14.8: "Restrict each resource server to tokens whose audience it is registered
    for" - another server's token is answered exactly like an unknown one ({"active": false}); a gateway
    registered with audiences ["*"] sees every token; a server without audiences has its own id as audience."""
    _add_servers(harness, **{"prod-api": ["prod/payments-api"], "gateway": ["*"], "staging/payments-api": None,
                             "ledger": None})
    _rid, token = await _active_token(harness)  # aud staging/payments-api
    assert await _introspect_as(harness, "prod-api", token) == {"active": False}
    assert await _introspect_as(harness, "ledger", token) == {"active": False}
    assert (await _introspect_as(harness, "gateway", token))["active"] is True
    assert (await _introspect_as(harness, "staging/payments-api", token))["aud"] == "staging/payments-api"
    assert (await _introspect_as(harness, "payments-api", token))["active"] is True


async def test_revocation_only_of_the_servers_own_audiences(harness):
    """RFC 7009 section 2.1 with RFC 7662 section 4 / issue 14.8: a resource server may revoke only tokens meant
    for one of its audiences; another server's token is refused (403) and stays active."""
    _add_servers(harness, **{"prod-api": ["prod/payments-api"], "gateway": ["*"]})
    rid, token = await _active_token(harness)
    r = await harness.client.post("/v1/revoke", data={"token": token}, headers=harness.auth("prod-api"))
    assert r.status_code == 403 and r.json()["type"].endswith("/forbidden") and "its audiences" in r.json()["detail"]
    assert (await harness.introspect(token)).json()["active"] is True
    r = await harness.client.post("/v1/revoke", data={"token": token}, headers=harness.auth("gateway"))
    assert r.status_code == 200
    assert (await harness.status(rid, "reader-bot")).json()["status"] == "revoked"


@pytest.mark.parametrize("audiences, needle", [
    ([], "list of 1 to 100"), ("prod/payments-api", "list of 1 to 100"), (["*", "prod/x"], "must stand alone"),
    ([7], "not a target name"), ([""], "not a target name"), (["a\nb"], "not a target name"),
])
def test_resource_server_audiences_must_be_well_formed(tmp_path, audiences, needle):
    """A malformed 'audiences' refuses to load rather than widening or narrowing what a server may see."""
    _pem, jwk = generate_key("P-256")
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump({"resource_servers": [{"id": "rs", "public_key": jwk, "audiences": audiences}]}))
    with pytest.raises(ConfigError, match=needle):
        Registry.load(path)


async def test_token_signed_by_other_key_is_inactive(harness):
    """A token not signed by the broker is reported inactive."""
    _rid, token = await _active_token(harness)
    forged = jwt.encode(jwt.decode(token, options={"verify_signature": False}), harness.keys["reader-bot"], algorithm="ES256",
                        headers={"typ": "at+jwt", "kid": jwt.get_unverified_header(token)["kid"]})
    assert (await harness.introspect(forged)).json() == {"active": False}


async def test_rotated_key_keeps_old_tokens_valid(harness):
    """After rotation the JWKS serves current and previous keys, and older tokens still introspect as active."""
    _rid, token = await _active_token(harness)
    assert await harness.broker.keyring.rotate(force=True)
    kids = [k["kid"] for k in (await harness.client.get("/.well-known/jwks.json")).json()["keys"]]
    assert len(kids) == 2 and jwt.get_unverified_header(token)["kid"] in kids
    assert (await harness.introspect(token)).json()["active"] is True


async def test_metadata_and_openapi(harness):
    """RFC 8414 metadata names the issuer and endpoints; the OpenAPI document lists every route."""
    meta = (await harness.client.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == ISSUER and meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    doc = (await harness.client.get("/openapi.json")).json()
    for path in ("/v1/escalations", "/v1/escalations/{id}", "/v1/escalations/{id}/token", "/v1/escalations/{id}/complete",
                 "/v1/introspect", "/v1/revoke", "/.well-known/jwks.json"):
        assert path in doc["paths"]


async def test_a_405_lists_every_method_of_the_path(harness):
    """Issue 21.8: OPTIONS or PUT on /v1/escalations/{id} is a 405 whose Allow names GET and DELETE
    (DELETE was missing: each method had its own route)."""
    for method in ("OPTIONS", "PUT"):
        r = await harness.client.request(method, "/v1/escalations/AAAAAAAAAAAAAAAAAAAAAA")
        assert r.status_code == 405 and {"GET", "DELETE"} <= {m.strip() for m in r.headers["allow"].split(",")}


async def test_the_openapi_document_refuses_the_blank_values_the_api_refuses(harness):
    """Issue 21.8: the document accepted an empty target and token the API refuses with a 400;
    every value the schema now refuses is refused by the API too."""
    import re

    doc = (await harness.client.get("/openapi.json")).json()
    props = doc["components"]["schemas"]["Proposal"]["properties"]
    form = doc["paths"]["/v1/introspect"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    token = form["schema"]["properties"]["token"]

    def schema_allows(schema: dict, value: str) -> bool:
        return len(value) >= schema.get("minLength", 0) and re.search(schema.get("pattern", ""), value) is not None

    for blank in ("", "   "):
        assert not schema_allows(props["target"], blank) and not schema_allows(props["justification"], blank)
        assert (await harness.propose(target=blank)).status_code == 400
        assert (await harness.propose(justification=blank)).status_code == 400
    assert not schema_allows(token, "")
    assert (await harness.introspect("")).status_code == 400


async def test_health_ready_metrics(harness):
    """healthz and readyz answer; metrics count decisions."""
    assert (await harness.client.get("/healthz")).json()["status"] == "ok"
    assert (await harness.client.get("/readyz")).json()["status"] == "ready"
    harness.settings = dataclasses.replace(harness.settings, metrics_public=True)
    await harness.restart()  # with /metrics public (it is refused by default)
    await harness.propose()
    text = (await harness.client.get("/metrics")).text
    assert 'jitgate_decisions_total{outcome="require_approval"} 1.0' in text


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_signing_alg_setting(tmp_path, redis_url, prefix, redis, alg):
    """JITGATE_SIGNING_ALG chooses the token algorithm (ES256 by default, EdDSA available)."""
    from broker.clock import ManualClock
    from tests.support.harness import Harness, make_settings, write_agents

    settings = make_settings(tmp_path, redis_url, prefix, signing_alg=alg)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start(background=False)
    try:
        _rid, token = await _active_token(h)
        assert jwt.get_unverified_header(token)["alg"] == alg
    finally:
        await h.stop()
