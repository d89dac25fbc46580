"""JOSE pieces the broker and the agent client share: keys and thumbprints, the one JWS
header check every verifier makes (:func:`check_header`), agent assertions, DPoP proofs
(RFC 9449) and delegation links.

Pure on purpose: this module imports only pyjwt, cryptography, ``broker.errors`` and
``broker.filemodes``, so ``broker.client`` can use it in an environment that has nothing
else of the broker's dependencies. The broker-side checks that need Redis or the registry
(jti replay, who is registered) live in ``broker/identity/``; here is only what a JWS and a
clock can tell.

Every check raises a :class:`JoseError` (a ``ValueError``) whose subclass says what kind
of check failed and whose message says which, in words that know nothing of agents,
approvers or the broker: callers translate it to their own error at their boundary
(``Unauthenticated``, ``InvalidToken``, ``ConfigError``). The one exception is
:func:`read_private_key`, a file's refusal, which is ``broker.filemodes``'s ConfigError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .errors import ConfigError  # only read_private_key's, a file's refusal (see the module docstring)
from .filemodes import check_private

# JWK members that only a private (or symmetric) key has: RFC 7518 sections 6.2.2, 6.3.2, 6.4.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
PUBLIC_ONLY = "must be a public key"
# (kty, crv) -> (JWS alg, coordinate members); nothing else is accepted.
KINDS = {("OKP", "Ed25519"): ("EdDSA", ("x",)), ("EC", "P-256"): ("ES256", ("x", "y"))}
ALLOWED_ALGS = frozenset({"EdDSA", "ES256"})
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n"), "oct": ("k", "kty")}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
MAX_JWS_CHARS = 8192
# The signature segment may be empty so that ``alg: none`` is refused by name, not as "malformed".
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")
_JTI = re.compile(r"[\x21-\x7e]{1,128}")

DPOP_TYP = "dpop+jwt"
DELEGATION_TYP = "jitgate-delegation+jwt"


class JoseError(ValueError):
    """A JWS or key that does not pass a check; the message says which, in a short sentence."""


class MalformedJws(JoseError):
    """Not a compact JWS whose header and payload are JSON objects."""


class HeaderNotAllowed(JoseError):
    """A JWS header no jitgate verifier accepts (see :func:`check_header`)."""


class KidNotString(HeaderNotAllowed):
    """A header ``kid`` that is not a string, so it names no key."""


class UnusableKey(JoseError):
    """A key that is not an Ed25519 or P-256 key of the kind asked for."""


class PrivateKeyMaterial(UnusableKey):
    """A JWK carrying private members where only a public key belongs."""


# --- encoding -------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: object) -> bytes:
    """Strict base64url without padding (RFC 7515 section 2); JoseError otherwise."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise JoseError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JoseError("not base64url") from None


def split_jws(token: Any, what: str = "token", loads: Callable[[bytes], Any] = json.loads) -> tuple[dict, dict]:
    """The (header, claims) of a compact JWS of at most ``MAX_JWS_CHARS``, unverified;
    MalformedJws when it is not one. ``loads`` parses each segment's JSON (a faster parser
    on a hot path; it must raise ValueError for what it cannot read)."""
    match = _COMPACT.fullmatch(token) if isinstance(token, str) and len(token) <= MAX_JWS_CHARS else None
    if match is None:
        raise MalformedJws(f"the {what} is not a compact JWS")
    try:
        # UnicodeDecodeError and JSONDecodeError (also orjson's) are ValueErrors.
        header = loads(base64.urlsafe_b64decode(match[1] + "=" * (-len(match[1]) % 4)))
        claims = loads(base64.urlsafe_b64decode(match[2] + "=" * (-len(match[2]) % 4)))
    except (binascii.Error, ValueError):
        raise MalformedJws(f"the {what} is not a compact JWS") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise MalformedJws(f"the {what} is not a compact JWS")
    return header, claims


def check_header(header: dict, algs: Collection[str] = ALLOWED_ALGS) -> str:
    """The ``alg`` of a JWS header that passes the checks every jitgate verifier makes, in
    this order; HeaderNotAllowed naming the first that fails:

    * ``alg`` is a string in ``algs`` (ES256 and EdDSA unless the caller widens it; never
      ``none``, never an HMAC);
    * no ``crit`` (RFC 7515 section 4.1.11: a recipient must refuse critical extensions it
      does not implement, and jitgate implements none) and no ``b64`` (RFC 7797 unencoded
      payloads, which no jitgate signer uses);
    * ``kid``, when present, is a string (a list or object would be looked up, not refused):
      KidNotString.
    """
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algs:
        raise HeaderNotAllowed("algorithm not allowed")
    if "crit" in header or "b64" in header:
        raise HeaderNotAllowed("unsupported critical header")
    if not isinstance(header.get("kid", ""), str):
        raise KidNotString("kid must be a string")
    return alg


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def verify_jws_signature(key: Any, alg: str, token: str) -> bool:
    """True when the compact JWS ``token`` carries ``key``'s ``alg`` signature over its
    first two segments (RFC 7515 section 5.2); False for any other token or signature.

    The one check an already-parsed token still needs, without pyjwt parsing it again
    (half the cost of a verification). Only the two algorithms jitgate accepts, each
    only with its own key type: ``EdDSA`` (Ed25519, RFC 8037) and ``ES256`` (P-256,
    the 64-byte R||S signature of RFC 7518 section 3.4).
    """
    match = _COMPACT.fullmatch(token) if isinstance(token, str) and len(token) <= MAX_JWS_CHARS else None
    if match is None:
        return False
    try:
        signature = unb64url(match[3])
    except ValueError:
        return False
    signed = f"{match[1]}.{match[2]}".encode("ascii")
    try:
        if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, signed)
            return True
        if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            if len(signature) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.verify(der, signed, _ECDSA_SHA256)
            return True
    except InvalidSignature:
        return False
    return False


def finite_number(value: Any) -> bool:
    """True for an int or float that is not a bool, NaN or infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- keys -----------------------------------------------------------------------------


def jwk_thumbprint(jwk: object) -> str:
    """The RFC 7638 thumbprint: base64url SHA-256 of the required members, sorted, no spaces.

    Raises UnusableKey when the key type is unknown or a required member is missing.
    """
    if not isinstance(jwk, dict):
        raise UnusableKey("unsupported key type for a thumbprint")
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None  # a list would be unhashable
    if members is None:
        raise UnusableKey("unsupported key type for a thumbprint")
    try:
        canonical = {name: jwk[name] for name in members}
    except KeyError as exc:
        raise UnusableKey(f"JWK lacks the {exc.args[0]!r} member") from None
    data = json.dumps(canonical, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url(hashlib.sha256(data.encode("utf-8")).digest())


def parse_public_jwk(jwk: Any) -> tuple[Any, str, str]:
    """(cryptography public key, kid, JWS alg) of a public Ed25519 or P-256 JWK; UnusableKey
    otherwise (PrivateKeyMaterial when it holds private members)."""
    if not isinstance(jwk, dict):
        raise UnusableKey("must be a JWK mapping")
    if PRIVATE_MEMBERS.intersection(jwk):
        raise PrivateKeyMaterial(PUBLIC_ONLY)
    kty, crv = jwk.get("kty"), jwk.get("crv")
    kind = KINDS.get((kty, crv)) if isinstance(kty, str) and isinstance(crv, str) else None  # lists are unhashable
    if kind is None:
        raise UnusableKey("must be an OKP/Ed25519 or EC/P-256 public key")
    alg, coordinates = kind
    raw = {}
    for name in coordinates:
        try:
            raw[name] = unb64url(jwk.get(name))
        except JoseError:
            raise UnusableKey(f"{name!r} must be base64url") from None
        if len(raw[name]) != 32:
            raise UnusableKey(f"{name!r} must encode 32 bytes")
    if "alg" in jwk and jwk["alg"] != alg:
        raise UnusableKey(f"'alg' must be {alg} for this key type")
    if "use" in jwk and jwk["use"] != "sig":
        raise UnusableKey("'use' must be 'sig'")
    key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
    try:
        if alg == "EdDSA":
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw["x"])
        else:
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(raw["x"], "big"), int.from_bytes(raw["y"], "big"), ec.SECP256R1()
            )
            key = numbers.public_key()  # checks that the point is on the curve
    except ValueError:
        raise UnusableKey("is not a valid public key") from None
    if "kid" in jwk:
        kid = jwk["kid"]
        if not isinstance(kid, str) or not 1 <= len(kid) <= 256:
            raise UnusableKey("'kid' must be a string of 1 to 256 characters")
    else:
        kid = jwk_thumbprint(jwk)
    return key, kid, alg


def alg_of_private_key(private_key: Any) -> str:
    """``EdDSA`` for an Ed25519 key, ``ES256`` for P-256; UnusableKey for anything else."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, ec.SECP256R1):
        return "ES256"
    raise UnusableKey("keys must be Ed25519 or P-256")


def generate_key(kind: str = "Ed25519") -> tuple[bytes, dict]:
    """A new key pair: (PKCS#8 PEM private key, public JWK with its thumbprint as ``kid``);
    UnusableKey for a ``kind`` other than Ed25519 or P-256."""
    if kind == "Ed25519":
        private_key: Any = ed25519.Ed25519PrivateKey.generate()
    elif kind == "P-256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise UnusableKey(f"key kind must be 'Ed25519' or 'P-256', got {kind!r}")
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, public_jwk(private_key)


def load_private_key(pem: bytes | str) -> Any:
    """The Ed25519 or P-256 private key in an unencrypted PEM; UnusableKey for anything else."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise UnusableKey("not an unencrypted PEM private key") from None
    alg_of_private_key(private_key)
    return private_key


def read_private_key(path: Any) -> Any:
    """The private key in the PEM file at ``path``, refused (``broker.filemodes``'s ConfigError
    naming the file: the ``chmod`` when others may read it, as OpenSSH refuses an unprotected
    key; or why it cannot be read or used)."""
    check_private(path, "private key")
    try:
        with open(path, "rb") as handle:
            pem = handle.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the private key ({exc.strerror or exc})") from None
    try:
        return load_private_key(pem)
    except UnusableKey as exc:
        raise ConfigError(f"{path}: {exc}") from None


def public_jwk(private_key: Any) -> dict:
    """The public JWK of an Ed25519 or P-256 key (private or public), with ``kid`` = thumbprint."""
    key = private_key.public_key() if hasattr(private_key, "private_bytes") else private_key
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        numbers = key.public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
    else:
        raise UnusableKey("keys must be Ed25519 or P-256")
    jwk["kid"] = jwk_thumbprint(jwk)
    return jwk


def _key_object(private_key: Any) -> Any:
    return load_private_key(private_key) if isinstance(private_key, (bytes, str)) else private_key


def make_assertion(
    private_key: Any,
    *,
    agent_id: str,
    audience: str,
    now: float | None = None,
    lifetime_s: int = 60,
    jti: str | None = None,
    kid: str | None = None,
    extra: dict | None = None,
) -> str:
    """A signed assertion: ``iss`` = ``sub`` = agent_id, ``aud``, ``iat``, ``exp`` = iat + lifetime, ``jti``.

    ES256 for a P-256 key, EdDSA for Ed25519; ``kid`` goes in the header when given.
    ``extra`` claims are merged last (so they can override the standard ones).
    """
    private_key = _key_object(private_key)
    alg = alg_of_private_key(private_key)
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": agent_id,
        "sub": agent_id,
        "aud": audience,
        "iat": iat,
        "exp": iat + lifetime_s,
        "jti": secrets.token_urlsafe(16) if jti is None else jti,
    }
    if extra:
        claims.update(extra)
    return jwt.encode(claims, private_key, algorithm=alg, headers={"kid": kid} if kid else None)


# --- DPoP (RFC 9449) ------------------------------------------------------------------


def normalize_htu(url: str) -> str:
    """The URL a DPoP ``htu`` is compared on: scheme and host lower-cased, default port
    dropped, empty path as ``/``, no query and no fragment (RFC 9449 section 4.3)."""
    if not isinstance(url, str):
        raise JoseError("htu must be a string")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise JoseError("htu must be an absolute http(s) URL")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise JoseError("htu has a malformed port") from None
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


def access_token_hash(access_token: str) -> str:
    """The ``ath`` of an access token: base64url SHA-256 of its ASCII bytes."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def make_dpop_proof(
    private_key: Any,
    *,
    method: str,
    url: str,
    access_token: str | None = None,
    nonce: str | None = None,
    now: float | None = None,
    jti: str | None = None,
) -> str:
    """A DPoP proof for one HTTP request: header ``typ: dpop+jwt`` with the public ``jwk``;
    claims ``jti``, ``htm``, ``htu`` (no query or fragment), ``iat``, and ``ath`` when the
    proof accompanies an access token sent to a resource server."""
    private_key = _key_object(private_key)
    alg = alg_of_private_key(private_key)
    jwk = public_jwk(private_key)
    jwk.pop("kid", None)
    parts = urlsplit(url)
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16) if jti is None else jti,
        "htm": method.upper(),
        "htu": f"{parts.scheme}://{parts.netloc}{parts.path or '/'}",
        "iat": int(time.time() if now is None else now),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    return jwt.encode(claims, private_key, algorithm=alg, headers={"typ": DPOP_TYP, "jwk": jwk})


@dataclass(frozen=True)
class DpopProof:
    """A DPoP proof that passed every check that needs no memory: its key's thumbprint
    (``jkt``), its ``jti`` (the caller refuses a replay) and its claims."""

    jkt: str
    jti: str
    iat: float
    claims: dict


def verify_dpop_proof(
    proof: Any,
    *,
    method: str,
    url: str,
    now: float,
    access_token: str | None = None,
    max_age_s: float = 60,
    leeway_s: float = 30,
) -> DpopProof:
    """Check a DPoP proof against the request it came with (RFC 9449 section 4.3).

    Checks: one compact JWS; ``typ`` dpop+jwt; alg ES256 or EdDSA matching the public
    ``jwk`` in the header; the signature by that key; ``htm`` = ``method``; ``htu`` =
    ``url`` (normalised, query and fragment ignored); ``iat`` no older than ``max_age_s``
    and no further ahead than ``leeway_s``; a ``jti``; and, when ``access_token`` is
    given, ``ath`` = its hash. Replay of the ``jti`` is the caller's to check. Raises
    :class:`JoseError` naming the failed check.
    """
    header, claims = split_jws(proof, "DPoP proof")
    if header.get("typ") != DPOP_TYP:
        raise HeaderNotAllowed("DPoP proof typ must be dpop+jwt")
    try:
        alg = check_header(header)
    except HeaderNotAllowed as exc:
        raise HeaderNotAllowed(f"DPoP proof {exc}") from None
    jwk = header.get("jwk")
    try:
        key, _kid, key_alg = parse_public_jwk(jwk)
    except UnusableKey as exc:
        raise type(exc)(f"DPoP proof jwk {exc}") from None
    if key_alg != alg:
        raise JoseError("DPoP proof alg does not match its jwk")
    if not verify_jws_signature(key, alg, proof):
        raise JoseError("DPoP proof signature does not verify")
    for name in ("jti", "htm", "htu", "iat"):
        if name not in claims:
            raise JoseError(f"DPoP proof lacks the {name!r} claim")
    jti = claims["jti"]
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        raise JoseError("DPoP proof jti must be 1 to 128 printable characters")
    if claims["htm"] != method.upper():
        raise JoseError(f"DPoP proof htm {claims['htm']!r} does not match the request method {method.upper()}")
    try:
        htu_ok = normalize_htu(claims["htu"]) == normalize_htu(url)
    except JoseError:
        htu_ok = False
    if not htu_ok:
        raise JoseError("DPoP proof htu does not match the request URL")
    iat = claims["iat"]
    if not finite_number(iat):
        raise JoseError("DPoP proof iat must be a number")
    if iat > now + leeway_s:
        raise JoseError("DPoP proof iat is in the future")
    if iat < now - max_age_s:
        raise JoseError("DPoP proof is too old (iat)")
    if access_token is not None:
        if claims.get("ath") != access_token_hash(access_token):
            raise JoseError("DPoP proof ath does not match the access token")
    return DpopProof(jkt=jwk_thumbprint(jwk), jti=jti, iat=iat, claims=claims)


# --- delegation links -----------------------------------------------------------------


def make_delegation(
    private_key: Any,
    *,
    delegator: str,
    delegate: str,
    audience: str,
    actions: list[str],
    targets: list[str],
    ttl_s: int = 900,
    reason: str | None = None,
    now: float | None = None,
    jti: str | None = None,
) -> str:
    """One signed delegation link: ``delegator`` lets ``delegate`` ask for ``actions`` on
    ``targets`` until ``iat + ttl_s``, for ``reason``. Signed by the delegator's key with
    header ``typ: jitgate-delegation+jwt``; ``aud`` is the broker's issuer.

    Actions and targets are exact names or prefixes ending in ``*`` (``prod/*``, ``db.*``).
    """
    private_key = _key_object(private_key)
    alg = alg_of_private_key(private_key)
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": delegator,
        "sub": delegate,
        "aud": audience,
        "iat": iat,
        "exp": iat + int(ttl_s),
        "jti": secrets.token_urlsafe(16) if jti is None else jti,
        "actions": list(actions),
        "targets": list(targets),
    }
    if reason:
        claims["reason"] = reason
    return jwt.encode(claims, private_key, algorithm=alg, headers={"typ": DELEGATION_TYP})


def pattern_covers(outer: str, inner: str) -> bool:
    """Whether every name ``inner`` matches is matched by ``outer`` (``*`` only at the end)."""
    if outer.endswith("*"):
        return inner.startswith(outer[:-1])
    return not inner.endswith("*") and inner == outer


def uncovered(outer: list[str], inner: list[str]) -> str | None:
    """The first entry of ``inner`` that no entry of ``outer`` covers, or None."""
    for name in inner:
        if not any(pattern_covers(o, name) for o in outer):
            return name
    return None
