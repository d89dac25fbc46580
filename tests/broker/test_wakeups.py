"""Long-poll wake-ups: a change published between a waiter's registration and its wait is not lost."""

from __future__ import annotations

import asyncio
import time

from broker.wakeups import Wakeups


async def publish_and_settle(redis, wakeups: Wakeups, channel: str, message: str) -> None:
    """Publish ``message``, then a marker on the same channel, and return once the marker was routed:
    pub/sub keeps order, so ``message`` has been routed too."""
    probe = wakeups.register("probe")
    waiting = asyncio.create_task(wakeups.wait(probe, "before", 5))
    await asyncio.sleep(0)  # the probe now waits with its known status set
    await redis.publish(channel, message)
    await redis.publish(channel, "probe after")
    assert await waiting is True
    wakeups.unregister("probe", probe)


async def test_change_between_register_and_wait_wakes_at_once(redis, prefix):
    """A transition published after the handler read the state but before it started waiting ends the
    wait at once (it used to be dropped, and the agent waited out its whole long poll)."""
    channel = f"{prefix}wake"
    wakeups = Wakeups(redis, channel)
    await wakeups.start()
    try:
        w = wakeups.register("req1")  # the handler registers, then reads: still pending
        await publish_and_settle(redis, wakeups, channel, "req1 denied")  # an approver denies now
        started = time.monotonic()
        assert await wakeups.wait(w, "pending", 10) is True
        assert time.monotonic() - started < 1
        wakeups.unregister("req1", w)

        w = wakeups.register("req1")  # a publish of the status the read already saw is no change
        await publish_and_settle(redis, wakeups, channel, "req1 approved")
        assert await wakeups.wait(w, "approved", 0.2) is False
        wakeups.unregister("req1", w)
    finally:
        await wakeups.stop()
