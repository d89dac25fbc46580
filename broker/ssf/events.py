"""Security Event Tokens (RFC 8417) as SSF 1.0 and CAEP 1.0 profile them, and the transmitter
configuration metadata (SSF 1.0 section 7.1)."""

from __future__ import annotations

import hashlib
from typing import Any

from ..config import Settings

SPEC_VERSION = "1_0"
DELIVERY_PUSH = "urn:ietf:rfc:8935"
DELIVERY_POLL = "urn:ietf:rfc:8936"
CAEP_SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
SSF_VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
SSF_STREAM_UPDATED = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"
# The events a stream may carry besides verification and stream-updated (always allowed).
EVENTS_SUPPORTED = (CAEP_SESSION_REVOKED,)
SET_TYP = "secevent+jwt"

# How a grant's end maps onto CAEP's initiating_entity (CAEP 1.0 section 2: admin, user,
# policy, system): the agent ending its own task is the "user" of the session.
_SYSTEM_ACTORS = ("registry", "scheduler", "system")


def transmitter_metadata(settings: Settings) -> dict:
    """SSF 1.0 section 7.1: the document at ``/.well-known/ssf-configuration``.

    ``issuer`` is REQUIRED and "MUST be identical to the iss claim value in Security Event
    Tokens issued from this Transmitter", so it is ``JITGATE_ISSUER`` verbatim (the tokens'
    ``iss`` too); ``jwks_uri`` "MUST be specified if the Transmitter intends to generate signed
    JWTs". Claims with zero elements MUST be omitted (none here is empty). Every endpoint is
    built on the issuer, so an https issuer gives https endpoints as the section requires.
    """
    iss = settings.issuer
    return {
        "spec_version": SPEC_VERSION,
        "issuer": iss,
        "jwks_uri": f"{iss}/.well-known/jwks.json",
        "delivery_methods_supported": [DELIVERY_PUSH, DELIVERY_POLL],
        "configuration_endpoint": f"{iss}/ssf/stream",
        "status_endpoint": f"{iss}/ssf/status",
        "add_subject_endpoint": f"{iss}/ssf/subjects:add",
        "remove_subject_endpoint": f"{iss}/ssf/subjects:remove",
        "verification_endpoint": f"{iss}/ssf/verify",
        # Receivers authenticate as they do for introspection: a JWT assertion signed with the
        # resource server's registered key (RFC 7523 client authentication), as a bearer token.
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:7523"}],
        "default_subjects": "ALL",
    }


def jwt_id_subject(issuer: str, jti: str) -> dict:
    """The access token as a subject: the ``jwt_id`` format (SSF 1.0 section 3.5.1, in the
    RFC 9493 "Security Event Identifier Formats" registry): its ``iss`` and ``jti``."""
    return {"format": "jwt_id", "iss": issuer, "jti": jti}


def stream_subject(stream_id: str) -> dict:
    """A stream as the subject of verification and stream-updated events (SSF 1.0 sections
    8.1.4.1 and 8.1.5): RFC 9493 ``opaque`` whose ``id`` is the stream id."""
    return {"format": "opaque", "id": stream_id}


def set_id(source: str, stream_id: str) -> str:
    """A SET's ``jti``, the same each time one source entry is fanned out to one stream, so a
    repeat after a crash overwrites (and receivers de-duplicate) instead of doubling."""
    return hashlib.sha256(f"{source}\0{stream_id}".encode()).hexdigest()[:32]


def initiating_entity(closed_by: str, status: str) -> str:
    """CAEP ``initiating_entity`` for a grant ended by ``closed_by``."""
    if status == "completed" or closed_by.startswith("agent:"):
        return "user"
    if closed_by.startswith("policy") or closed_by.startswith("posture"):
        return "policy"
    if closed_by in _SYSTEM_ACTORS or closed_by.startswith("resource_server:"):
        return "system"
    return "admin"


def session_revoked_claims(*, issuer: str, audience: str, set_jti: str, iat: int, token_jti: str,
                           ended_ms: int, closed_by: str, status: str, reason: str) -> dict[str, Any]:
    """A CAEP 1.0 ``session-revoked`` SET (RFC 8417 section 2.2 claims ``iss``, ``iat``,
    ``jti``, ``aud``, ``events``; no ``sub`` claim: SSF 1.0 section 4.1.5 puts the subject in
    the top-level ``sub_id``, and the event repeats it as ``subject`` for receivers written to
    earlier drafts). ``event_timestamp`` is when the grant ended (seconds)."""
    subject = jwt_id_subject(issuer, token_jti)
    event: dict[str, Any] = {
        "subject": subject,
        "event_timestamp": ended_ms // 1000,
        "initiating_entity": initiating_entity(closed_by, status),
    }
    if reason:
        event["reason_admin"] = {"en": reason[:500]}
    return {
        "iss": issuer, "iat": iat, "jti": set_jti, "aud": audience,
        "sub_id": subject, "events": {CAEP_SESSION_REVOKED: event},
    }


def verification_claims(*, issuer: str, audience: str, set_jti: str, iat: int, stream_id: str,
                         state: str | None) -> dict[str, Any]:
    """SSF 1.0 section 8.1.4.1: the verification event, echoing the receiver's ``state``."""
    event = {"state": state} if state is not None else {}
    return {"iss": issuer, "iat": iat, "jti": set_jti, "aud": audience,
            "sub_id": stream_subject(stream_id), "events": {SSF_VERIFICATION: event}}
