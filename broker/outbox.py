"""Delivers queued notifications to the desks: at least once, by exactly one replica.

Transition scripts append ``(id, kind)`` to a Redis Stream in the same atomic step as
the change. Every broker process reads it through one consumer group, so each entry
goes to one replica; an entry is acknowledged only after the desks were told. A process
that dies holding entries leaves them pending, and another claims them after a while.
Delivery renders the request as it is *now*, so a late or repeated entry is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Awaitable, Callable

from redis.exceptions import ResponseError

from .notify import PartialDelivery
from .outage import Outage

log = logging.getLogger("jitgate.outbox")

# Remove a consumer from the group only while it holds no pending entry (atomically: a
# consumer's pending entries would be lost with it). KEYS[1] the stream; ARGV group, consumer.
_DROP_IDLE_CONSUMER = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# A consumer silent this long belongs to a broker that is gone (a live one reads every 0.2 s).
DEAD_CONSUMER_IDLE_MS = 10 * 60 * 1000

GROUP = "desks"
# handler(kind, request_id, only): ``only`` names the desks a previous attempt missed.
Handler = Callable[..., Awaitable[None]]


class Outbox:
    """A consumer of the notification stream."""

    def __init__(self, redis, stream: str, consumer: str, handler: Handler, *, batch: int = 64,
                 claim_idle_ms: int = 30_000, max_attempts: int = 5, on_give_up: Handler | None = None,
                 yield_to: asyncio.Event | None = None, yield_at_most_s: float = 5.0) -> None:
        self.redis = redis
        self.stream = stream
        self.consumer = consumer
        self.handler = handler
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.max_attempts = max_attempts
        self.on_give_up = on_give_up
        # While this event is clear (the scheduler is revoking a backlog of grants), deliveries
        # wait for it, at most ``yield_at_most_s`` each time: ending grants comes before telling.
        self.yield_to = yield_to
        self.yield_at_most_s = yield_at_most_s
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.delivered = 0
        self._outage = Outage(log, "reading the outbox (Redis)")

    async def ensure_group(self) -> None:
        try:
            # From the start of the stream: entries queued before any broker ran count too.
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def start(self) -> None:
        await self.ensure_group()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop consuming. Entries being delivered stay pending and are claimed later; with
        none pending, this consumer leaves the group (each start is a new consumer)."""
        self._stopping = True  # redis-py may turn a cancelled blocking read into another error
        if self._task:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)
            self._task = None
        try:
            await self._drop(self.consumer)
        except Exception:  # noqa: BLE001 - best effort: prune_dead removes it later
            pass

    async def _drop(self, consumer: str) -> bool:
        script = self.redis.register_script(_DROP_IDLE_CONSUMER)
        return bool(await script(keys=[self.stream], args=[GROUP, consumer]))

    async def prune_dead(self) -> list[str]:
        """Remove the consumers of brokers that are gone (silent for DEAD_CONSUMER_IDLE_MS and
        holding no pending entry: what they held was claimed by then); the names removed."""
        dropped = []
        for c in await self.redis.xinfo_consumers(self.stream, GROUP):
            name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            if name != self.consumer and c["pending"] == 0 and c["idle"] >= DEAD_CONSUMER_IDLE_MS:
                if await self._drop(name):
                    dropped.append(name)
        if dropped:
            log.info("removed %d outbox consumer(s) of brokers that are gone", len(dropped))
        return dropped

    async def _run(self) -> None:
        backoff = 0.1
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        claim_every, since_claim = 10, 0
        while not self._stopping:
            try:
                entries = []
                since_claim += 1
                if since_claim >= claim_every:
                    since_claim = 0
                    entries = await self._claim_stale()
                    if not entries and loop.time() >= next_prune:
                        next_prune = loop.time() + 60
                        await self.prune_dead()
                if not entries:
                    resp = await self.redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=self.batch, block=200)
                    entries = resp[0][1] if resp else []
                self._outage.ok()
                if entries:
                    await self._process(entries)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except ResponseError as e:
                if "NOGROUP" in str(e):
                    await self.ensure_group()  # the stream was deleted (tests, a flush)
                    continue
                self._outage.failed(str(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as e:  # noqa: BLE001 - Redis away: retry with backoff
                self._outage.failed(e.__class__.__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _claim_stale(self) -> list:
        """Entries another consumer took but never acknowledged (it died)."""
        resp = await self.redis.xautoclaim(self.stream, GROUP, self.consumer, min_idle_time=self.claim_idle_ms,
                                           start_id="0-0", count=self.batch)
        return [e for e in resp[1] if e and e[1]] if resp else []

    async def _process(self, entries: list) -> None:
        # One request's entries in order; different requests concurrently (bounded). An entry
        # may name many requests (``ids``: the sweep's batch of expiries).
        by_request: OrderedDict[str, list] = OrderedDict()
        sids = []
        for sid, fields in entries:
            sids.append(sid)
            kind = _s(fields.get(b"kind", b""))
            ids = _s(fields[b"ids"]).split() if b"ids" in fields else [_s(fields.get(b"id", b""))]
            for rid in ids:
                by_request.setdefault(rid, []).append(kind)
        sem = asyncio.Semaphore(self.batch)

        async def deliver(rid: str, kinds: list[str]) -> None:
            async with sem:
                await self._yield()
                await self._deliver_all(rid, kinds)

        await asyncio.gather(*(deliver(rid, kinds) for rid, kinds in by_request.items()))
        # Acknowledged once every request of the batch was told (or given up on): one round trip.
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(self.stream, GROUP, *sids)
        pipe.xdel(self.stream, *sids)
        await pipe.execute()
        self.delivered += sum(len(k) for k in by_request.values())

    async def _yield(self) -> None:
        if self.yield_to is not None and not self.yield_to.is_set():
            try:
                await asyncio.wait_for(self.yield_to.wait(), self.yield_at_most_s)
            except asyncio.TimeoutError:
                pass  # never starve the desks: a long sweep gets no more than this head start

    async def _deliver_all(self, rid: str, kinds: list[str]) -> None:
        for kind in kinds:
            only = None
            for attempt in range(1, self.max_attempts + 1):
                try:
                    await self.handler(kind, rid, only)
                    break
                except PartialDelivery as e:
                    only = e.failed  # retry just the desks that missed it
                    log.warning("notification %s for %s: %s (attempt %d)", kind, rid, e, attempt)
                    if attempt == self.max_attempts:
                        await self._give_up(kind, rid)
                    else:
                        await asyncio.sleep(min(0.2 * 2 ** attempt, 5.0))
                except Exception:  # noqa: BLE001 - retried, then given up loudly
                    log.exception("notification %s for %s failed (attempt %d)", kind, rid, attempt)
                    if attempt == self.max_attempts:
                        await self._give_up(kind, rid)
                    else:
                        await asyncio.sleep(min(0.2 * 2 ** attempt, 5.0))

    async def _give_up(self, kind: str, rid: str) -> None:
        if self.on_give_up:
            try:
                await self.on_give_up(kind, rid)
            except Exception:  # noqa: BLE001
                log.exception("could not record the failed notification")

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far was delivered (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await self.redis.xlen(self.stream) == 0:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"outbox not drained within {timeout} s")


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
