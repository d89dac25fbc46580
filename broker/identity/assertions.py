"""Signed assertions and the replay guard: how an agent or a resource server proves who it is.

Every API call carries ``Authorization: Bearer <JWT>`` signed by the caller's registered
key: ``iss`` = ``sub`` = its id, ``aud`` = the broker, ``iat``, ``exp`` (at most five
minutes later) and a ``jti`` that may be used once. Verification runs on every call, so
the token is parsed once (``jose.split_jws`` with orjson) and its signature checked on
those same segments (``jose.verify_jws_signature``, no second parse by pyjwt), and the
only I/O is one ``SET NX`` in Redis that remembers the ``jti`` (or a DPoP proof's).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from ..clock import SystemClock
from ..errors import AgentDisabled, ConfigError, Unauthenticated, Unavailable
from ..jose import (
    HeaderNotAllowed,
    JoseError,
    MalformedJws,
    check_header,
    finite_number as _finite_number,
    split_jws,
    verify_dpop_proof,
    verify_jws_signature,
)
from .keys import _dummy_key
from .registry import Agent, Registry, ResourceServer

if TYPE_CHECKING:
    from .spiffe import SpiffeBundle

# No ':' so that "jti:{iss}:{jti}" cannot mean two things (ids may contain ':').
_JTI = re.compile(r"[\x21-\x39\x3b-\x7e]{1,128}")
_REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "exp", "jti")
# One answer for "no such agent" and "not signed by its key" (unknown id, wrong algorithm for
# the registered key, other kid, bad signature): a caller must not learn which ids exist.
BAD_ASSERTION = "invalid assertion: unknown issuer or a signature that does not verify"


# --- verification ---------------------------------------------------------------------


def _sole_audience(aud: Any, issuer: str) -> bool:
    """Whether ``aud`` names this broker and nothing else: the issuer as a plain string.

    RFC 7523bis (section 3) makes the authorization server's issuer identifier the sole
    audience value of a client assertion, to close the audience-injection attack where
    an assertion meant for another server also lists this one. A one-element list would
    be harmless, but no jitgate signer makes one, so only the string form is accepted.
    """
    return isinstance(aud, str) and aud == issuer


def _bearer_token(authorization: str | None) -> str:
    if not isinstance(authorization, str) or not authorization.strip():
        raise Unauthenticated("missing bearer assertion")
    parts = authorization.split(None, 1)
    if parts[0].lower() != "bearer":
        raise Unauthenticated("authorization must use the Bearer scheme")
    if len(parts) == 1 or not parts[1].strip():
        raise Unauthenticated("missing bearer assertion")
    return parts[1].strip()

class InvalidDpopProof(Unauthenticated):
    """A DPoP proof (RFC 9449) that is missing, malformed, for another request, or replayed."""

    code, title = "invalid-dpop-proof", "Invalid DPoP proof"


class AssertionVerifier:
    """Checks agent (and resource server) assertions; each ``jti`` is accepted once."""

    def __init__(
        self,
        registry: Registry,
        line: Any,
        prefix: str,
        *,
        audience: str,
        clock: Any = SystemClock(),  # stateless, so one shared default is fine
        max_lifetime_s: int = 300,
        leeway_s: int = 30,
        spiffe: "SpiffeBundle | None" = None,
        dpop_max_age_s: int = 60,
    ) -> None:
        if not isinstance(audience, str) or not audience:
            raise ConfigError("the assertion audience (the broker's issuer URL) must be set")
        if max_lifetime_s <= 0 or leeway_s < 0:
            raise ConfigError("max_lifetime_s must be positive and leeway_s not negative")
        self._registry = registry
        self._line = line  # a RedisLine: the jti check is on every request's way
        self._jti_prefix = f"{prefix}jti:"
        self._audience = audience
        self._clock = clock
        self._max_lifetime = max_lifetime_s
        self._leeway = leeway_s
        self._spiffe = spiffe
        self._dpop_prefix = f"{prefix}dpop:"
        self._dpop_max_age = dpop_max_age_s

    async def verify_agent(self, authorization: str | None) -> tuple[Agent, dict]:
        """The agent that signed the bearer assertion (or presented a JWT-SVID of the trusted
        SPIFFE domain) and its verified claims; Unauthenticated otherwise."""
        if self._spiffe is not None:
            token = _bearer_token(authorization)
            svid = self._spiffe.claims_if_svid(token)
            if svid is not None:
                iss = svid.get("iss")
                keyed = self._registry.agent(iss) if isinstance(iss, str) and iss == svid.get("sub") else None
                if keyed is None or keyed.public_jwk is None:
                    return self._spiffe.verify(token, self._registry, self._audience, self._clock.now())
        agent, claims = await self._verify(authorization, self._agent_or_disabled)
        if agent.disabled:
            raise AgentDisabled(f"agent {agent.id} is disabled in the agents file; its grants were revoked")
        return agent, claims

    def _agent_or_disabled(self, agent_id: str) -> Agent | None:
        # A disabled agent still proves who it is (its signature is checked as usual), so the
        # refusal it gets names the reason instead of looking like an unknown id.
        return self._registry.agent(agent_id) or self._registry.disabled_agent(agent_id)

    async def verify_dpop(self, proof: str | None, *, method: str, url: str) -> str:
        """The RFC 7638 thumbprint (``jkt``) of the key that signed a valid DPoP proof for
        this request; each proof is accepted once. Unauthenticated otherwise."""
        if not isinstance(proof, str) or not proof.strip():
            raise InvalidDpopProof("missing DPoP proof")
        now = self._clock.now()
        try:
            checked = verify_dpop_proof(proof.strip(), method=method, url=url, now=now,
                                        max_age_s=self._dpop_max_age, leeway_s=self._leeway)
        except JoseError as exc:
            raise InvalidDpopProof(str(exc)) from None
        # Remembered for as long as the proof would still pass the iat window, plus leeway.
        ttl_ms = max(1, math.ceil((checked.iat + self._dpop_max_age + self._leeway - now) * 1000))
        try:
            fresh = await self._line.execute("SET", f"{self._dpop_prefix}{checked.jkt}:{checked.jti}", "1", "NX", "PX", ttl_ms)
        except RedisError:
            raise Unavailable("replay protection unavailable") from None
        if not fresh:
            raise InvalidDpopProof("DPoP proof replayed (jti already used)")
        return checked.jkt

    async def verify_resource_server(self, authorization: str | None) -> tuple[ResourceServer, dict]:
        """The resource server that signed the bearer assertion and its claims; Unauthenticated otherwise."""
        return await self._verify(authorization, self._registry.resource_server)

    async def _verify(self, authorization: str | None, lookup: Callable[[str], Any]) -> tuple[Any, dict]:
        token = _bearer_token(authorization)
        try:
            # The claims are trusted only once the signature below checks out.
            header, claims = split_jws(token, "assertion", orjson.loads)
            alg = check_header(header)
        except MalformedJws:
            raise Unauthenticated("malformed assertion") from None
        except HeaderNotAllowed as exc:
            raise Unauthenticated(str(exc)) from None
        iss = claims.get("iss")
        if iss is None:
            raise Unauthenticated("assertion lacks the 'iss' claim")
        principal = lookup(iss) if isinstance(iss, str) else None
        # Unknown, keyless (SVID-only), other algorithm, other kid, bad signature: the same
        # status, code and detail, and (for an unknown id) a signature check against a dummy
        # key all the same, so neither the answer nor its timing says whether the id exists.
        known = (principal is not None and principal.public_jwk is not None and alg == principal.alg
                 and ("kid" not in header or header["kid"] == principal.kid))
        key = principal._key if known else _dummy_key(alg)
        if not verify_jws_signature(key, alg, token) or not known:
            raise Unauthenticated(BAD_ASSERTION)

        ttl_ms = self._check_claims(claims, principal.id)
        key = f"{self._jti_prefix}{principal.id}:{claims['jti']}"
        try:
            fresh = await self._line.execute("SET", key, "1", "NX", "PX", ttl_ms)
        except RedisError:
            raise Unavailable("replay protection unavailable") from None
        if not fresh:
            raise Unauthenticated("assertion replayed")
        return principal, claims

    def _check_claims(self, claims: dict, principal_id: str) -> int:
        """Raise Unauthenticated for any bad claim; else the time (ms) the jti must be remembered."""
        for name in _REQUIRED_CLAIMS:
            if name not in claims:
                raise Unauthenticated(f"assertion lacks the {name!r} claim")
        if claims["sub"] != principal_id:
            raise Unauthenticated("sub must equal iss")
        if not _sole_audience(claims["aud"], self._audience):
            raise Unauthenticated("audience does not match this broker")
        iat, exp = claims["iat"], claims["exp"]
        if not _finite_number(iat) or not _finite_number(exp):
            raise Unauthenticated("iat and exp must be numbers")
        if exp <= iat:
            raise Unauthenticated("assertion expires before it is issued")
        if exp - iat > self._max_lifetime:
            raise Unauthenticated(f"assertion lifetime exceeds {self._max_lifetime} s")
        now = self._clock.now()
        if iat > now + self._leeway:
            raise Unauthenticated("assertion issued in the future")
        if now >= exp + self._leeway:
            raise Unauthenticated("assertion expired")
        if "nbf" in claims:
            nbf = claims["nbf"]
            if not _finite_number(nbf) or nbf > now + self._leeway:
                raise Unauthenticated("assertion not yet valid")
        jti = claims["jti"]
        if not isinstance(jti, str) or not _JTI.fullmatch(jti):
            raise Unauthenticated("jti must be 1 to 128 printable characters without ':'")
        # Relative to the injected clock (not PXAT against Redis's clock): the jti outlives the
        # last moment this verifier would accept the assertion, plus one leeway for other
        # replicas whose clocks run behind.
        return max(1, math.ceil((exp + 2 * self._leeway - now) * 1000))

