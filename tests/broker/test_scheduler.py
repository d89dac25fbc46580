"""The scheduler's jobs (``broker/scheduler.py``): a duplicate sweep is harmless, a sweep
clearing a backlog holds the desks back for a bounded time, and stopping lets a job in
flight finish."""

from __future__ import annotations

import asyncio


async def test_repeated_sweeps_are_harmless(harness):
    """A scheduler firing twice (or two replicas sweeping) produces one expiry and one audit event."""
    rid = (await harness.propose()).json()["id"]
    harness.clock.advance(harness.settings.request_ttl_s + 1)
    results = await asyncio.gather(harness.broker.scheduler.sweep(), harness.broker.scheduler.sweep(),
                                   harness.life.expire(rid))
    assert (await harness.life.get(rid)).status == "expired"
    s = harness.broker.store
    import orjson

    events = [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]
    # The sweep writes one ``requests.expired`` per batch; a lone expire writes ``request.expired``.
    expiries = [e for e in events if e["type"] == "request.expired" and e["request_id"] == rid]
    expiries += [r for e in events if e["type"] == "requests.expired" for r in e["data"]["requests"] if r["request_id"] == rid]
    assert len(expiries) == 1, (events, results)


async def test_desks_wait_while_the_sweep_works_through_a_backlog(harness):
    """Revoking comes first: while a sweep clears a backlog (full batches), the outbox holds its
    deliveries, at most a bounded time; the messages follow once the grants are ended."""
    from broker import scheduler as sched

    s = harness.broker.scheduler
    seen = []
    real = harness.life.expire_due

    async def spy(ids):
        seen.append(s.not_revoking.is_set())
        return await real(ids)

    harness.life.expire_due = spy
    old_batch, sched.SWEEP_BATCH = sched.SWEEP_BATCH, 2
    try:
        for _ in range(3):
            await harness.propose()
        await harness.broker.outbox.drain()
        harness.clock.advance(harness.settings.request_ttl_s + 1)
        assert await s.sweep() == 3
    finally:
        sched.SWEEP_BATCH = old_batch
    assert seen == [False, False]  # both batches ran with the desks held
    assert not s.not_revoking.is_set()  # a storm: still held after a sweep that cleared a batch or more
    assert await s.sweep() == 0
    assert s.not_revoking.is_set()  # released by the first sweep that finds less than a batch

    # The outbox side: a held delivery waits for the release (or its bound), then goes out.
    outbox = harness.broker.outbox
    outbox.yield_to = held = asyncio.Event()  # (not the scheduler's: its background sweeps set that)
    rid = (await harness.propose()).json()["id"]
    await asyncio.sleep(0.3)
    assert not [r for k, r, _ in harness.notifier.sent if r == rid and k == "post"]
    held.set()
    await outbox.drain(5)
    assert [r for k, r, _ in harness.notifier.sent if r == rid and k == "post"] == [rid]


async def test_stop_lets_a_job_in_flight_finish_before_redis_closes(harness):
    """A sweep in flight when the broker stops finishes first: it holds Redis connections
    that shutdown is about to close (otherwise it opens a new one that nobody closes)."""
    s = harness.broker.scheduler
    done = []

    async def slow_sweep(max_batches: int = 200, **_) -> int:
        await asyncio.sleep(0.3)
        done.append(await s.store.redis.ping())
        return 0

    s.sweep = slow_sweep
    job = asyncio.create_task(s._sweep_job())
    await asyncio.sleep(0.05)
    await s.stop()
    assert done and set(done) == {True} and job.done()  # the background sweep job may have run it too
