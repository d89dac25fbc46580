"""SPIFFE JWT-SVIDs: the second accepted form of agent credential.

A JWT-SVID is verified against the trust bundle of one SPIFFE trust domain (a JWKS file,
re-read when it changes) and names an agent by its SPIFFE id, which must be listed (and
not denied) in the agents file.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt
from jwt.api_jws import PyJWS

from ..errors import ConfigError, Unauthenticated
from ..filemodes import check_not_writable
from ..watched import Watched
from ..jose import (
    PRIVATE_MEMBERS as _PRIVATE_MEMBERS,
    HeaderNotAllowed,
    JoseError,
    check_header,
    finite_number as _finite_number,
    split_jws,
)
from .registry import (
    _TRUST_DOMAIN,
    SPIFFE_SCHEME,
    Agent,
    Registry,
    spiffe_id_problem,
    trust_domain_of,
)

log = logging.getLogger("jitgate.identity")

BAD_SVID = "JWT-SVID not accepted: unregistered or denied SPIFFE id, or a signature that does not verify"
# The JWT-SVID specification allows these; HS* and none never.
_SVID_ALGS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
_EC_ALG_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
# JWT-SVIDs are bearer credentials reused until they expire (SPIFFE intends it), so their
# remaining lifetime is bounded instead of their jti being single-use.
SVID_MAX_REMAINING_S = 3600
_BUNDLE_CHECK_S = 2.0



class SpiffeBundle:
    """The JWT-SVID keys of one SPIFFE trust domain, from a bundle file (a JWKS as SPIRE
    writes it: keys with ``use: jwt-svid`` and a ``kid``; ``x509-svid`` keys are ignored).

    The file is re-read when it changes (checked every two seconds at most), so keys can
    rotate; a broken new version is logged and the previous keys stay in force.
    """

    def __init__(self, path: Path, trust_domain: str) -> None:
        if _TRUST_DOMAIN.fullmatch(trust_domain or "") is None:
            raise ConfigError(f"JITGATE_SPIFFE_TRUST_DOMAIN {trust_domain!r} is not a SPIFFE trust domain name")
        self.path = Path(path)
        self.trust_domain = trust_domain
        self._jws = PyJWS()
        self._checked_at = time.monotonic()
        # A broken new version is logged once; its next edit is tried again.
        self._watched = Watched(lambda: (self.path,), retry_broken=False)
        self._keys = self._watched.load(self._load)

    @classmethod
    def from_settings(cls, settings: Any) -> "SpiffeBundle | None":
        """The bundle the settings name, or None when SPIFFE is not configured."""
        path = getattr(settings, "spiffe_bundle", None)
        if not path:
            return None
        return cls(path, settings.spiffe_trust_domain)

    def _load(self) -> dict[str, tuple[Any, str]]:
        where = f"JITGATE_SPIFFE_BUNDLE {self.path}"
        check_not_writable(self.path, "SPIFFE trust bundle")
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: not a readable JSON bundle ({exc.__class__.__name__})") from None
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list):
            raise ConfigError(f"{where}: must be a JWKS with a 'keys' list")
        parsed: dict[str, tuple[Any, str]] = {}
        for index, jwk in enumerate(keys):
            if not isinstance(jwk, dict):
                raise ConfigError(f"{where}: keys[{index}] must be a JWK object")
            if jwk.get("use", "jwt-svid") != "jwt-svid":
                continue  # x509-svid roots are for TLS, not for JWT-SVIDs
            kid = jwk.get("kid")
            if not isinstance(kid, str) or not kid:
                raise ConfigError(f"{where}: keys[{index}] is a jwt-svid key without a 'kid'")
            if _PRIVATE_MEMBERS.intersection(jwk):
                raise ConfigError(f"{where}: keys[{index}] holds private key material")
            try:
                pyjwk = jwt.PyJWK({k: v for k, v in jwk.items() if k != "use"})
            except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
                raise ConfigError(f"{where}: keys[{index}] (kid {kid!r}) is not a usable key: {exc}") from None
            if pyjwk.key_type == "RSA":
                if pyjwk.key.key_size < 2048:
                    raise ConfigError(f"{where}: keys[{index}] (kid {kid!r}) is an RSA key under 2048 bits")
                family = "RSA"
            elif pyjwk.key_type == "EC" and pyjwk.key.curve.name in _EC_ALG_BY_CURVE:
                family = _EC_ALG_BY_CURVE[pyjwk.key.curve.name]
            else:
                raise ConfigError(f"{where}: keys[{index}] (kid {kid!r}) must be an RSA or EC (P-256/384/521) key")
            parsed[kid] = (pyjwk.key, family)
        if not parsed:
            raise ConfigError(f"{where}: holds no jwt-svid keys")
        return parsed

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < _BUNDLE_CHECK_S:
            return
        self._checked_at = now
        try:
            keys = self._watched.reload(self._load)
            if keys is not None:
                self._keys = keys
        except ConfigError as exc:
            log.error("SPIFFE bundle reload refused, keeping the previous keys: %s", exc.detail)

    @staticmethod
    def claims_if_svid(token: str) -> dict | None:
        """The unverified claims when ``token`` looks like a JWT-SVID (``sub`` is a spiffe:// id)."""
        try:
            _header, claims = split_jws(token)
        except JoseError:
            return None
        sub = claims.get("sub")
        return claims if isinstance(sub, str) and sub.startswith(SPIFFE_SCHEME) else None

    def verify(self, token: str, registry: Registry, audience: str, now: float, leeway_s: int = 30) -> tuple[Agent, dict]:
        """The registered agent a JWT-SVID names (its SPIFFE id), after checking signature,
        trust domain, audience and times; Unauthenticated otherwise.

        The SPIFFE id must be listed in the agents file (which gives it its owner and team)
        and not under ``denied_spiffe_ids``: a valid SVID of an unlisted workload is refused.
        """
        self._refresh()
        try:
            header, claims = split_jws(token)
        except JoseError:
            raise Unauthenticated("malformed JWT-SVID") from None
        try:
            alg = check_header(header, _SVID_ALGS)
        except HeaderNotAllowed as exc:
            raise Unauthenticated(f"JWT-SVID {exc}") from None
        sub = claims.get("sub")
        problem = spiffe_id_problem(sub)
        if problem:
            raise Unauthenticated(f"JWT-SVID sub {problem}")
        domain = trust_domain_of(sub)
        if domain != self.trust_domain:
            raise Unauthenticated(f"JWT-SVID is from trust domain '{domain}', not the trusted '{self.trust_domain}'")
        kid = header.get("kid")
        if kid is None and len(self._keys) == 1:
            kid = next(iter(self._keys))
        entry = self._keys.get(kid) if isinstance(kid, str) else None
        if entry is None:
            raise Unauthenticated(BAD_SVID)
        key, family = entry
        if not (alg == family or (family == "RSA" and alg[:2] in ("RS", "PS"))):
            raise Unauthenticated(BAD_SVID)
        try:
            self._jws.decode_complete(token, key, algorithms=[alg])
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthenticated(BAD_SVID) from None
        aud = claims.get("aud")
        if not (aud == audience or (isinstance(aud, list) and audience in aud)):
            raise Unauthenticated("JWT-SVID audience does not include this broker")
        exp = claims.get("exp")
        if not _finite_number(exp):
            raise Unauthenticated("JWT-SVID lacks a numeric 'exp'")
        if now >= exp + leeway_s:
            raise Unauthenticated("JWT-SVID expired")
        if exp - now > SVID_MAX_REMAINING_S:
            raise Unauthenticated(f"JWT-SVID lives longer than {SVID_MAX_REMAINING_S} s")
        for name in ("iat", "nbf"):
            if name in claims and (not _finite_number(claims[name]) or claims[name] > now + leeway_s):
                raise Unauthenticated(f"JWT-SVID {name} is in the future")
        # Only a registered, undenied SPIFFE id is an agent: a workload the trust domain vouches
        # for but the agents file does not list (or lists under denied_spiffe_ids) is refused,
        # in the same words as a bad signature, so the answer does not say which ids are listed.
        agent = registry.agent(sub)
        if agent is None:
            log.warning("refused a valid JWT-SVID for %s: %s", sub,
                        "denied in the agents file" if registry.is_denied(sub) else "not registered in the agents file")
            raise Unauthenticated(BAD_SVID)
        return agent, claims

