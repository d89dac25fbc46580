"""The OAuth answers a resource server reads: RFC 7662 introspection, RFC 7009 revocation
and RFC 8414 authorization-server metadata.

Each function is the whole of its RFC's logic here; ``api.py``'s routes only parse the
request, authenticate the caller (a registered resource server, or for revocation also
an agent) and render what these return. The grant itself changes state only through
:meth:`Lifecycle.revoke`, so revocation is one more compare-and-set with its audit entry.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .config import Settings
from .errors import BrokerError, Conflict, Forbidden, InvalidRequest
from .identity import ResourceServer
from .audit import event
from .model import ACTIVE, iso
from . import redecide

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

log = logging.getLogger("jitgate.oauth")

# The claims an active token's introspection answer repeats (RFC 7662 section 2.2 names
# most of them; ``authorization_details``, ``act``, ``cnf`` and ``approval`` are the token's own).
_INTROSPECTED = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope",
                 "authorization_details", "act", "cnf", "approval")


def token_param(form: dict[str, str]) -> str:
    """The ``token`` parameter of an introspection or revocation request.

    RFC 7662 section 2.1 and RFC 7009 section 2.1: ``token`` is REQUIRED; a request
    without it (or with it empty) is InvalidRequest.
    """
    token = form.get("token", "")
    if not token:
        raise InvalidRequest("'token' is required")
    return token


# --- RFC 7662 token introspection --------------------------------------------------------


async def introspect(life: Lifecycle, token: str, *, server: ResourceServer | None = None) -> dict:
    """RFC 7662: the token's claims if it is active now, else exactly ``{"active": false}``.

    Section 2.2: ``active`` is REQUIRED in every answer, and "If the introspection call
    is properly authorized but the token is not active, does not exist on this server, or
    the protected resource is not allowed to introspect this particular token, then the
    authorization server MUST return an introspection response with the "active" field
    set to "false"" - with nothing else, since the server "SHOULD NOT include any
    additional information about an inactive token, including why the token is inactive".

    Active means: signed by one of the broker's keys, for this issuer, unexpired, and its
    grant still ``active`` in Redis with this token's ``jti`` - and, when the posture or the
    policies changed since the grant was last decided, still permitted by them now. With ``server`` (the
    resource server asking), a token not meant for one of its audiences is answered as
    inactive too (section 4): a server learns only about the tokens it could be presented
    with.
    """
    inactive = {"active": False}
    try:
        claims = await life.keyring.verify(token, issuer=life.settings.issuer)
    except BrokerError:
        return inactive
    if server is not None and not server.serves(claims.get("aud")):
        log.warning("resource server %s asked about a token for %r, outside its audiences %s; "
                    "answered inactive (list the audience in its 'audiences' in the agents file)",
                    server.id, claims.get("aud"), list(server.audiences or (server.id,)))
        return inactive
    rid = (claims.get("approval") or {}).get("request_id")
    if not isinstance(rid, str):
        return inactive
    sub = claims.get("sub")
    if life.registry is not None and isinstance(sub, str) and life.registry.disabled_agent(sub) is not None:
        return inactive  # disabled in the agents file: inactive at once, before the reload revokes its grant
    try:
        state = await life.store.grant_check(rid)  # a few fields and the epoch, not the whole request
    except BrokerError:
        raise
    except Exception:  # noqa: BLE001 - a malformed id or field behind a validly signed token: inactive
        return inactive
    now = life.clock.now()
    if state is None:
        return inactive
    status, jti, exp, stamped, break_glass, epoch = state
    if status != ACTIVE or jti != claims.get("jti") or exp is None or now >= exp:
        return inactive
    # The posture or the policies changed since this grant was last decided (issue 16,
    # item 1): decide it again now; a refused grant is revoked and its token inactive.
    if stamped != epoch and not break_glass and not await redecide.recheck_grant(life, rid):
        return inactive
    await record_use(life, rid, claims, server, now, exp)
    out = {"active": True, "token_type": "Bearer" if "cnf" not in claims else "DPoP"}
    for k in _INTROSPECTED:
        if k in claims:
            out[k] = claims[k]
    return out


async def record_use(life: Lifecycle, rid: str, claims: dict, server: ResourceServer | None, now: float,
                     exp: float) -> None:
    """Token use (issue 18, item 6): every active answer is counted in the token's use hash
    (first use, count, last use, per resource server; one script call, no audit entry), and a
    resource server's first use of a token writes one ``token.used`` audit entry. When that
    entry cannot be written the mark is undone and the error raised (503): nothing is answered
    that the log does not hold."""
    jti = str(claims.get("jti"))
    who = server.id if server is not None else "-"
    keep_ms = int((max(exp - now, 0) + life.settings.retention_s) * 1000)
    if not await life.store.token_used(rid, jti, who, int(now * 1000), keep_ms):
        return
    try:
        await life.store.append([event("token.used", str(iso(now)), rid, {"resource_server": who}, jti=jti,
                                       audience=claims.get("aud"))])
    except BrokerError:
        try:
            await life.store.forget_first_use(rid, jti, who)
        except BrokerError:
            log.exception("could not undo the first-use mark of %s on %s", who, jti)
        raise


# --- RFC 7009 token revocation -----------------------------------------------------------


async def revoke(life: Lifecycle, token: str, *, by: str, server: ResourceServer | None = None) -> None:
    """RFC 7009: revoke the grant behind a token; unknown or invalid tokens are ignored.

    Section 2.2: "The authorization server responds with HTTP status code 200 if the token
    has been revoked successfully or if the client submitted an invalid token" - so an
    unverifiable token, one whose grant is gone or was re-minted, and one already closed
    all return quietly (revocation is idempotent), and the route answers 200.

    Section 2.1: the server "verifies whether the token was issued to the client making
    the revocation request" and refuses it otherwise: an agent (``by`` = ``agent:<id>``)
    may revoke only its own tokens, and a resource server (``server``) only the tokens
    meant for one of its audiences; Forbidden otherwise. The token's expiry is not
    checked (``leeway``): the grant behind an expired token is still closed if it is open.
    """
    try:
        claims = await life.keyring.verify(token, issuer=life.settings.issuer, leeway=10**9)
    except BrokerError:
        return
    if server is not None and not server.serves(claims.get("aud")):
        raise Forbidden(f"resource server '{server.id}' may revoke only tokens meant for its audiences")
    rid = (claims.get("approval") or {}).get("request_id")
    if not isinstance(rid, str):
        return
    req = await life.store.load(rid)
    if req is None or req.grant_jti != claims.get("jti"):
        return
    if by.startswith("agent:") and by != f"agent:{req.agent}":
        raise Forbidden("an agent may revoke only its own tokens")
    try:
        await life.revoke(rid, by=by, reason="token revoked (RFC 7009)", channel="api")
    except Conflict:
        return  # already closed: revocation is idempotent


# --- RFC 8414 authorization server metadata ----------------------------------------------


def metadata(settings: Settings) -> dict:
    """RFC 8414: the document served at ``/.well-known/oauth-authorization-server``.

    Section 2: ``issuer`` is REQUIRED, and section 3.2: "The "issuer" value returned MUST
    be identical to the authorization server's issuer identifier value into which the
    well-known URI string was inserted to create the URL used to retrieve the metadata" -
    so it is ``JITGATE_ISSUER`` verbatim, the same string every token's ``iss`` carries,
    and every endpoint URL is built on it. ``response_types_supported`` is REQUIRED too:
    empty, since the broker has no authorization endpoint.
    """
    iss = settings.issuer
    return {
        "issuer": iss,
        "jwks_uri": f"{iss}/.well-known/jwks.json",
        "introspection_endpoint": f"{iss}/v1/introspect",
        "revocation_endpoint": f"{iss}/v1/revoke",
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA"],
        "authorization_details_types_supported": ["agent_escalation"],
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
        # Every token this broker issues is DPoP-bound (JITGATE_REQUIRE_DPOP): resource servers
        # (broker.client's helpers read this) refuse a Bearer token without being told.
        "dpop_bound_access_tokens_required": settings.require_dpop,
        "grant_types_supported": ["urn:jitgate:params:grant-type:escalation"],
        "response_types_supported": [],
        "service_documentation": f"{iss}/openapi.json",
    }
