"""Console sign-in: single-use login links and cookie sessions, both kept in Redis.

Only SHA-256 digests of link tokens and session ids are stored, so reading Redis does
not hand out a usable link or cookie. A link is consumed with one GETDEL, so two
browsers racing with the same link get one session between them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson

LINK_TTL_S = 600
SESSION_TTL_S = 8 * 3600


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    """A freshly minted sign-in link token (shown once, stored only as a digest)."""

    token: str
    approver: str
    expires_at: float

    @property
    def ref(self) -> str:
        """A short, non-secret reference for the audit log."""
        return _digest(self.token)[:12]


@dataclass(frozen=True)
class Session:
    id_digest: str
    approver: str
    csrf: str
    created_at: float
    # How the session began: "link" (a sign-in link from `jitgate console login`) or "step-up"
    # (a step-up link from a chat click, which may approve with a key but not manage keys).
    via: str = "link"

    @property
    def ref(self) -> str:
        return self.id_digest[:12]

    def csrf_ok(self, presented: str | None) -> bool:
        """Constant-time comparison with the session's CSRF token."""
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf.encode())


class Sessions:
    """Login links and sessions under ``<prefix>console:``."""

    def __init__(self, redis, prefix: str, *, link_ttl_s: int = LINK_TTL_S, session_ttl_s: int = SESSION_TTL_S) -> None:
        self.redis = redis
        self.prefix = prefix + "console:"
        self.link_ttl_s = link_ttl_s
        self.session_ttl_s = session_ttl_s

    def _link_key(self, token: str) -> str:
        return f"{self.prefix}link:{_digest(token)}"

    def _session_key(self, id_digest: str) -> str:
        return f"{self.prefix}session:{id_digest}"

    # ------------------------------------------------------------------ links
    async def issue_link(self, approver_id: str, *, now: float, issued_by: str) -> Link:
        """Mint a single-use link token for ``approver_id``, valid for ``link_ttl_s``."""
        token = secrets.token_urlsafe(32)
        exp = now + self.link_ttl_s
        value = orjson.dumps({"approver": approver_id, "exp": exp, "issued_by": issued_by})
        # The Redis TTL cleans up; the stored expiry is what is checked (against the
        # broker's clock), so the two cannot disagree in the link's favour.
        await self.redis.set(self._link_key(token), value, px=self.link_ttl_s * 1000 + 1000)
        return Link(token, approver_id, exp)

    async def peek_link(self, token: str, *, now: float) -> str | None:
        """The approver a still-valid link is for, without using it up (the confirm page)."""
        if not _plausible(token):
            return None
        raw = await self.redis.get(self._link_key(token))
        return _valid(raw, now)

    async def consume_link(self, token: str, *, now: float) -> str | None:
        """Use the link up (atomically) and return its approver; None if unknown, used or expired."""
        if not _plausible(token):
            return None
        raw = await self.redis.getdel(self._link_key(token))
        return _valid(raw, now)

    # ------------------------------------------------------------------ sessions
    async def create(self, approver_id: str, *, now: float, via: str = "link",
                     ttl_s: int | None = None) -> tuple[str, Session]:
        """A new session (lasting ``ttl_s``, at most ``session_ttl_s``); returns (cookie value, session)."""
        sid = secrets.token_urlsafe(32)
        ttl = min(ttl_s or self.session_ttl_s, self.session_ttl_s)
        session = Session(_digest(sid), approver_id, secrets.token_urlsafe(32), now, via)
        key = self._session_key(session.id_digest)
        await self.redis.hset(key, mapping={"approver": approver_id, "csrf": session.csrf, "created_at": repr(now),
                                            "via": via, "ttl": str(ttl)})
        await self.redis.expire(key, ttl)
        return sid, session

    async def get(self, cookie: str | None, *, now: float) -> Session | None:
        """The session behind a cookie value, if it exists and has not outlived its TTL."""
        if not cookie or not _plausible(cookie):
            return None
        digest = _digest(cookie)
        h = await self.redis.hgetall(self._session_key(digest))
        if not h:
            return None
        g = {k.decode(): v.decode() for k, v in h.items()}
        created = float(g.get("created_at", "0"))
        if now - created > min(float(g.get("ttl") or self.session_ttl_s), self.session_ttl_s):
            return None
        return Session(digest, g["approver"], g["csrf"], created, g.get("via") or "link")

    async def end(self, session: Session) -> None:
        await self.redis.delete(self._session_key(session.id_digest))

    async def flash(self, session: Session, message: dict) -> None:
        """Keep one message for the next page this session loads."""
        await self.redis.hset(self._session_key(session.id_digest), "flash", orjson.dumps(message))

    async def pop_flash(self, session: Session) -> dict | None:
        key = self._session_key(session.id_digest)
        async with self.redis.pipeline(transaction=True) as p:
            p.hget(key, "flash")
            p.hdel(key, "flash")
            raw, _ = await p.execute()
        return orjson.loads(raw) if raw else None


def _plausible(secret: str) -> bool:
    return 20 <= len(secret) <= 100 and secret.isascii()


def _valid(raw: bytes | None, now: float) -> str | None:
    if not raw:
        return None
    value = orjson.loads(raw)
    if now >= float(value.get("exp", 0)):
        return None
    return value.get("approver") or None
