"""Security keys for step-up (issue 19, item 6): WebAuthn registration and assertions in the console.

People register keys after signing in (``navigator.credentials.create``); an approval that
needs step-up is recorded only with an assertion (``navigator.credentials.get``) that the
``webauthn`` package verified against a key *that approver* registered, over a challenge the
broker issued for *that session, that approver and that request*, taken from Redis once (a
replayed assertion finds no challenge), and with a signature counter that moved forward
(stored with a compare-and-set, so two uses of one assertion cannot both advance it).

Redis, under ``<prefix>console:webauthn:``: ``keys:<approver>`` a hash of credential id
(base64url) → JSON (public key, counter, label, when); ``challenge:<purpose>:<session digest>:<request>``
a challenge with a TTL of ``CHALLENGE_TTL_S``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

import orjson
import webauthn
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria, PublicKeyCredentialDescriptor, ResidentKeyRequirement, UserVerificationRequirement,
)

from broker.errors import Forbidden, InvalidRequest

CHALLENGE_TTL_S = 300
MAX_KEYS = 10
MAX_LABEL = 60
MAX_CREDENTIAL_JSON = 8192
RP_NAME = "jitgate"
REGISTER, APPROVE = "register", "approve"

# Advance a key's signature counter only from the value the verification saw: of two uses
# of one assertion racing, one moves it and the other is refused.
_ADVANCE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local key = cjson.decode(raw)
if tonumber(key['sign_count']) ~= tonumber(ARGV[2]) then return 0 end
key['sign_count'] = tonumber(ARGV[3])
key['used_at'] = ARGV[4]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(key))
return 1
"""


class StepUpFailed(Forbidden):
    """A WebAuthn ceremony the console refuses (no challenge, wrong key, bad signature, counter)."""

    code, title = "step-up-failed", "Security key check failed"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def user_handle(approver: str) -> bytes:
    """The WebAuthn user handle of ``approver``: 32 bytes (the spec allows at most 64; ids may be longer)."""
    return hashlib.sha256(b"jitgate approver\0" + approver.encode()).digest()


@dataclass(frozen=True)
class Key:
    """One registered credential of an approver (never the private part: the key keeps it)."""

    id: str  # base64url credential id
    public_key: bytes
    sign_count: int
    label: str
    created_at: float
    used_at: float | None = None

    @property
    def ref(self) -> str:
        """A short, non-secret reference (for pages and the audit log)."""
        return self.id[:16]


class WebAuthn:
    """Keys, challenges and ceremonies for one broker's console."""

    def __init__(self, redis, prefix: str, *, rp_id: str, origin: str) -> None:
        self.redis = redis
        self.prefix = prefix + "console:webauthn:"
        self.rp_id = rp_id
        self.origin = origin
        self._advance = redis.register_script(_ADVANCE)

    # ------------------------------------------------------------------ keys
    def _keys_key(self, approver: str) -> str:
        return f"{self.prefix}keys:{approver}"

    async def keys(self, approver: str) -> list[Key]:
        """``approver``'s registered keys, oldest first."""
        raw = await self.redis.hgetall(self._keys_key(approver))
        out = []
        for cid, value in raw.items():
            d = orjson.loads(value)
            out.append(Key(cid.decode(), unb64url(d["public_key"]), int(d["sign_count"]), d.get("label") or "",
                           float(d["created_at"]), float(d["used_at"]) if d.get("used_at") else None))
        return sorted(out, key=lambda k: k.created_at)

    async def remove(self, approver: str, key_id: str) -> bool:
        """Forget one of ``approver``'s keys; False when they have no such key."""
        return bool(await self.redis.hdel(self._keys_key(approver), key_id))

    # ------------------------------------------------------------------ challenges
    def _challenge_key(self, purpose: str, session_digest: str, request_id: str) -> str:
        return f"{self.prefix}challenge:{purpose}:{session_digest}:{request_id}"

    async def _new_challenge(self, purpose: str, session_digest: str, approver: str, request_id: str) -> bytes:
        challenge = secrets.token_bytes(32)
        value = orjson.dumps({"challenge": b64url(challenge), "approver": approver, "request": request_id})
        await self.redis.set(self._challenge_key(purpose, session_digest, request_id), value, ex=CHALLENGE_TTL_S)
        return challenge

    async def _take_challenge(self, purpose: str, session_digest: str, approver: str, request_id: str) -> bytes:
        raw = await self.redis.getdel(self._challenge_key(purpose, session_digest, request_id))
        if not raw:
            raise StepUpFailed("no security-key challenge is waiting for this (it was used already or expired); "
                               "press the button again")
        d = orjson.loads(raw)
        if d.get("approver") != approver or d.get("request") != request_id:
            raise StepUpFailed("this challenge was issued to someone else or for something else")
        return unb64url(d["challenge"])

    # ------------------------------------------------------------------ registration
    async def registration_options(self, approver: str, session_digest: str) -> str:
        """``navigator.credentials.create`` options (JSON) for ``approver``, their keys excluded."""
        existing = await self.keys(approver)
        if len(existing) >= MAX_KEYS:
            raise InvalidRequest(f"you have {MAX_KEYS} keys registered already; remove one first")
        challenge = await self._new_challenge(REGISTER, session_digest, approver, "-")
        options = webauthn.generate_registration_options(
            rp_id=self.rp_id, rp_name=RP_NAME, user_name=approver, user_id=user_handle(approver), challenge=challenge,
            exclude_credentials=[PublicKeyCredentialDescriptor(id=unb64url(k.id)) for k in existing],
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.DISCOURAGED, user_verification=UserVerificationRequirement.PREFERRED),
        )
        return webauthn.options_to_json(options)

    async def register(self, approver: str, session_digest: str, credential: str, label: str, *, now: float) -> Key:
        """Verify a ``navigator.credentials.create`` answer and keep the key for ``approver``."""
        label = " ".join((label or "").split())[:MAX_LABEL] or "security key"
        challenge = await self._take_challenge(REGISTER, session_digest, approver, "-")
        try:
            verified = webauthn.verify_registration_response(
                credential=_credential_dict(credential), expected_challenge=challenge, expected_rp_id=self.rp_id,
                expected_origin=self.origin)
        except StepUpFailed:
            raise
        except Exception as e:  # noqa: BLE001 - any verification failure is the same refusal
            raise StepUpFailed(f"the key's registration did not verify: {e}") from None
        key = Key(b64url(verified.credential_id), verified.credential_public_key, verified.sign_count, label, now)
        stored = {"public_key": b64url(key.public_key), "sign_count": key.sign_count, "label": label,
                  "created_at": now}
        if not await self.redis.hsetnx(self._keys_key(approver), key.id, orjson.dumps(stored)):
            raise StepUpFailed("this key is registered already")
        return key

    # ------------------------------------------------------------------ assertions
    async def assertion_options(self, approver: str, session_digest: str, request_id: str) -> str:
        """``navigator.credentials.get`` options (JSON) allowing only ``approver``'s keys,
        with a challenge bound to this session, this approver and ``request_id``."""
        keys = await self.keys(approver)
        if not keys:
            raise StepUpFailed(f"you have no security key registered: sign in with a console link (jitgate console "
                               f"login {approver}) and add one on the Security keys page")
        challenge = await self._new_challenge(APPROVE, session_digest, approver, request_id)
        options = webauthn.generate_authentication_options(
            rp_id=self.rp_id, challenge=challenge,
            allow_credentials=[PublicKeyCredentialDescriptor(id=unb64url(k.id)) for k in keys],
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        return webauthn.options_to_json(options)

    async def verify_assertion(self, approver: str, session_digest: str, request_id: str, credential: str, *,
                               now: float) -> Key:
        """Check a ``navigator.credentials.get`` answer for ``request_id``: the challenge (taken
        once), a key of ``approver``'s, the signature, and a counter that moved forward."""
        challenge = await self._take_challenge(APPROVE, session_digest, approver, request_id)
        data = _credential_dict(credential)
        cid = data.get("id") if isinstance(data.get("id"), str) else ""
        keys = {k.id: k for k in await self.keys(approver)}
        key = keys.get(cid)
        if key is None:
            raise StepUpFailed(f"that security key is not one of {approver}'s registered keys")
        try:
            verified = webauthn.verify_authentication_response(
                credential=data, expected_challenge=challenge, expected_rp_id=self.rp_id, expected_origin=self.origin,
                credential_public_key=key.public_key, credential_current_sign_count=key.sign_count)
        except Exception as e:  # noqa: BLE001 - any verification failure is the same refusal
            raise StepUpFailed(f"the security key's answer did not verify: {e}") from None
        if verified.credential_id != unb64url(key.id):
            raise StepUpFailed("the security key's answer names another key")
        if not await self._advance(keys=[self._keys_key(approver)],
                                   args=[key.id, key.sign_count, verified.new_sign_count, repr(now)]):
            raise StepUpFailed("the security key was used at the same time elsewhere; try again")
        return key


def _credential_dict(credential: str) -> dict:
    if not isinstance(credential, str) or not credential or len(credential) > MAX_CREDENTIAL_JSON:
        raise StepUpFailed("the security key's answer is missing or too long")
    try:
        data = orjson.loads(credential)
    except orjson.JSONDecodeError:
        raise StepUpFailed("the security key's answer is not JSON") from None
    if not isinstance(data, dict):
        raise StepUpFailed("the security key's answer is not a credential")
    return data
