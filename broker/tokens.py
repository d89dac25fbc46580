"""Token signing keys (rotation, JWKS) and the RFC 9068 access-token claims.

Keys live in Redis so every replica signs and verifies with the same set:

* hash ``{prefix}signing:keys``: field = kid, value = JSON record
  ``{kid, alg, created_at, retired_at, public_jwk, private_enc}``;
* string ``{prefix}signing:current``: the kid new tokens are signed with.

``private_enc`` is base64url(nonce || AES-256-GCM ciphertext) of the PKCS#8 DER private
key, with the kid as associated data. Every record, including those of retired keys, is
decrypted on load and its private key must match the kid (an RFC 7638 thumbprint of the
public key): whoever can write to Redis but lacks the key-encryption key cannot slip in a
verification key of their own.

Changes are compare-and-set Lua scripts. ``ensure`` and ``rotate`` touch both keys, so on
Redis Cluster the prefix must carry a hash tag (e.g. ``{jitgate}:``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .clock import SystemClock
from .errors import ConfigError, Unauthenticated
from .jose import KINDS, HeaderNotAllowed, JoseError, b64url, check_header, finite_number, public_jwk, unb64url

ALGORITHMS = ("ES256", "EdDSA")
# How long after a rotation a replica may still sign with the retired key: replicas that do
# not rotate re-read the keys every minute; five covers a missed refresh or two.
ROTATION_LAG_S = 300
_REQUIRED_CLAIMS = ["iss", "exp", "iat", "jti"]

# Create the first key unless another replica already did: one current key, whoever wins.
_ENSURE = """
local current = redis.call('GET', KEYS[2])
if current then return current end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
return ARGV[1]
"""

# Rotate only if the current key is still the one the caller saw; the new key and the
# retirement of the old one appear together or not at all.
_ROTATE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], ARGV[1], ARGV[4])
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

# Replace (or delete, when the new value is empty) one record if it is unchanged.
_REPLACE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _new_private_key(alg: str) -> Any:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


@dataclass(frozen=True, slots=True)
class _Key:
    """One loaded signing key: parsed record, key objects ready for pyjwt."""

    kid: str
    alg: str
    created_at: float
    retired_at: float | None
    public_jwk: dict  # with kid, alg, use
    private_key: Any
    public_key: Any
    record: dict
    raw: str  # the record exactly as stored (compare-and-set value)


class KeyRing:
    """Token signing keys, stored in Redis with the private part encrypted (AES-256-GCM with the key-encryption key from settings)."""

    def __init__(
        self,
        redis,
        prefix: str,
        kek: bytes,
        *,
        alg: str = "ES256",
        clock=SystemClock(),
        rotation_s: int = 86400,
        retain_s: int = 7 * 86400,
    ) -> None:
        if alg not in ALGORITHMS:
            raise ConfigError(f"JITGATE_SIGNING_ALG must be ES256 or EdDSA, got {alg!r}")
        if len(kek) != 32:
            raise ConfigError("JITGATE_KEY_ENCRYPTION_KEY must be 32 bytes (AES-256)")
        self._redis = redis
        self._keys_key = f"{prefix}signing:keys"
        self._current_key = f"{prefix}signing:current"
        self._aead = AESGCM(kek)
        self.alg = alg
        self._clock = clock
        self.rotation_s = rotation_s
        self.retain_s = retain_s
        self._keys: dict[str, _Key] = {}
        self._current: _Key | None = None
        self._ensure_script = redis.register_script(_ENSURE)
        self._rotate_script = redis.register_script(_ROTATE)
        self._replace_script = redis.register_script(_REPLACE)

    # -- loading -----------------------------------------------------------------

    async def ensure(self) -> None:
        """Load the keys; if there is no current key, create one (exactly one across replicas)."""
        await self.refresh()
        if self._current is not None:
            return
        kid, raw = self._new_record()
        await self._ensure_script(keys=[self._keys_key, self._current_key], args=[kid, raw])
        await self.refresh()

    async def refresh(self) -> None:
        """Reload the keys from Redis (one atomic snapshot); a record that does not decrypt refuses."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._current_key)
            pipe.hgetall(self._keys_key)
            current, records = await pipe.execute()
        keys: dict[str, _Key] = {}
        for field, value in records.items():
            kid, raw = _text(field), _text(value)
            cached = self._keys.get(kid)
            keys[kid] = cached if cached is not None and cached.raw == raw else self._load(kid, raw)
        current_key = None
        if current is not None:
            current_key = keys.get(_text(current))
            if current_key is None:
                raise ConfigError(f"{self._current_key} names signing key {_text(current)!r}, which is not stored")
        self._keys, self._current = keys, current_key

    def _load(self, kid: str, raw: str) -> _Key:
        try:
            record = json.loads(raw)
            alg, jwk, blob = record["alg"], record["public_jwk"], unb64url(record["private_enc"])
            created_at, retired_at = float(record["created_at"]), record.get("retired_at")
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"signing key {kid!r} in {self._keys_key} is malformed ({exc})") from None
        if alg not in ALGORITHMS or record.get("kid") != kid:
            raise ConfigError(f"signing key {kid!r} in {self._keys_key} is malformed")
        try:
            der = self._aead.decrypt(blob[:12], blob[12:], kid.encode())
        except (InvalidTag, ValueError):
            raise ConfigError(
                f"JITGATE_KEY_ENCRYPTION_KEY does not decrypt the signing keys in Redis (key {kid!r}); "
                "refusing to start rather than making a new key - restore the key that encrypted them"
            ) from None
        try:
            private_key = serialization.load_der_private_key(der, password=None)
        except ValueError:
            raise ConfigError(f"signing key {kid!r} does not hold a usable private key") from None
        public_key = private_key.public_key()
        try:
            public = public_jwk(public_key)  # kid = the RFC 7638 thumbprint
        except JoseError:
            raise ConfigError(f"signing key {kid!r} is not an ES256 or EdDSA key; refusing to use it") from None
        if KINDS[public["kty"], public["crv"]][0] != alg or public["kid"] != kid:
            raise ConfigError(f"signing key {kid!r} does not match its kid or alg; refusing to use it")
        if any(jwk.get(m) != v for m, v in public.items()):
            raise ConfigError(f"signing key {kid!r}: stored public_jwk does not match the private key")
        return _Key(
            kid=kid,
            alg=alg,
            created_at=created_at,
            retired_at=None if retired_at is None else float(retired_at),
            public_jwk={**public, "alg": alg, "use": "sig"},
            private_key=private_key,
            public_key=public_key,
            record=record,
            raw=raw,
        )

    def _new_record(self) -> tuple[str, str]:
        private_key = _new_private_key(self.alg)
        public = public_jwk(private_key)
        kid = public.pop("kid")
        der = private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        nonce = os.urandom(12)
        record = {
            "kid": kid,
            "alg": self.alg,
            "created_at": int(self._clock.now()),
            "retired_at": None,
            "public_jwk": {**public, "kid": kid, "alg": self.alg, "use": "sig"},
            "private_enc": b64url(nonce + self._aead.encrypt(nonce, der, kid.encode())),
        }
        return kid, json.dumps(record, separators=(",", ":"))

    # -- rotation ----------------------------------------------------------------

    async def rotate(self, *, force: bool = False) -> bool:
        """Make a new key current when the current one is older than ``rotation_s``, has another
        alg than configured, or ``force``; return whether this call rotated.

        Retired keys stay published until ``retain_s`` after retirement, then are deleted here.
        Compare-and-set: of several schedulers rotating at once, one rotates.
        """
        await self.refresh()
        if self._current is None:
            await self.ensure()
            return True
        now = self._clock.now()
        if await self._tidy(now):
            await self.refresh()
        current = self._current
        assert current is not None
        if not (force or current.alg != self.alg or now - current.created_at >= self.rotation_s):
            return False
        kid, raw = self._new_record()
        retired = json.dumps({**current.record, "retired_at": int(now)}, separators=(",", ":"))
        rotated = await self._rotate_script(
            keys=[self._keys_key, self._current_key], args=[current.kid, kid, raw, retired]
        )
        await self.refresh()
        return bool(rotated)

    async def _tidy(self, now: float) -> bool:
        """Delete keys retired more than ``retain_s`` ago; retire strays (non-current, never retired)."""
        changed = False
        for key in list(self._keys.values()):
            if key is self._current:
                continue
            if key.retired_at is None:
                # Only reachable when signing:current was lost and recreated: the old key
                # may still have live tokens, so it is retired now rather than dropped.
                new = json.dumps({**key.record, "retired_at": int(now)}, separators=(",", ":"))
            elif now - key.retired_at >= self.retain_s:
                new = ""
            else:
                continue
            changed |= bool(await self._replace_script(keys=[self._keys_key], args=[key.kid, key.raw, new]))
        return changed

    # -- publishing, signing, verifying ------------------------------------------

    def _published(self, key: _Key, now: float) -> bool:
        # A never-retired stray (see _tidy) may still have live tokens: published until retired.
        return key.retired_at is None or now - key.retired_at < self.retain_s

    def jwks(self) -> dict:
        """The JWK Set of the current and retained public keys (current first)."""
        now = self._clock.now()
        keys = [k for k in self._keys.values() if self._published(k, now)]
        keys.sort(key=lambda k: (k is not self._current, -k.created_at))
        return {"keys": [dict(k.public_jwk) for k in keys]}

    @property
    def current_kid(self) -> str:
        """The kid new tokens are signed with."""
        return self._current_or_refuse().kid

    def _current_or_refuse(self) -> _Key:
        if self._current is None:
            raise ConfigError("no token signing key is loaded: KeyRing.ensure() must run at start-up")
        return self._current

    def sign(self, claims: dict, *, typ: str = "at+jwt") -> str:
        """Sign ``claims`` with the current key; header ``{alg, kid, typ}``.

        A retired key stays published for ``retain_s``, so a token whose ``exp`` is further
        away than that (less the rotation lag) is refused with ConfigError rather than signed:
        every key is kept until the last token it signed has expired.
        """
        key = self._current_or_refuse()
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and exp - self._clock.now() + ROTATION_LAG_S > self.retain_s:
            raise ConfigError(f"a token living {int(exp - self._clock.now())} s would outlive its signing key, which "
                              f"is kept {self.retain_s} s after rotation; the key retention must cover the longest "
                              "grant (JITGATE_MAX_DURATION_S, JITGATE_BREAKGLASS_MAX_S)")
        return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid, "typ": typ})

    async def verify(
        self,
        token: str,
        *,
        audience: str | None = None,
        issuer: str,
        typ: str = "at+jwt",
        leeway: int = 0,
    ) -> dict:
        """Verify a token signed by this ring and return its claims, or raise :class:`Unauthenticated`.

        The header passes :func:`broker.jose.check_header` (ES256 or EdDSA, no ``crit`` or
        ``b64``); the key is the one named by the header ``kid`` (Redis is re-read once for an
        unknown kid), and the alg must be that key's. ``typ``, ``iss``, ``exp``, ``iat`` and ``jti``
        are required; times are checked against the ring's clock. ``audience=None`` skips
        the audience check (the broker reading its own tokens, e.g. for introspection).
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the token is not a well-formed JWT") from None
        kid, token_typ = header.get("kid"), header.get("typ")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the token has no kid")
        if not isinstance(token_typ, str) or token_typ.lower() not in (typ, "application/" + typ):
            raise Unauthenticated(f"the token typ must be {typ}")
        try:
            alg = check_header(header)
        except HeaderNotAllowed as exc:
            raise Unauthenticated(f"the token header is refused: {exc}") from None
        now = self._clock.now()
        key = self._keys.get(kid)
        if key is None or not self._published(key, now):
            await self.refresh()
            key = self._keys.get(kid)
            if key is None or not self._published(key, now):
                raise Unauthenticated("the token is signed with an unknown key")
        if alg != key.alg:
            raise Unauthenticated("the token alg does not match its key")
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=[key.alg],
                audience=audience,
                issuer=issuer,
                options={
                    # pyjwt reads the system clock; times are checked below against ours.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": audience is not None,
                    "require": _REQUIRED_CLAIMS,
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token is not valid: {exc}") from None
        _check_times(claims, now, leeway)
        return claims


def key_retention_s(longest_token_s: int) -> int:
    """How long a retired signing key stays published: twice the longest token lifetime (at
    least an hour), which covers a token signed just before the rotation, or by a replica that
    has not yet seen it (``ROTATION_LAG_S``)."""
    return max(2 * longest_token_s, longest_token_s + ROTATION_LAG_S, 3600)


def _number(claims: dict, name: str) -> float:
    value = claims[name]
    # NaN compares false with everything, so a NaN exp would never expire.
    if not finite_number(value):
        raise Unauthenticated(f"the token {name} must be a number")
    return value


def _check_times(claims: dict, now: float, leeway: int) -> None:
    if _number(claims, "exp") <= now - leeway:
        raise Unauthenticated("the token has expired")
    if _number(claims, "iat") > now + leeway:
        raise Unauthenticated("the token was issued in the future")
    if "nbf" in claims and _number(claims, "nbf") > now + leeway:
        raise Unauthenticated("the token is not yet valid")


def _actor(chain: list[str]) -> dict:
    act: dict = {"sub": chain[0]}
    if len(chain) > 1:
        act["act"] = _actor(chain[1:])
    return act


def build_access_token_claims(
    *,
    issuer: str,
    agent_id: str,
    audience: str,
    issued_at: int,
    expires_at: int,
    jti: str,
    action: str,
    target: str,
    tool: str | None,
    dataset: str | None,
    request_id: str,
    approvers: list[str],
    policies: list[str],
    proposal_sha256: str,
    break_glass: bool = False,
    actor_chain: list[str] | None = None,
    jkt: str | None = None,
    scope: str | None = None,
    arguments: dict | None = None,
    step_up: Mapping[str, str] | None = None,
) -> dict:
    """Claims of an RFC 9068 access token for one approved escalation.

    ``step_up`` maps each approver who proved presence to how (``"webauthn"``); the
    ``approval`` claim then says ``step_up`` (the kind) and ``step_up_approvers`` (who).

    ``authorization_details`` follows RFC 9396 (type ``agent_escalation``); ``actor_chain``
    lists actors current first, prior ones after, and becomes the nested RFC 8693 ``act``
    claim; ``jkt`` binds the token to a DPoP key (RFC 9449 ``cnf.jkt``).
    """
    if expires_at <= issued_at:
        raise ValueError("expires_at must be after issued_at")
    detail: dict[str, Any] = {
        "type": "agent_escalation",
        "actions": [action],
        "locations": [target],
        "action": action,
        "target": target,
    }
    if tool is not None:
        detail["tool"] = tool
    if dataset is not None:
        detail["dataset"] = dataset
    if arguments is not None:  # exactly as proposed and approved (the proposal hash covers them)
        detail["arguments"] = arguments
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": agent_id,
        "aud": audience,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": expires_at,
        "jti": jti,
        "client_id": agent_id,
        "scope": scope if scope is not None else f"{action}:{target}",
        "authorization_details": [detail],
        "approval": {
            "request_id": request_id,
            "approvers": list(approvers),
            "policies": list(policies),
            "proposal_sha256": proposal_sha256,
            "break_glass": break_glass,
        },
    }
    if step_up:
        kinds = sorted(set(step_up.values()))
        claims["approval"]["step_up"] = kinds[0] if len(kinds) == 1 else kinds
        claims["approval"]["step_up_approvers"] = sorted(step_up)
    if actor_chain:
        claims["act"] = _actor(list(actor_chain))
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    return claims
