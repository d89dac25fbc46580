"""The SSF transmitter's background work: fan-out of ended grants into SETs, and push delivery.

Fan-out: every broker reads ``<outbox>:ssf`` through one consumer group (``ssf``), so each
ended grant is turned into SETs by one replica; an entry is acknowledged only after its SETs
are queued on every stream that should get them, and a replica that dies holding entries
leaves them to be claimed by another. A SET's ``jti`` is derived from the entry and the
stream, so a repeat overwrites instead of doubling.

Push (RFC 8935): for each push stream, one replica at a time (a short Redis lock per stream)
POSTs the queued SETs oldest first, one per request as section 2 says, and deletes each once
the receiver accepted it (2xx). A receiver that is down or answers 5xx keeps its SETs and is
tried again with exponential back-off (0.5 s doubling to 5 min); a 400 ``err`` answer refuses
that SET for good (RFC 8935 section 2.4: a retry would be refused again), which is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
from redis.exceptions import ResponseError

from ..errors import InvalidRequest
from ..outage import Outage
from .events import (
    CAEP_SESSION_REVOKED,
    DELIVERY_POLL,
    DELIVERY_PUSH,
    SET_TYP,
    session_revoked_claims,
    set_id,
    verification_claims,
)
from .streams import Streams, delivered

log = logging.getLogger("jitgate.ssf")

GROUP = "ssf"
PUSH_BATCH = 50
MAX_BACKOFF_S = 300.0
LOCK_MS = 60_000
# How often a waiting poll looks at Redis when no fan-out of this process woke it: SETs fanned
# out by another replica reach a poll here within this (one fan-out wakes its own at once).
POLL_RECHECK_S = 0.1

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Transmitter:
    """Turns ended grants into SETs and delivers them; owns the poll wait."""

    def __init__(self, *, redis, streams: Streams, keyring, registry, settings, clock, source: str,
                 consumer: str, metrics=None, batch: int = 256, claim_idle_ms: int = 30_000) -> None:
        self.redis = redis
        self.streams = streams
        self.keyring = keyring
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.source = source
        self.consumer = consumer
        self.metrics = metrics
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self._arrived = asyncio.Event()
        self._push_wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self.draining = False  # a graceful stop: waiting polls answer now
        self._http: httpx.AsyncClient | None = None
        self._release = redis.register_script(_RELEASE)
        self._outage = Outage(log, "reading the SSF queue (Redis)")

    def _count(self, name: str, n: int = 1, **labels: str) -> None:
        if self.metrics is not None and n:
            self.metrics.count(name, n, **labels)

    # ------------------------------------------------------------------ life
    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.source, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def start(self) -> None:
        await self.ensure_group()
        self._http = httpx.AsyncClient(timeout=self.settings.ssf_push_timeout_s, follow_redirects=False)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._fan_out_loop()), loop.create_task(self._push_loop())]

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        self._tasks = []
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ------------------------------------------------------------------ fan-out
    async def _fan_out_loop(self) -> None:
        backoff, since_claim = 0.1, 0
        while not self._stopping:
            try:
                entries = []
                since_claim += 1
                if since_claim >= 20:
                    since_claim = 0
                    resp = await self.redis.xautoclaim(self.source, GROUP, self.consumer,
                                                       min_idle_time=self.claim_idle_ms, start_id="0-0", count=self.batch)
                    entries = [e for e in resp[1] if e and e[1]] if resp else []
                if not entries:
                    resp = await self.redis.xreadgroup(GROUP, self.consumer, {self.source: ">"}, count=self.batch,
                                                       block=200)
                    entries = resp[0][1] if resp else []
                self._outage.ok()
                if entries:
                    await self.fan_out(entries)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except ResponseError as e:
                if "NOGROUP" in str(e):
                    await self.ensure_group()
                    continue
                self._outage.failed(str(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as e:  # noqa: BLE001 - Redis away or a signing failure: retry with back-off
                self._outage.failed(f"{e.__class__.__name__}: {e}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def fan_out(self, entries: list) -> int:
        """Queue a ``session-revoked`` SET on each stream whose receiver the ended grant's token
        was meant for (its ``aud`` among the receiver's audiences, the receiver still registered,
        the stream not disabled and delivering the event); then acknowledge the entries.
        Returns how many SETs were queued."""
        recs = [r for r in await self.streams.all()
                if r.get("status") != "disabled" and CAEP_SESSION_REVOKED in delivered(r)]
        iat = int(self.clock.now())
        per_stream: dict[str, list[tuple[str, str, int]]] = {}
        for eid, raw in entries:
            f = {_s(k): _s(v) for k, v in raw.items()}
            entry_id = _s(eid)
            for rec in recs:
                server = self.registry.resource_server(rec["receiver"])
                if server is None or not server.serves(f.get("aud", "")):
                    continue
                sid = rec["stream_id"]
                jti = set_id(entry_id, sid)
                claims = session_revoked_claims(
                    issuer=self.settings.issuer, audience=rec["receiver"], set_jti=jti, iat=iat,
                    token_jti=f.get("jti", ""), ended_ms=int(f.get("at") or iat * 1000),
                    closed_by=f.get("by", ""), status=f.get("status", ""), reason=f.get("reason", ""))
                token = self.keyring.sign(claims, typ=SET_TYP)
                per_stream.setdefault(sid, []).append((jti, token, int(f.get("at") or iat * 1000)))
        queued = 0
        for sid, items in per_stream.items():
            dropped = await self.streams.enqueue(sid, items)
            queued += len(items)
            if dropped:
                self._count("ssf_deliveries", dropped, result="dropped")
                log.warning("SSF stream %s holds more than %d undelivered SETs (JITGATE_SSF_MAX_QUEUED): dropped "
                            "the %d oldest; its receiver must fall back to introspection", sid,
                            self.settings.ssf_max_queued, dropped)
        self._count("ssf_sets", queued, event="session-revoked")
        ids = [_s(e[0]) for e in entries]
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(self.source, GROUP, *ids)
        pipe.xdel(self.source, *ids)
        await pipe.execute()
        if queued:
            self.wake()
        return queued

    def wake(self) -> None:
        """Wake this process's waiting polls and its push loop."""
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()
        self._push_wake.set()

    async def verify(self, rec: dict, state: str | None) -> None:
        """SSF 1.0 section 8.1.4.2: queue a verification SET on the stream (delivered as the
        others are; paused streams hold it, disabled ones drop it)."""
        if rec.get("status") == "disabled":
            return
        sid = rec["stream_id"]
        now = self.clock.now()
        jti = set_id(f"verify:{now!r}:{state}", sid)
        claims = verification_claims(issuer=self.settings.issuer, audience=rec["receiver"], set_jti=jti,
                                     iat=int(now), stream_id=sid, state=state)
        await self.streams.enqueue(sid, [(jti, self.keyring.sign(claims, typ=SET_TYP), int(now * 1000))])
        self._count("ssf_sets", event="verification")
        self.wake()

    # ------------------------------------------------------------------ poll (RFC 8936)
    async def poll(self, rec: dict, body: Any, disconnected=None) -> dict:
        """RFC 8936 section 2.4: acknowledge what ``ack`` (and ``setErrs``) name, then return up
        to ``maxEvents`` unacknowledged SETs; with ``returnImmediately`` false (the default) wait
        for one, at most JITGATE_SSF_POLL_MAX_WAIT_S. A SET stays queued until acknowledged, so
        one lost with a response comes again. A paused stream answers no SETs (it holds them).
        ``disconnected`` (an async callable) ends the wait early when the receiver went away."""
        if not isinstance(body, dict):
            raise InvalidRequest("the poll request must be a JSON object")
        if rec["delivery"]["method"] != DELIVERY_POLL:
            raise InvalidRequest("this stream is delivered by push (RFC 8935), not poll")
        ack = body.get("ack", [])
        if not isinstance(ack, list) or len(ack) > 1000 or not all(isinstance(a, str) for a in ack):
            raise InvalidRequest("'ack' must be a list of at most 1000 SET jti strings")
        errs = body.get("setErrs", {})
        if not isinstance(errs, dict) or len(errs) > 1000:
            raise InvalidRequest("'setErrs' must be an object of at most 1000 jti: {err, description}")
        max_events = body.get("maxEvents", 100)
        if not isinstance(max_events, int) or isinstance(max_events, bool) or not 0 <= max_events <= 1000:
            raise InvalidRequest("'maxEvents' must be an integer from 0 to 1000")
        immediately = body.get("returnImmediately", False)
        if not isinstance(immediately, bool):
            raise InvalidRequest("'returnImmediately' must be a boolean")
        sid = rec["stream_id"]
        for jti, err in errs.items():
            log.warning("SSF receiver %s refused SET %s on stream %s: %s", rec["receiver"], jti, sid, err)
        done = list(ack) + list(errs)
        await self.streams.ack(sid, done)
        self._count("ssf_deliveries", len(ack), result="polled")
        self._count("ssf_deliveries", len(errs), result="refused")
        if max_events == 0 or rec.get("status") != "enabled":
            return {"sets": {}}
        sets = await self.streams.pending(sid, max_events)
        if not sets and not immediately:
            loop = asyncio.get_running_loop()
            end = loop.time() + self.settings.ssf_poll_max_wait_s
            while not sets and not self._stopping and not self.draining:
                left = end - loop.time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._arrived.wait(), min(left, POLL_RECHECK_S))
                except asyncio.TimeoutError:
                    pass
                sets = await self.streams.pending(sid, max_events)
                if not sets and ((disconnected is not None and await disconnected())
                                 or not await self.streams.exists(sid)):
                    break  # the receiver went away, or deleted the stream
        out: dict[str, Any] = {"sets": dict(sets)}
        if sets and await self.streams.queued(sid) > len(sets):
            out["moreAvailable"] = True
        return out

    # ------------------------------------------------------------------ push (RFC 8935)
    async def _push_loop(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._push_wake.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
            self._push_wake.clear()
            try:
                recs = [r for r in await self.streams.all()
                        if r["delivery"]["method"] == DELIVERY_PUSH and r.get("status") == "enabled"]
                await asyncio.gather(*(self.push(r) for r in recs))
                self._outage.ok()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - Redis away: the next round tries again
                self._outage.failed(f"{e.__class__.__name__}: {e}")

    async def push(self, rec: dict) -> int:
        """Push the stream's queued SETs unless it is backing off or another replica is at it;
        returns how many the receiver accepted."""
        sid = rec["stream_id"]
        pkey = self.streams.push_key(sid)
        state = {_s(k): _s(v) for k, v in (await self.redis.hgetall(pkey)).items()}
        if float(state.get("next", 0)) > time.time():
            return 0
        if not await self.streams.queued(sid):
            return 0
        lock = f"{pkey}:lock"
        if not await self.redis.set(lock, self.consumer, nx=True, px=LOCK_MS):
            return 0
        accepted = 0
        try:
            while not self._stopping:
                batch = await self.streams.pending(sid, PUSH_BATCH)
                if not batch:
                    break
                for jti, token in batch:
                    outcome, detail = await self._post(rec, token)
                    if outcome == "retry":
                        attempts = int(state.get("attempts", 0)) + 1
                        delay = min(0.5 * 2 ** (attempts - 1), MAX_BACKOFF_S)
                        await self.redis.hset(pkey, mapping={"attempts": attempts, "next": time.time() + delay,
                                                             "error": detail[:200]})
                        self._count("ssf_deliveries", result="retried")
                        log.warning("SSF push to %s (stream %s) failed (%s); attempt %d, next in %.1f s",
                                    rec["delivery"]["endpoint_url"], sid, detail, attempts, delay)
                        return accepted
                    await self.streams.ack(sid, [jti])
                    if outcome == "refused":
                        self._count("ssf_deliveries", result="refused")
                        log.warning("SSF receiver %s refused SET %s on stream %s: %s", rec["receiver"], jti, sid, detail)
                    else:
                        accepted += 1
                        self._count("ssf_deliveries", result="pushed")
                    if state.get("attempts"):
                        await self.redis.delete(pkey)
                        state = {}
        finally:
            await self._release(keys=[lock], args=[self.consumer])
        return accepted

    async def _post(self, rec: dict, token: str) -> tuple[str, str]:
        """One RFC 8935 push: ``ok`` (2xx; the receiver answers 202), ``refused`` (400: the
        receiver says the SET is bad; a retry would be too) or ``retry`` (anything else)."""
        assert self._http is not None
        headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
        auth = rec.get("authorization_header")
        if auth:
            headers["Authorization"] = auth
        try:
            resp = await self._http.post(rec["delivery"]["endpoint_url"], content=token.encode(), headers=headers)
        except httpx.HTTPError as e:
            return "retry", e.__class__.__name__
        if 200 <= resp.status_code < 300:
            return "ok", ""
        if resp.status_code == 400:
            try:
                body = resp.json()
                err = f"{body.get('err')}: {body.get('description', '')}" if isinstance(body, dict) else "400"
            except ValueError:
                err = "400"
            return "refused", err[:300]
        return "retry", f"HTTP {resp.status_code}"
