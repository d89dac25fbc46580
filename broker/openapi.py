"""The OpenAPI 3.1 document served at ``/openapi.json`` (written by hand: the API is small
and the contract in docs/api.md is firm, so the document is reviewed like code)."""

from __future__ import annotations

from functools import lru_cache

from . import model

_PROBLEM = {"$ref": "#/components/responses/Problem"}


def _op(summary: str, responses: dict, *, body: dict | None = None, params: list | None = None, auth: bool = True) -> dict:
    op: dict = {"summary": summary, "responses": {**responses, "4XX": _PROBLEM}}
    if body:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    if auth:
        op["security"] = [{"agentAssertion": []}]
    return op


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9]{8,64}$"}}
_ESC = {"description": "the escalation", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Escalation"}}}}


def _rs(op: dict) -> dict:
    return {**op, "security": [{"resourceServerAssertion": []}]}


def _ssf_paths() -> dict:
    """OpenID Shared Signals 1.0 (docs/ssf.md): stream management and RFC 8936 polling, for
    registered resource servers."""
    obj = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    json_ok = {"content": {"application/json": {"schema": {}}}}
    sid_q = {"name": "stream_id", "in": "query", "schema": {"type": "string"}}
    return {
        "/.well-known/ssf-configuration": {"get": _op("SSF 1.0 transmitter configuration metadata",
                                                      {"200": {"description": "metadata", **json_ok}}, auth=False)},
        "/ssf/stream": {
            "post": _rs(_op("Create a stream (no delivery: poll)", {"201": {"description": "the stream", **json_ok}},
                            body=obj)),
            "get": _rs(_op("Read a stream, or list the caller's streams", {"200": {"description": "stream(s)", **json_ok}},
                           params=[sid_q])),
            "patch": _rs(_op("Update a stream", {"200": {"description": "the stream", **json_ok}}, body=obj)),
            "put": _rs(_op("Replace a stream", {"200": {"description": "the stream", **json_ok}}, body=obj)),
            "delete": _rs(_op("Delete a stream", {"204": {"description": "deleted"}}, params=[{**sid_q, "required": True}])),
        },
        "/ssf/status": {
            "get": _rs(_op("A stream's status", {"200": {"description": "status", **json_ok}},
                           params=[{**sid_q, "required": True}])),
            "post": _rs(_op("Set a stream's status", {"200": {"description": "status", **json_ok}}, body=obj)),
        },
        "/ssf/subjects:add": {"post": _rs(_op("Add a subject (accepted; subjects do not filter)",
                                              {"200": {"description": "added"}}, body=obj))},
        "/ssf/subjects:remove": {"post": _rs(_op("Remove a subject", {"204": {"description": "removed"}}, body=obj))},
        "/ssf/verify": {"post": _rs(_op("Ask for a verification event", {"204": {"description": "queued"}}, body=obj))},
        "/ssf/poll/{stream_id}": {"post": _rs(_op(
            "RFC 8936 poll: acknowledge, then receive SETs", {"200": {"description": "sets", **json_ok}},
            body={"required": False, "content": {"application/json": {"schema": {"type": "object"}}}},
            params=[{"name": "stream_id", "in": "path", "required": True, "schema": {"type": "string"}}]))},
    }


@lru_cache(maxsize=4)
def openapi_document(issuer: str) -> dict:
    """The document, with the issuer as server URL."""
    evidence = {
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "title"],
        "properties": {
            "kind": {"type": "string", "maxLength": 32, "examples": ["log", "diff", "ticket", "metric"]},
            "title": {"type": "string", "maxLength": model.MAX_EVIDENCE_TITLE},
            "url": {"type": "string", "format": "uri", "maxLength": model.MAX_URL},
            "excerpt": {"type": "string", "maxLength": model.MAX_EVIDENCE_EXCERPT},
        },
    }
    proposal = {
        "type": "object",
        "additionalProperties": False,
        "required": ["action", "target", "justification", "duration_s"],
        "properties": {
            "action": {"type": "string", "maxLength": model.MAX_ACTION, "pattern": "^[A-Za-z0-9][A-Za-z0-9._:/-]*$"},
            # Required text must hold a non-blank character: the API refuses "" and "  " (400).
            "target": {"type": "string", "minLength": 1, "pattern": r"\S", "maxLength": model.MAX_NAME},
            "justification": {"type": "string", "minLength": 1, "pattern": r"\S", "maxLength": model.MAX_JUSTIFICATION},
            "evidence": {"type": "array", "maxItems": model.MAX_EVIDENCE_ITEMS, "items": evidence},
            "duration_s": {"type": "integer", "minimum": 1, "maximum": model.MAX_DURATION_S},
            "tool": {"type": "string", "maxLength": model.MAX_NAME, "description":
                     "the tool the agent will use; one of the target's `tools` when the targets file lists them "
                     "(else 400 not-allowed-for-target); policy reads it as context.tool"},
            "dataset": {"type": "string", "maxLength": model.MAX_NAME, "description":
                        "the dataset it will touch; one of the target's `datasets` when listed; context.dataset"},
            "arguments": {"type": "object", "description":
                          f"what the agent will pass to its tool: a JSON object of at most {model.MAX_ARGUMENTS_BYTES} "
                          f"bytes (compact JSON) nesting at most {model.MAX_ARGUMENTS_DEPTH} deep (else 400 "
                          "arguments-too-large); no null, no keys starting with '__', whole numbers within 64 bits, "
                          "other numbers with at most 4 decimal places (else 400 invalid-arguments). Policy reads it "
                          "as the record context.arguments; it is in the proposal hash and the token"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "ticket": {"type": "string", "maxLength": model.MAX_NAME},
            "delegation": {"type": "array", "maxItems": model.MAX_DELEGATION_LINKS, "description":
                           "signed delegation links (compact JWS, typ jitgate-delegation+jwt), root first; "
                           "the last one delegates to the requesting agent",
                           "items": {"type": "string", "maxLength": model.MAX_DELEGATION_CHARS}},
        },
    }
    outcome = {
        "type": "object",
        "additionalProperties": False,
        "required": ["status"],
        "description": "the resulting action the agent reports at completion",
        "properties": {
            "status": {"enum": list(model.OUTCOME_STATUSES)},
            "summary": {"type": "string", "maxLength": model.MAX_OUTCOME_SUMMARY,
                        "description": "what was done; no control characters but newline and tab"},
            "evidence": {"type": "array", "maxItems": model.MAX_OUTCOME_EVIDENCE, "items": {
                "type": "string", "format": "uri", "pattern": "^https://\\S+$", "maxLength": model.MAX_OUTCOME_URL}},
        },
    }
    complete_body = {
        "required": False,
        "description": "optional: an empty body completes without an outcome; anything malformed is refused "
                       "(400 problem+json) and nothing changes",
        "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"outcome": {"oneOf": [{"$ref": "#/components/schemas/Outcome"}, {"type": "null"}]}}}}},
    }
    escalation = {
        "type": "object",
        "required": ["id", "status", "decision", "approvals", "proposal_sha256"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": list(model.STATES)},
            "agent": {"type": "string"},
            "proposal": {"$ref": "#/components/schemas/Proposal"},
            "proposal_sha256": {"type": "string"},
            "decision": {
                "type": "object",
                "properties": {
                    "outcome": {"enum": ["auto_grant", "require_approval", "deny"]},
                    "policies": {"type": "array", "items": {"type": "string"}},
                    "approvals_required": {"type": "integer"},
                    "approver_group": {"type": ["string", "null"]},
                    "max_duration_s": {"type": ["integer", "null"]},
                    "channel": {"type": ["string", "null"]},
                    "backup_group": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                    "approvals_from": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1},
                                       "description": "a mixed quorum (@approvals_from): group → approvals needed from "
                                                      "it, in the policy's order; absent when one group decides"},
                },
            },
            "approvals": {"type": "array", "items": {"type": "object", "properties": {
                "approver": {"type": "string"}, "channel": {"type": "string"}, "at": {"type": "string", "format": "date-time"},
                "group": {"type": "string", "description": "the group of a mixed quorum this approval counts for"}}}},
            "denial": {"type": ["object", "null"], "properties": {"by": {"type": "string"}, "reason": {"type": "string"}}},
            "linked_to": {"type": "object", "description": "the recent denial this proposal is linked to (alternate "
                          "paths): absent when not linked", "properties": {
                "request": {"type": "string"}, "by": {"type": "string"}, "reason": {"type": "string"},
                "at": {"type": "string", "format": "date-time"}, "action": {"type": "string"},
                "target": {"type": "string"}, "why": {"type": "string"}}},
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
            "created_at": {"type": "string", "format": "date-time"},
            "approved_duration_s": {"type": "integer"},
            "delegation_chain": {"type": "array", "description": "the verified delegation chain, root first", "items": {
                "type": "object", "properties": {
                    "link": {"type": "integer"}, "delegator": {"type": "string"}, "delegate": {"type": "string"},
                    "actions": {"type": "array", "items": {"type": "string"}},
                    "targets": {"type": "array", "items": {"type": "string"}},
                    "issued_at": {"type": "integer"}, "expires_at": {"type": "integer"},
                    "reason": {"type": "string"}, "jti": {"type": "string"}}}},
            "policy_set_hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$", "description":
                                "sha256 content hash of the policy set that decided the proposal (docs/audit.md, "
                                "policy versions); null for requests recorded before it existed"},
            "outcome": {"$ref": "#/components/schemas/Outcome", "description": "what the agent reported when it "
                        "completed; absent when it reported nothing"},
        },
    }
    form_token = {"content": {
        "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["token"], "properties": {
            "token": {"type": "string", "minLength": 1}, "token_type_hint": {"type": "string"}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "jitgate", "version": "1", "description": "Just-in-time privilege broker for AI agents."},
        "servers": [{"url": issuer}],
        "paths": {
            "/v1/escalations": {"post": _op(
                "Propose an escalation",
                {"201": _ESC, "200": {**_ESC, "description": "the request an earlier call with the same Idempotency-Key made"}},
                body={"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Proposal"}}}},
                params=[{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200}}],
            )},
            "/v1/escalations/{id}": {
                "get": _op("Status; with wait=N returns as soon as the state changes (N ≤ 60)", {"200": _ESC},
                           params=[_ID, {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 60}},
                                   {"name": "known", "in": "query", "description": "the status the caller last saw: "
                                    "a different one answers at once", "schema": {"enum": list(model.STATES)}}]),
                "delete": _op("Withdraw a pending request", {"200": _ESC}, params=[_ID]),
            },
            "/v1/escalations/{id}/token": {"post": _op("Collect the token (once, by the requesting agent)", {"200": {
                "description": "the task-scoped access token (RFC 9068)",
                "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "access_token": {"type": "string"}, "token_type": {"enum": ["Bearer", "DPoP"]},
                    "expires_in": {"type": "integer"}, "authorization_details": {"type": "array"}}}}}}}, params=[_ID, {
                "name": "DPoP", "in": "header", "schema": {"type": "string"},
                "description": "RFC 9449 proof (htm POST, htu this URL): the token is then bound to its key "
                               "(cnf.jkt) and token_type is DPoP; required when the broker sets JITGATE_REQUIRE_DPOP"}])},
            "/v1/escalations/{id}/complete": {"post": _op("Report the task done, optionally with its outcome; the "
                                                          "grant ends now", {"200": _ESC}, body=complete_body,
                                                          params=[_ID])},
            "/v1/introspect": {"post": {**_op("RFC 7662 token introspection (resource servers)", {"200": {"description": "introspection response"}}, body=form_token),
                                        "security": [{"resourceServerAssertion": []}]}},
            "/v1/revoke": {"post": {**_op("RFC 7009 token revocation", {"200": {"description": "revoked, or unknown"}}, body=form_token),
                                    "security": [{"resourceServerAssertion": []}, {"agentAssertion": []}]}},
            "/.well-known/jwks.json": {"get": _op("Public token signing keys", {"200": {"description": "JWK set"}}, auth=False)},
            "/.well-known/oauth-authorization-server": {"get": _op("RFC 8414 metadata", {"200": {"description": "metadata"}}, auth=False)},
            **_ssf_paths(),
            "/healthz": {"get": _op("Liveness", {"200": {"description": "alive"}}, auth=False)},
            "/readyz": {"get": _op("Readiness: each component ok or not ready (Redis must be reachable); details are "
                                   "logged, never shown", {"200": {"description": "ready"}}, auth=False)},
            "/metrics": {"get": {**_op("Prometheus metrics: Bearer JITGATE_METRICS_TOKEN when set; refused (403) "
                                       "unless JITGATE_METRICS_PUBLIC=1 when not", {"200": {"description": "metrics"}},
                                       auth=False), "security": [{"metricsToken": []}, {}]}},
        },
        "components": {
            "schemas": {"Proposal": proposal, "Evidence": evidence, "Escalation": escalation, "Outcome": outcome},
            "responses": {"Problem": {"description": "RFC 9457 problem", "content": {"application/problem+json": {"schema": {
                "type": "object", "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                                 "status": {"type": "integer"}, "detail": {"type": "string"}}}}}}},
            "securitySchemes": {
                "agentAssertion": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                   "description": "JWT signed by the agent's registered key: iss=sub=agent id, aud=issuer, exp ≤ iat+300, unique jti; "
                                                  "or, with JITGATE_SPIFFE_BUNDLE set, a SPIFFE JWT-SVID whose SPIFFE id is the agent id"},
                "resourceServerAssertion": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "metricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "the scraper's token, JITGATE_METRICS_TOKEN"},
            },
        },
    }
