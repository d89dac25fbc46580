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


async def test_an_approval_made_while_the_subscription_is_down_wakes_the_long_poll(tmp_path, prefix):
    """Issue 21, item 3 ("wake-ups that cannot be lost"): Redis restarts under a waiting long poll,
    and a person approves before the broker's subscription is back, so the publication reaches
    nobody. The re-subscription makes the long poll read its request again: the agent learns of
    the approval within a second, not when its 20 s wait runs out."""
    from broker.clock import ManualClock
    from tests.support.harness import Harness, make_settings, write_agents
    from tests.support.redis_server import RedisServer, free_port, redis_server_binary

    port, data = free_port(), tmp_path / "redis"
    server = RedisServer(redis_server_binary(), data_dir=data, port=port, appendonly=True).start()
    settings = make_settings(tmp_path, server.url, prefix)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    try:
        rid = (await h.propose()).json()["id"]
        await h.approve(rid, "bob")  # one of two: still pending
        poll = asyncio.create_task(h.status(rid, wait=20))
        while h.broker.wakeups.waiting == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.1)  # the AOF (fsync every second) holds the first approval
        server.stop()
        await asyncio.sleep(1.0)  # the subscriber fails to reconnect and backs off
        server = RedisServer(redis_server_binary(), data_dir=data, port=port, appendonly=True).start()
        approved_at = time.monotonic()
        assert (await h.approve(rid, "erin")).status == "approved"
        answer = await asyncio.wait_for(poll, 20)
        assert answer.json()["status"] == "approved"
        assert time.monotonic() - approved_at < 1.0
    finally:
        await h.stop()
        server.stop()


async def test_a_resubscription_with_nothing_changed_keeps_the_long_poll_waiting(redis, prefix):
    """A re-subscription only makes waiters look again: one whose request did not change is not
    answered early (take_resync says so and re-arms it), while a real change still wakes it."""
    channel = f"{prefix}wake"
    wakeups = Wakeups(redis, channel)
    await wakeups.start()
    try:
        w = wakeups.register("req1")
        waiting = asyncio.create_task(wakeups.wait(w, "pending", 10))
        await asyncio.sleep(0)
        wakeups._resync_all()
        assert await waiting is True and w.take_resync() is True
        assert await wakeups.wait(w, "pending", 0.2) is False  # re-armed: nothing pending
        await publish_and_settle(redis, wakeups, channel, "req1 denied")
        assert await wakeups.wait(w, "pending", 1) is True and w.take_resync() is False
        wakeups.unregister("req1", w)
    finally:
        await wakeups.stop()
