"""For resource servers: verify a jitgate token offline (JWKS) with its DPoP proof, or
ask the broker (RFC 7662 introspection).

Offline verification proves the token is genuine, unexpired, meant for you and - when
it is DPoP-bound - presented by the agent holding the key. Only introspection also knows
whether the grant was completed or revoked a moment ago; pick by how much a few minutes
of a revoked token would cost.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from typing import Any

import httpx

from ..jose import (
    HeaderNotAllowed,
    JoseError,
    KidNotString,
    UnusableKey,
    check_header,
    finite_number,
    make_assertion,
    parse_public_jwk,
    split_jws,
    verify_dpop_proof,
    verify_jws_signature,
)
from .credentials import load_key
from .errors import InvalidToken, TransportError, api_error
from .signals import SECEVENT_TYPE, RevokedTokens, SetRefused, Subscription, revoked_jti, verify_set


class _AnyAudience:
    """The type of :data:`ANY_AUDIENCE`."""

    def __repr__(self) -> str:
        return "ANY_AUDIENCE"


# The explicit opt-out of the audience check, for a gateway that fronts every target and
# routes on ``aud`` itself. Spelled out in the call so that skipping the check is never
# what happens by leaving an argument out.
ANY_AUDIENCE = _AnyAudience()


def _audience_arg(audience: Any, name: str = "audience") -> "str | _AnyAudience":
    """``audience`` if it is a target name or ANY_AUDIENCE; TypeError otherwise (a setup mistake)."""
    if audience is ANY_AUDIENCE or (isinstance(audience, str) and audience):
        return audience
    raise TypeError(f"{name} is required: this server's name at the broker (the tokens' aud), "
                    "or ANY_AUDIENCE to accept tokens for every target")


class ReplayCache:
    """Remembers DPoP proof ids until they could no longer pass the ``iat`` window.

    In memory and bounded (oldest forgotten first): enough for one resource-server
    process. Several replicas behind one name should share a store (e.g. Redis SET NX)
    by passing their own object with the same ``seen(key, until)`` method.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def seen(self, key: str, until: float, now: float | None = None) -> bool:
        """True if ``key`` was recorded and is still live; otherwise record it until ``until``."""
        now = time.time() if now is None else now
        with self._lock:
            while self._entries:
                oldest_key, oldest_until = next(iter(self._entries.items()))
                if oldest_until > now and len(self._entries) < self._max:
                    break
                self._entries.popitem(last=False)
            live = self._entries.get(key)
            if live is not None and live > now:
                return True
            self._entries[key] = until
            self._entries.move_to_end(key)
            return False


_DEFAULT_CACHE = ReplayCache()


def _keys_by_kid(jwks: Any) -> dict[str, dict]:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        raise InvalidToken("the JWKS has no 'keys' list")
    return {k["kid"]: k for k in keys if isinstance(k, dict) and isinstance(k.get("kid"), str)}


def parse_authorization(header: str | None) -> tuple[str, str]:
    """(scheme, token) of an ``Authorization: DPoP <token>`` or ``Bearer <token>`` header."""
    parts = (header or "").split(None, 1)
    if len(parts) != 2 or parts[0].lower() not in ("dpop", "bearer"):
        raise InvalidToken("Authorization must be 'DPoP <token>' or 'Bearer <token>'")
    return parts[0].lower(), parts[1].strip()


def verify(
    token: str,
    jwks: dict,
    *,
    audience: "str | _AnyAudience",
    dpop_proof: str | None = None,
    method: str | None = None,
    url: str | None = None,
    issuer: str | None = None,
    scheme: str | None = None,
    require_dpop: bool = False,
    replay_cache: ReplayCache | None = None,
    now: float | None = None,
    leeway_s: float = 5,
    max_proof_age_s: float = 60,
    nonce: str | Collection[str] | None = None,
) -> dict:
    """Verify a jitgate access token and, for a DPoP-bound one, its proof; return the claims.

    The token: ``typ`` at+jwt, ES256/EdDSA signature by the JWKS key named by ``kid``,
    ``exp``/``nbf``/``iat`` (``leeway_s``), ``iss`` when given, and ``aud`` = ``audience``
    (required: this server's name at the broker, or :data:`ANY_AUDIENCE` to skip the
    check, spelled out; a missing or empty one is a TypeError). A token with
    ``cnf.jkt`` needs ``dpop_proof``, ``method`` and ``url`` (the request's, as the
    client addressed it): ``typ`` dpop+jwt, its signature, ``htm``, ``htu``, an ``iat``
    no older than ``max_proof_age_s``, an unseen ``jti`` (``replay_cache``), ``ath`` =
    this token's hash, and a key whose thumbprint is ``cnf.jkt``. ``scheme`` (from
    :func:`parse_authorization`) must then be DPoP. ``require_dpop`` refuses unbound
    tokens. ``nonce`` (a value or the values accepted now) makes the proof carry a nonce
    this server handed out (RFC 9449 section 9). Raises :class:`InvalidToken` naming the
    failed check.
    """
    audience = _audience_arg(audience)
    now = time.time() if now is None else now
    try:
        header, claims = split_jws(token, "access token")
    except JoseError as exc:
        raise InvalidToken(str(exc)) from None
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ("at+jwt", "application/at+jwt"):
        raise InvalidToken("the token typ must be at+jwt")
    # A header is attacker-chosen JSON: a list or object where a string belongs is refused
    # by name, never looked up (which would raise TypeError, not InvalidToken).
    no_key = "the token is signed with a key not in the JWKS"
    try:
        alg = check_header(header)
    except KidNotString:
        raise InvalidToken(no_key) from None
    except HeaderNotAllowed as exc:
        raise InvalidToken(f"the token header is refused: {exc}") from None
    kid = header.get("kid")  # a string or absent now
    jwk = _keys_by_kid(jwks).get(kid) if kid is not None else None
    if jwk is None:
        raise InvalidToken(no_key)
    try:
        key, _kid, key_alg = parse_public_jwk(jwk)
    except UnusableKey as exc:
        raise InvalidToken(f"the JWKS key is unusable: {exc}") from None
    if key_alg != alg:
        raise InvalidToken("the token alg does not match its key")
    if not verify_jws_signature(key, alg, token):
        raise InvalidToken("the token signature does not verify")
    _check_claims(claims, now, leeway_s, issuer, audience)

    return check_binding(claims, token, dpop_proof=dpop_proof, method=method, url=url, scheme=scheme,
                         require_dpop=require_dpop, replay_cache=replay_cache, now=now, leeway_s=leeway_s,
                         max_proof_age_s=max_proof_age_s, nonce=nonce)


def check_binding(
    claims: dict,
    token: str,
    *,
    dpop_proof: str | None,
    method: str | None,
    url: str | None,
    scheme: str | None = None,
    require_dpop: bool = False,
    replay_cache: ReplayCache | None = None,
    now: float | None = None,
    leeway_s: float = 5,
    max_proof_age_s: float = 60,
    nonce: str | Collection[str] | None = None,
) -> dict:
    """The DPoP half of :func:`verify`, for claims known good by other means (introspection):
    a token with ``cnf.jkt`` needs a valid, unreplayed proof for this request and this token,
    signed by the bound key, under the DPoP scheme; ``require_dpop`` refuses unbound tokens.
    Returns ``claims``; raises :class:`InvalidToken` naming the failed check."""
    now = time.time() if now is None else now
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if jkt is None:
        if require_dpop:
            raise InvalidToken("the token is not DPoP-bound")
        return claims
    if scheme is not None and scheme.lower() != "dpop":
        raise InvalidToken("a DPoP-bound token must be presented with the DPoP scheme")
    if not dpop_proof:
        raise InvalidToken("the token is DPoP-bound: a DPoP proof is required")
    if not method or not url:
        raise InvalidToken("the request method and URL are needed to check the DPoP proof")
    try:
        proof = verify_dpop_proof(dpop_proof, method=method, url=url, now=now, access_token=token,
                                  max_age_s=max_proof_age_s, leeway_s=max(leeway_s, 5))
    except JoseError as exc:
        raise InvalidToken(str(exc), "invalid_dpop_proof") from None
    if proof.jkt != jkt:
        raise InvalidToken("the DPoP proof is signed by a different key than the token is bound to")
    if nonce is not None:
        accepted = {nonce} if isinstance(nonce, str) else set(nonce)
        sent = proof.claims.get("nonce")
        if not isinstance(sent, str) or sent not in accepted:
            raise InvalidToken("the DPoP proof must carry the nonce this server provides", "use_dpop_nonce")
    cache = _DEFAULT_CACHE if replay_cache is None else replay_cache
    if cache.seen(f"{proof.jkt}:{proof.jti}", proof.iat + max_proof_age_s + leeway_s, now):
        raise InvalidToken("DPoP proof replayed (jti already used)", "invalid_dpop_proof")
    return claims


def _check_claims(claims: dict, now: float, leeway_s: float, issuer: str | None, audience: "str | _AnyAudience") -> None:
    for name in ("iss", "sub", "aud", "exp", "iat", "jti"):
        if name not in claims:
            raise InvalidToken(f"the token lacks the {name!r} claim")
    for name in ("exp", "iat", "nbf"):
        if name in claims and not finite_number(claims[name]):
            raise InvalidToken(f"the token {name} must be a number")
    if now >= claims["exp"] + leeway_s:
        raise InvalidToken("the token has expired")
    if claims["iat"] > now + leeway_s or claims.get("nbf", 0) > now + leeway_s:
        raise InvalidToken("the token is not valid yet")
    if issuer is not None and claims["iss"] != issuer.rstrip("/"):
        raise InvalidToken("the token was issued by another issuer")
    if not isinstance(audience, _AnyAudience) and not _audience_matches(claims["aud"], audience):
        raise InvalidToken("the token is meant for another audience")


def _audience_matches(aud: Any, audience: str) -> bool:
    return aud == audience or (isinstance(aud, list) and audience in aud)


METADATA_PATH = "/.well-known/oauth-authorization-server"
# How long the broker's word on DPoP (its metadata) is trusted before it is asked again.
METADATA_MAX_AGE_S = 300.0


def _json_document(resp: httpx.Response) -> dict:
    try:
        body = resp.json() if resp.status_code == 200 else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise api_error(resp.status_code if resp.status_code != 200 else 502, None)
    return body


def _requires_dpop(metadata: dict) -> bool:
    """Whether the broker's metadata says every token it issues is DPoP-bound."""
    return metadata.get("dpop_bound_access_tokens_required") is True


class TokenVerifier:
    """:func:`verify` with the broker's JWKS fetched (and re-fetched for an unknown
    ``kid``, at most every ``refresh_s``) and a replay cache of its own.

    ``TokenVerifier("http://broker:8080", audience="prod/payments-api")`` then
    ``verifier.verify_request(headers["authorization"], headers.get("dpop"), method, url)``.
    ``audience`` is required (or :data:`ANY_AUDIENCE`, spelled out). Unbound tokens are
    refused with ``require_dpop``, and also - without being told - when the broker's
    metadata says it requires DPoP (``dpop_bound_access_tokens_required``, read with the
    JWKS and at least every five minutes).

    With :meth:`subscribe` (a poll stream) or :meth:`receive_push` (a push endpoint) it also
    hears the broker's Shared Signals and refuses a token whose grant was revoked or completed,
    before its ``exp`` (docs/ssf.md).
    """

    def __init__(self, broker_url: str, *, audience: "str | _AnyAudience", issuer: str | None = None,
                 require_dpop: bool = False, refresh_s: float = 30, timeout_s: float = 5) -> None:
        self.broker_url = broker_url.rstrip("/")
        self.issuer = (issuer or self.broker_url).rstrip("/")
        self.audience = _audience_arg(audience)
        self.require_dpop = require_dpop
        self.broker_requires_dpop = False  # from the broker's metadata, at each fetch
        self.replay_cache = ReplayCache()
        self._jwks: dict = {"keys": []}
        self._fetched_at = float("-inf")
        self._refresh_s = refresh_s
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self.revoked = RevokedTokens()
        self.subscription: Subscription | None = None
        self._max_staleness_s: float | None = None

    def _fetch(self) -> None:
        try:
            jwks = _json_document(httpx.get(f"{self.broker_url}/.well-known/jwks.json", timeout=self._timeout))
            metadata = _json_document(httpx.get(f"{self.broker_url}{METADATA_PATH}", timeout=self._timeout))
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot fetch the broker's JWKS and metadata: {exc}") from exc
        self._jwks, self.broker_requires_dpop = jwks, _requires_dpop(metadata)
        self._fetched_at = time.monotonic()

    def _jwks_for(self, token: str) -> dict:
        with self._lock:
            age = time.monotonic() - self._fetched_at
            if age >= METADATA_MAX_AGE_S:
                self._fetch()  # the first call, and the broker's DPoP setting kept current
                return self._jwks
            try:
                kid = split_jws(token, "access token")[0].get("kid")
            except JoseError:
                return self._jwks  # verify() names the problem
            if not isinstance(kid, str):
                return self._jwks  # no fetch for a kid that cannot name a key; verify() refuses it
            known = kid in _keys_by_kid(self._jwks)
            if not known and age >= self._refresh_s:
                self._fetch()
            return self._jwks

    def verify(self, token: str, *, dpop_proof: str | None = None, method: str | None = None,
               url: str | None = None, scheme: str | None = None, nonce: str | Collection[str] | None = None) -> dict:
        """The token's claims after :func:`verify`; fetches the JWKS when needed. A token the
        broker signalled as revoked is refused; so is every token while a subscription made
        with ``max_staleness_s`` has not heard from the broker for that long (fail closed)."""
        sub = self.subscription
        if sub is not None and self._max_staleness_s is not None and not sub.healthy(self._max_staleness_s):
            raise InvalidToken(f"no word from the broker's revocation stream for over {self._max_staleness_s:g} s "
                               f"({sub.last_error or 'no poll answered yet'}); refusing until it answers")
        jwks = self._jwks_for(token)
        claims = verify(token, jwks, dpop_proof=dpop_proof, method=method, url=url,
                        issuer=self.issuer, audience=self.audience, scheme=scheme,
                        require_dpop=self.require_dpop or self.broker_requires_dpop,
                        replay_cache=self.replay_cache, nonce=nonce)
        if claims["jti"] in self.revoked:
            raise InvalidToken("the token was revoked (the broker's Shared Signals said so before its exp)")
        return claims

    # --- Shared Signals (SSF 1.0, CAEP 1.0): docs/ssf.md ---------------------------------------

    def subscribe(self, server_id: str, private_key: Any, *, stream_id: str | None = None,
                  max_staleness_s: float | None = None) -> Subscription:
        """Open a poll stream at the broker as resource server ``server_id`` (registered with the
        public half of ``private_key``, as for introspection) and follow it in a daemon thread.
        ``stream_id`` reuses a stream made before. With ``max_staleness_s``, :meth:`verify`
        refuses every token while no poll has succeeded for that long."""
        if self.subscription is not None:
            raise RuntimeError("this verifier already follows a stream; close() it first")
        self.subscription = Subscription(self, server_id, private_key, stream_id=stream_id).open()
        self._max_staleness_s = max_staleness_s
        return self.subscription

    def handle_set(self, token: str, server_id: str, subscription: Subscription | None = None) -> dict:
        """Verify one SET meant for ``server_id`` and act on it: a ``session-revoked`` token's
        ``jti`` is refused from now on. Returns the SET's claims; raises :class:`SetRefused`."""
        claims = verify_set(token, self._jwks_for(token), issuer=self.issuer, audience=server_id)
        jti = revoked_jti(claims, self.issuer)
        if jti is not None:
            self.revoked.add(jti)
        state = (claims["events"].get("https://schemas.openid.net/secevent/ssf/event-type/verification") or {})
        if subscription is not None and isinstance(state, dict) and isinstance(state.get("state"), str):
            subscription.verification_states.append(state["state"])
        return claims

    def receive_push(self, server_id: str, body: bytes, content_type: str | None) -> tuple[int, dict | None]:
        """The answer of a push endpoint (RFC 8935 section 2) for one pushed request: ``(202,
        None)`` once the SET is verified and acted on, or ``(400, {"err", "description"})``.
        Check the ``Authorization`` header you gave the broker as ``authorization_header``
        before calling this."""
        ctype = (content_type or "").split(";")[0].strip().lower()
        if ctype != SECEVENT_TYPE:
            return 400, {"err": "invalid_request", "description": f"the Content-Type must be {SECEVENT_TYPE}"}
        try:
            self.handle_set(body.decode("ascii").strip(), server_id)
        except UnicodeDecodeError:
            return 400, {"err": "invalid_request", "description": "the SET is not a compact JWS"}
        except SetRefused as exc:
            return 400, {"err": exc.error, "description": exc.reason}
        return 202, None

    def verify_request(self, authorization: str | None, dpop: str | None, method: str, url: str, *,
                       nonce: str | Collection[str] | None = None) -> dict:
        """Verify the ``Authorization`` and ``DPoP`` headers of one incoming request."""
        scheme, token = parse_authorization(authorization)
        return self.verify(token, dpop_proof=dpop, method=method, url=url, scheme=scheme, nonce=nonce)


class Introspector:
    """A registered resource server asking the broker whether a token is active now
    (RFC 7662), authenticated by an assertion signed with its own key.

    ``audience`` is the broker's issuer URL (the assertions' ``aud``; default ``broker_url``).
    ``target`` (required) is this server's name at the broker (the tokens' ``aud``) that
    :meth:`verify_request` checks, or :data:`ANY_AUDIENCE` to skip that check, spelled out;
    ``require_dpop`` refuses unbound tokens; so does the broker's metadata saying it requires
    DPoP (``dpop_bound_access_tokens_required``, asked at least every five minutes).
    """

    def __init__(self, broker_url: str, server_id: str, private_key: Any, *, target: "str | _AnyAudience",
                 audience: str | None = None, require_dpop: bool = False, timeout_s: float = 5) -> None:
        self.broker_url = broker_url.rstrip("/")
        self.server_id = server_id
        self.audience = (audience or self.broker_url).rstrip("/")
        self.target = _audience_arg(target, "target")
        self.require_dpop = require_dpop
        self.broker_requires_dpop = False
        self._metadata_at = float("-inf")
        self.replay_cache = ReplayCache()
        self._key = load_key(private_key)
        self._timeout = timeout_s

    def _metadata_due(self) -> bool:
        return time.monotonic() - self._metadata_at >= METADATA_MAX_AGE_S

    def _take_metadata(self, resp: httpx.Response) -> None:
        self.broker_requires_dpop = _requires_dpop(_json_document(resp))
        self._metadata_at = time.monotonic()

    def verify_request(self, authorization: str | None, dpop: str | None, method: str, url: str, *,
                       nonce: str | Collection[str] | None = None) -> dict:
        """The claims of the token in an incoming request's ``Authorization`` header once the
        broker calls it active (and, with ``target``, meant for this server), with the DPoP
        proof checked as :func:`verify` does. Raises :class:`InvalidToken` otherwise, and
        ApiError / TransportError when the broker refuses this server or cannot be reached."""
        scheme, token = parse_authorization(authorization)
        if self._metadata_due():
            try:
                self._take_metadata(httpx.get(f"{self.broker_url}{METADATA_PATH}", timeout=self._timeout))
            except httpx.HTTPError as exc:
                raise TransportError(f"cannot fetch the broker's metadata: {exc}") from exc
        return self._checked(self.introspect(token), token, scheme, dpop, method, url, nonce)

    async def averify_request(self, authorization: str | None, dpop: str | None, method: str, url: str, *,
                              nonce: str | Collection[str] | None = None) -> dict:
        """:meth:`verify_request` for async servers."""
        scheme, token = parse_authorization(authorization)
        if self._metadata_due():
            try:
                async with httpx.AsyncClient(timeout=self._timeout) as http:
                    self._take_metadata(await http.get(f"{self.broker_url}{METADATA_PATH}"))
            except httpx.HTTPError as exc:
                raise TransportError(f"cannot fetch the broker's metadata: {exc}") from exc
        return self._checked(await self.aintrospect(token), token, scheme, dpop, method, url, nonce)

    def _checked(self, info: dict, token: str, scheme: str, dpop: str | None, method: str, url: str,
                 nonce: str | Collection[str] | None) -> dict:
        if info.get("active") is not True:
            raise InvalidToken("the token is not active (expired, completed or revoked)")
        if not isinstance(self.target, _AnyAudience) and not _audience_matches(info.get("aud"), self.target):
            raise InvalidToken("the token is meant for another audience")
        return check_binding(info, token, dpop_proof=dpop, method=method, url=url, scheme=scheme,
                             require_dpop=self.require_dpop or self.broker_requires_dpop,
                             replay_cache=self.replay_cache, nonce=nonce)

    def _headers(self) -> dict:
        """A fresh assertion of this resource server for one introspection call."""
        return {"Authorization": "Bearer " + make_assertion(self._key, agent_id=self.server_id, audience=self.audience)}

    def introspect(self, token: str) -> dict:
        """``{"active": false}``, or the active token's claims with ``"active": true``."""
        try:
            resp = httpx.post(f"{self.broker_url}/v1/introspect", data={"token": token}, headers=self._headers(),
                              timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise TransportError(f"introspection failed: {exc}") from exc
        return _introspection(resp)

    async def aintrospect(self, token: str) -> dict:
        """:meth:`introspect` for async servers."""
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            try:
                resp = await http.post(f"{self.broker_url}/v1/introspect", data={"token": token}, headers=self._headers())
            except httpx.HTTPError as exc:
                raise TransportError(f"introspection failed: {exc}") from exc
        return _introspection(resp)


def _introspection(resp: httpx.Response) -> dict:
    """The introspection answer, or the ApiError for a refusal (whatever its body is)."""
    try:
        body = resp.json() if resp.content else None
    except ValueError:
        body = None
    if resp.status_code != 200 or not isinstance(body, dict):
        raise api_error(resp.status_code if resp.status_code != 200 else 502, body)
    return body
