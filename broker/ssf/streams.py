"""Event streams (SSF 1.0 section 8): each one's configuration and its queue of SETs, in Redis.

A stream belongs to one registered resource server (the receiver that created it, authenticated
as for introspection) and carries the revocations of tokens meant for that server's audiences.
A receiver sees and changes only its own streams: another's stream id answers 404, as an
unknown one does (SSF 1.0 section 8.1.1.2). Each stream's undelivered SETs wait in a hash
(jti -> SET) and a sorted set (jti by time): push deletes one once the receiver accepted it,
poll once the receiver acknowledged it (RFC 8936), so a SET is delivered at least once.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..clock import new_id
from ..config import Settings
from ..errors import BrokerError, Conflict, InvalidRequest, NotFound
from .events import DELIVERY_POLL, DELIVERY_PUSH, EVENTS_SUPPORTED

STATUSES = ("enabled", "paused", "disabled")
MIN_VERIFICATION_INTERVAL_S = 1
MAX_DESCRIPTION = 256
MAX_EVENTS_REQUESTED = 32
MAX_URL = 2048
MAX_AUTH_HEADER = 4096
MAX_REASON = 256
_STREAM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The receiver-supplied properties a PUT replaces (SSF 1.0 section 8.1.1.4); missing ones are deleted.
_RECEIVER_SUPPLIED = ("events_requested", "delivery", "description")

# Create a stream unless the receiver already has its maximum, in one step (no overshoot when
# two creations race). KEYS: the receiver's set, the set of all, the stream; ARGV: id, max, json.
_CREATE = """
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# Queue SETs and keep at most ARGV[1] (the oldest dropped first). KEYS: hash, zset;
# ARGV: max, then (jti, SET, score ms) triples. Returns how many were dropped.
_ENQUEUE = """
for i = 2, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], 'NX', ARGV[i + 2], ARGV[i])
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[1])
if over <= 0 then return 0 end
local old = redis.call('ZPOPMIN', KEYS[2], over)
for j = 1, #old, 2 do redis.call('HDEL', KEYS[1], old[j]) end
return over
"""


class TooManyRequests(BrokerError):
    """SSF 1.0 section 8.1.4.2: verification asked more often than ``min_verification_interval``."""

    code, status, title = "too-many-requests", 429, "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def check_stream_id(value: Any) -> str:
    """A ``stream_id`` parameter: a string (400 otherwise); one that cannot name a stream is 404."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest("'stream_id' is required (a string)")
    if not _STREAM_ID.match(value):
        raise NotFound("no such stream for this receiver")
    return value


class Streams:
    """Stream configurations and queues under ``<prefix>ssf:``."""

    def __init__(self, redis, prefix: str, settings: Settings) -> None:
        self.redis = redis
        self.p = f"{prefix}ssf:"
        self.settings = settings
        self.all_key = f"{self.p}streams"
        self._create = redis.register_script(_CREATE)
        self._enqueue = redis.register_script(_ENQUEUE)

    # ------------------------------------------------------------------ keys
    def _key(self, sid: str) -> str:
        return f"{self.p}stream:{sid}"

    def _receiver_key(self, receiver: str) -> str:
        return f"{self.p}receiver:{receiver}"

    def queue_keys(self, sid: str) -> tuple[str, str]:
        return f"{self.p}q:{sid}", f"{self.p}qz:{sid}"

    def push_key(self, sid: str) -> str:
        return f"{self.p}push:{sid}"

    # ------------------------------------------------------------------ views
    def public(self, rec: dict) -> dict:
        """The stream configuration as SSF 1.0 section 8.1.1 shows it. The push
        ``authorization_header`` is the receiver's secret: accepted, used, never shown again."""
        out: dict[str, Any] = {
            "stream_id": rec["stream_id"],
            "iss": self.settings.issuer,
            "aud": rec["receiver"],
            "delivery": dict(rec["delivery"]),
            "events_supported": list(EVENTS_SUPPORTED),
            "events_delivered": delivered(rec),
            "min_verification_interval": MIN_VERIFICATION_INTERVAL_S,
        }
        if rec.get("events_requested") is not None:
            out["events_requested"] = rec["events_requested"]
        if rec.get("description"):
            out["description"] = rec["description"]
        return out

    def status_view(self, rec: dict) -> dict:
        out = {"stream_id": rec["stream_id"], "status": rec["status"]}
        if rec.get("reason"):
            out["reason"] = rec["reason"]
        return out

    # ------------------------------------------------------------------ reads
    async def load(self, sid: str) -> dict | None:
        raw = await self.redis.get(self._key(sid))
        return orjson.loads(raw) if raw else None

    async def exists(self, sid: str) -> bool:
        return bool(await self.redis.exists(self._key(sid)))

    async def own(self, receiver: str, sid: Any) -> dict:
        """The receiver's stream ``sid``; 404 for another's or an unknown one (same answer)."""
        rec = await self.load(check_stream_id(sid))
        if rec is None or rec.get("receiver") != receiver:
            raise NotFound("no such stream for this receiver")
        return rec

    async def of_receiver(self, receiver: str) -> list[dict]:
        sids = sorted(m.decode() for m in await self.redis.smembers(self._receiver_key(receiver)))
        return [r for r in await self._many(sids) if r is not None]

    async def all(self) -> list[dict]:
        """Every stream (the fan-out's and the push loop's view)."""
        sids = sorted(m.decode() for m in await self.redis.smembers(self.all_key))
        return [r for r in await self._many(sids) if r is not None]

    async def _many(self, sids: list[str]) -> list[dict | None]:
        if not sids:
            return []
        raws = await self.redis.mget([self._key(s) for s in sids])
        return [orjson.loads(r) if r else None for r in raws]

    # ------------------------------------------------------------------ management
    async def create(self, receiver: str, body: Any) -> dict:
        """SSF 1.0 section 8.1.1.1: a new stream from the receiver-supplied properties; no
        ``delivery`` means poll, whose ``endpoint_url`` the transmitter supplies."""
        if not isinstance(body, dict):
            raise InvalidRequest("the stream configuration must be a JSON object")
        sid = new_id()
        rec = {"stream_id": sid, "receiver": receiver, "status": "enabled", "reason": ""}
        self._apply(rec, body, replace=True, creating=True)
        ok = await self._create(keys=[self._receiver_key(receiver), self.all_key, self._key(sid)],
                                args=[sid, self.settings.ssf_max_streams, orjson.dumps(rec)])
        if not ok:
            raise Conflict(f"receiver '{receiver}' already has {self.settings.ssf_max_streams} streams "
                           "(JITGATE_SSF_MAX_STREAMS): update or delete one")
        return rec

    async def update(self, receiver: str, body: Any, *, replace: bool) -> dict:
        """SSF 1.0 sections 8.1.1.3 (PATCH: what is present changes) and 8.1.1.4 (PUT: missing
        receiver-supplied properties are deleted). Transmitter-supplied properties may be sent
        but must match; the whole body is checked before anything is written."""
        if not isinstance(body, dict):
            raise InvalidRequest("the stream configuration must be a JSON object")
        rec = await self.own(receiver, body.get("stream_id"))
        view = self.public(rec)
        for name in ("iss", "aud", "events_supported", "events_delivered", "min_verification_interval"):
            if name in body and body[name] != view[name]:
                raise InvalidRequest(f"'{name}' is supplied by the transmitter and must be {view[name]!r}")
        new = dict(rec)
        self._apply(new, body, replace=replace, creating=False)
        if new["delivery"] != rec["delivery"] or new.get("authorization_header") != rec.get("authorization_header"):
            await self.redis.delete(self.push_key(rec["stream_id"]))  # a new endpoint starts without back-off
        await self.redis.set(self._key(rec["stream_id"]), orjson.dumps(new), xx=True)
        return new

    async def delete(self, receiver: str, sid: Any) -> None:
        rec = await self.own(receiver, sid)
        sid = rec["stream_id"]
        q, qz = self.queue_keys(sid)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self._key(sid), q, qz, self.push_key(sid))
        pipe.srem(self._receiver_key(receiver), sid)
        pipe.srem(self.all_key, sid)
        await pipe.execute()

    async def set_status(self, receiver: str, body: Any) -> dict:
        """SSF 1.0 section 8.1.2.2. ``paused`` holds events, ``disabled`` drops them (and what
        was held)."""
        if not isinstance(body, dict):
            raise InvalidRequest("the status request must be a JSON object")
        rec = await self.own(receiver, body.get("stream_id"))
        status = body.get("status")
        if status not in STATUSES:
            raise InvalidRequest(f"'status' must be one of {', '.join(STATUSES)}")
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise InvalidRequest("'reason' must be a string")
        rec["status"], rec["reason"] = status, reason[:MAX_REASON]
        await self.redis.set(self._key(rec["stream_id"]), orjson.dumps(rec), xx=True)
        if status == "disabled":
            await self.redis.delete(*self.queue_keys(rec["stream_id"]))
        return rec

    async def check_subject(self, receiver: str, body: Any) -> dict:
        """SSF 1.0 sections 8.1.3.2/8.1.3.3: the request's shape; the stream gets every token of
        its receiver's audiences whatever the subjects (``default_subjects`` ALL), and keeps
        doing so after a removal (section 9.3, malicious subject removal)."""
        if not isinstance(body, dict):
            raise InvalidRequest("the subject request must be a JSON object")
        rec = await self.own(receiver, body.get("stream_id"))
        subject = body.get("subject")
        if not isinstance(subject, dict) or not isinstance(subject.get("format"), str):
            raise InvalidRequest("'subject' must be a subject identifier (an object with a 'format')")
        if "verified" in body and not isinstance(body["verified"], bool):
            raise InvalidRequest("'verified' must be a boolean")
        return rec

    async def verification_allowed(self, sid: str) -> None:
        """At most one verification per ``min_verification_interval`` (429 otherwise)."""
        if not await self.redis.set(f"{self.p}verify:{sid}", b"1", nx=True, ex=MIN_VERIFICATION_INTERVAL_S):
            raise TooManyRequests(f"at most one verification every {MIN_VERIFICATION_INTERVAL_S} s",
                                  MIN_VERIFICATION_INTERVAL_S)

    # ------------------------------------------------------------------ queues
    async def enqueue(self, sid: str, items: list[tuple[str, str, int]]) -> int:
        """Queue (jti, SET, at ms) items; returns how many old ones the cap dropped."""
        if not items:
            return 0
        args: list = [self.settings.ssf_max_queued]
        for jti, token, at in items:
            args += [jti, token, at]
        return int(await self._enqueue(keys=list(self.queue_keys(sid)), args=args))

    async def pending(self, sid: str, n: int) -> list[tuple[str, str]]:
        """The oldest ``n`` undelivered SETs as (jti, SET)."""
        q, qz = self.queue_keys(sid)
        jtis = [j.decode() for j in await self.redis.zrange(qz, 0, max(0, n - 1))] if n > 0 else []
        if not jtis:
            return []
        sets = await self.redis.hmget(q, jtis)
        return [(j, s.decode()) for j, s in zip(jtis, sets) if s is not None]

    async def queued(self, sid: str) -> int:
        return int(await self.redis.zcard(self.queue_keys(sid)[1]))

    async def ack(self, sid: str, jtis: list[str]) -> None:
        if not jtis:
            return
        q, qz = self.queue_keys(sid)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(q, *jtis)
        pipe.zrem(qz, *jtis)
        await pipe.execute()

    # ------------------------------------------------------------------ parsing
    def _apply(self, rec: dict, body: dict, *, replace: bool, creating: bool) -> None:
        """Set the receiver-supplied properties of ``body`` on ``rec`` (all checked first)."""
        present = {k for k in _RECEIVER_SUPPLIED if k in body}
        changes: dict[str, Any] = {}
        if "events_requested" in present:
            changes["events_requested"] = _events_requested(body["events_requested"])
        elif replace:
            changes["events_requested"] = None
        if "description" in present:
            d = body["description"]
            if not isinstance(d, str):
                raise InvalidRequest("'description' must be a string")
            changes["description"] = d[:MAX_DESCRIPTION]
        elif replace:
            changes["description"] = ""
        if "delivery" in present or replace:
            delivery, auth = self._delivery(body.get("delivery"), rec, creating)
            changes["delivery"], changes["authorization_header"] = delivery, auth
        rec.update(changes)

    def _delivery(self, raw: Any, rec: dict, creating: bool) -> tuple[dict, str | None]:
        poll_url = f"{self.settings.issuer}/ssf/poll/{rec['stream_id']}"
        if raw is None:
            return {"method": DELIVERY_POLL, "endpoint_url": poll_url}, None
        if not isinstance(raw, dict):
            raise InvalidRequest("'delivery' must be an object with a 'method'")
        method = raw.get("method")
        if method == DELIVERY_POLL:
            given = raw.get("endpoint_url")
            if given is not None and not creating and given != poll_url:
                raise InvalidRequest(f"a poll stream's 'endpoint_url' is supplied by the transmitter: {poll_url}")
            return {"method": DELIVERY_POLL, "endpoint_url": poll_url}, None
        if method != DELIVERY_PUSH:
            raise InvalidRequest(f"'delivery.method' must be {DELIVERY_PUSH} (push) or {DELIVERY_POLL} (poll)")
        url = self._push_url(raw.get("endpoint_url"))
        auth = raw.get("authorization_header")
        if auth is not None and (not isinstance(auth, str) or not auth or len(auth) > MAX_AUTH_HEADER
                                 or any(c in auth for c in "\r\n\0")):
            raise InvalidRequest(f"'delivery.authorization_header' must be one header value (at most "
                                 f"{MAX_AUTH_HEADER} characters, no line breaks)")
        return {"method": DELIVERY_PUSH, "endpoint_url": url}, auth

    def _push_url(self, url: Any) -> str:
        """A push endpoint: https (http only with JITGATE_SSF_PUSH_ALLOW_HTTP), a host, no user
        information nor fragment. The SETs name tokens: they never travel in clear by default."""
        if not isinstance(url, str) or not url or len(url) > MAX_URL:
            raise InvalidRequest("a push stream needs 'delivery.endpoint_url' (a URL)")
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError for a bad port
        except ValueError:
            raise InvalidRequest("'delivery.endpoint_url' is not a valid URL") from None
        allowed = ("https", "http") if self.settings.ssf_push_allow_http else ("https",)
        if parts.scheme not in allowed:
            raise InvalidRequest("'delivery.endpoint_url' must use https (http only with "
                                 "JITGATE_SSF_PUSH_ALLOW_HTTP=1, for development)")
        if not parts.hostname or parts.username is not None or parts.password is not None or parts.fragment:
            raise InvalidRequest("'delivery.endpoint_url' needs a host, and no user information nor fragment")
        return url


def delivered(rec: dict) -> list[str]:
    """``events_delivered``: the supported events the receiver asked for (all when it did not)."""
    requested = rec.get("events_requested")
    return [e for e in EVENTS_SUPPORTED if requested is None or e in requested]


def _events_requested(value: Any) -> list[str]:
    if (not isinstance(value, list) or len(value) > MAX_EVENTS_REQUESTED
            or not all(isinstance(e, str) and 0 < len(e) <= 512 for e in value)):
        raise InvalidRequest(f"'events_requested' must be a list of at most {MAX_EVENTS_REQUESTED} event type URIs")
    return list(dict.fromkeys(value))
