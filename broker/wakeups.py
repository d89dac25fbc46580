"""Long-poll wake-ups over Redis pub/sub, so a change on any replica wakes waiters here.

One subscription per process; the transition scripts publish ``"<id> <status>"`` in
the same atomic step as the change, while someone waits on that request: the long poll
marks the request watched in the same step as its read (``Store.watch``). Waiters
register *before* that read, and wait for a status different from the one they read.

A change published while the subscription was down (Redis restarted, the connection
dropped) reaches nobody, so every re-subscription wakes every waiter with ``resync`` set:
the long poll reads its request again and keeps waiting only if nothing changed. Retries
come at most every ``MAX_BACKOFF_S``, so a waiter learns of such a change within about that.
An outage is logged once when it starts and once when it ends, not once per retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

log = logging.getLogger("jitgate.wakeups")

MAX_BACKOFF_S = 0.5


class _Waiter:
    __slots__ = ("known", "event", "early", "resync")

    def __init__(self) -> None:
        self.known: str | None = None
        self.event = asyncio.Event()
        # Statuses published between register() and wait(): the read in between may have
        # seen the state before such a change, and the change must still wake the wait.
        self.early: list[str] = []
        # Woken because the subscription came back, not by a published change.
        self.resync = False

    def take_resync(self) -> bool:
        """True (and ready to wait again) when the last wake-up was only a re-subscription."""
        if not self.resync:
            return False
        self.resync = False
        self.early.clear()
        self.event.clear()
        return True


class Wakeups:
    """Routes published state changes to the local waiters of each request."""

    def __init__(self, redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self._waiters: dict[str, set[_Waiter]] = defaultdict(set)
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        # Set when this process is shutting down (SIGTERM): every wait ends now, and the long
        # polls answer a retryable 503 so the agents ask another replica.
        self.draining = False

    async def start(self) -> None:
        """Subscribe and start routing (returns once subscribed)."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self) -> None:
        self._stopping = True  # redis-py may turn a cancelled read into another error
        if self._task:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)
            self._task = None

    async def _run(self) -> None:
        backoff = 0.05
        lost_at: float | None = None  # when the subscription went down (None: it is up)
        loop = asyncio.get_running_loop()
        while not self._stopping:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if self._ready.is_set():
                    self._resync_all()  # what was published while we were away reached nobody
                if lost_at is not None:
                    log.warning("pub/sub subscription back after %.1f s; long polls re-read their requests",
                                loop.time() - lost_at)
                    lost_at = None
                self._ready.set()
                backoff = 0.05
                while not self._stopping:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is None:
                        continue
                    self._route(msg["data"])
            except asyncio.CancelledError:
                await _close(pubsub)
                raise
            except Exception as e:  # noqa: BLE001 - reconnect; waiters fall back to their timeout
                if self._stopping:
                    await _close(pubsub)
                    return
                if lost_at is None:
                    lost_at = loop.time()
                    log.warning("pub/sub connection lost (%s); reconnecting", e.__class__.__name__)
                else:
                    log.debug("pub/sub still unavailable (%s)", e.__class__.__name__)
                await _close(pubsub)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def drain(self) -> None:
        """End every wait now, and every later one at once (the process is shutting down)."""
        self.draining = True
        for waiters in self._waiters.values():
            for w in waiters:
                w.event.set()

    def _resync_all(self) -> None:
        for waiters in self._waiters.values():
            for w in waiters:
                w.resync = True
                w.event.set()

    def _route(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        for line in text.split("\n"):  # a batch (the sweep) says "id status" once per line
            rid, _, status = line.partition(" ")
            for w in self._waiters.get(rid, ()):
                if w.known is None:
                    w.early.append(status)
                elif status != w.known:
                    w.event.set()

    def register(self, request_id: str) -> _Waiter:
        """Start listening for ``request_id`` (call before reading its state)."""
        w = _Waiter()
        self._waiters[request_id].add(w)
        return w

    def unregister(self, request_id: str, w: _Waiter) -> None:
        s = self._waiters.get(request_id)
        if s is not None:
            s.discard(w)
            if not s:
                del self._waiters[request_id]

    async def wait(self, w: _Waiter, known_status: str, timeout: float) -> bool:
        """Wait until a status other than ``known_status`` is published, or ``timeout``."""
        w.known = known_status
        if self.draining or any(status != known_status for status in w.early):
            return True
        try:
            await asyncio.wait_for(w.event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    @property
    def waiting(self) -> int:
        return sum(len(s) for s in self._waiters.values())


async def _close(pubsub) -> None:
    try:
        await pubsub.aclose()
    except Exception:  # noqa: BLE001
        pass
