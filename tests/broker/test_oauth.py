"""broker/oauth.py over HTTP: the exact answers of RFC 7662 introspection, RFC 7009
revocation and RFC 8414 metadata (byte for byte, so moving the logic changes nothing)."""

from __future__ import annotations

import orjson
import pytest

from tests.support.harness import ISSUER


async def _active_token(harness, agent="reader-bot") -> str:
    rid = (await harness.propose(agent, action="read", target="staging/payments-api", duration_s=300)).json()["id"]
    return (await harness.collect(rid, agent)).json()["access_token"]


@pytest.mark.parametrize("path", ["/v1/introspect", "/v1/revoke"])
@pytest.mark.parametrize("form", [{"token_type_hint": "access_token"}, {"token": ""}])
async def test_token_parameter_is_required_by_both_endpoints(harness, path, form):
    """RFC 7662 section 2.1 and RFC 7009 section 2.1: "token REQUIRED" - a request without it
    (or with it empty) is a 400 problem, from an authenticated resource server."""
    r = await harness.client.post(path, data=form, headers=harness.auth("payments-api"))
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "'token' is required"


async def test_inactive_introspection_is_exactly_active_false(harness):
    """RFC 7662 section 2.2: the authorization server "MUST return an introspection response with
    the "active" field set to "false"" for a token that is not active, and "SHOULD NOT include any
    additional information about an inactive token": the body is these bytes and nothing else."""
    r = await harness.introspect("not-a-token")
    assert r.status_code == 200 and r.content == b'{"active":false}'
    assert r.headers["cache-control"] == "no-store"


async def test_active_introspection_lists_active_first_then_the_claims_in_order(harness):
    """RFC 7662 section 2.2: "active" REQUIRED; the answer keeps its member order (active,
    token_type, then the token's claims in a fixed order), so clients comparing bytes see no change."""
    token = await _active_token(harness)
    body = (await harness.introspect(token)).json()
    assert list(body) == ["active", "token_type", "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id",
                          "scope", "authorization_details", "approval"]
    assert body["active"] is True and body["token_type"] == "Bearer"


async def test_revoking_an_invalid_token_answers_200_with_an_empty_body(harness):
    """RFC 7009 section 2.2: "The authorization server responds with HTTP status code 200 if the
    token has been revoked successfully or if the client submitted an invalid token"."""
    for who in ("payments-api", "reader-bot"):
        r = await harness.client.post("/v1/revoke", data={"token": "not-a-token"}, headers=harness.auth(who))
        assert r.status_code == 200 and r.content == b""


async def test_revoking_twice_answers_200_both_times(harness):
    """RFC 7009 section 2.2: revocation of a token already revoked is not an error (200 again)."""
    token = await _active_token(harness)
    for _ in range(2):
        r = await harness.client.post("/v1/revoke", data={"token": token}, headers=harness.auth("payments-api"))
        assert r.status_code == 200 and r.content == b""
    assert (await harness.introspect(token)).json() == {"active": False}


async def test_metadata_issuer_is_the_issuer_verbatim_and_the_document_is_unchanged(harness):
    """RFC 8414 section 3.2: "The "issuer" value returned MUST be identical to the authorization
    server's issuer identifier"; every endpoint is built on it, and the whole document is pinned."""
    r = await harness.client.get("/.well-known/oauth-authorization-server")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == orjson.dumps({
        "issuer": ISSUER,
        "jwks_uri": f"{ISSUER}/.well-known/jwks.json",
        "introspection_endpoint": f"{ISSUER}/v1/introspect",
        "revocation_endpoint": f"{ISSUER}/v1/revoke",
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA"],
        "authorization_details_types_supported": ["agent_escalation"],
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
        "dpop_bound_access_tokens_required": harness.settings.require_dpop,
        "grant_types_supported": ["urn:jitgate:params:grant-type:escalation"],
        "response_types_supported": [],
        "service_documentation": f"{ISSUER}/openapi.json",
    })
