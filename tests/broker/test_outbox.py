"""The outbox (``broker/outbox.py``) delivers every committed change to the desks, at least
once and by one replica, retrying only the desk that failed."""

from __future__ import annotations

import asyncio

import orjson

from broker.notify import LoggingNotifier, MessageRef


class FlakyNotifier(LoggingNotifier):
    """Fails the first ``failures`` calls, then records like the logging notifier."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def post_proposal(self, notice):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("chat API down")
        await super().post_proposal(notice)
        return [MessageRef(self.name, "#approvals", f"ts-{notice.request.id}")]

    async def update(self, notice):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("chat API down")
        await super().update(notice)


async def test_every_change_reaches_the_desk_in_order(harness):
    """Post, approvals, approval, collection and completion each reach the notifier."""
    rid = (await harness.propose()).json()["id"]
    await harness.broker.outbox.drain()
    await harness.approve(rid, "bob")
    await harness.approve(rid, "erin")
    await harness.collect(rid)
    await harness.complete(rid)
    await harness.broker.outbox.drain()
    events = [(kind, what) for kind, r, what in harness.notifier.sent if r == rid]
    assert events[0][0] == "post"
    assert [w for k, w in events[1:]] == ["approval", "approved", "collected", "completed"]
    req = await harness.life.get(rid)
    assert req.messages == [{"transport": "log", "destination": "log", "ref": rid, "extra": {}}]


async def test_a_grant_policy_gave_at_once_troubles_no_desk_until_it_ends_early(harness):
    """Nobody was shown an auto-granted request, so its collection and completion queue no
    notification (the audit log has both); a revocation still reaches the desks (its owner
    hears of it)."""
    rid = (await harness.propose("reader-bot", action="read", target="staging/payments-api")).json()["id"]
    await harness.collect(rid, "reader-bot")
    await harness.complete(rid, "reader-bot")
    other = (await harness.propose("reader-bot", action="read", target="staging/payments-api")).json()["id"]
    await harness.collect(other, "reader-bot")
    await harness.life.revoke(other, by="carol", reason="enough")
    await harness.broker.outbox.drain()
    assert [(k, w) for k, r, w in harness.notifier.sent if r == rid] == []
    assert [(k, w) for k, r, w in harness.notifier.sent if r == other] == [("update", "revoked")]
    s = harness.broker.store
    types = [orjson.loads(f[b"event"])["type"] for _, f in await s.redis.xrange(s.audit_stream)]
    assert types.count("token.collected") == 2 and types.count("grant.completed") == 1


async def test_change_during_posting_is_shown(harness):
    """An approval that lands while the proposal is being posted is rendered right after."""
    rid = (await harness.propose()).json()["id"]
    await harness.approve(rid, "bob")
    await harness.broker.outbox.drain()
    last = [what for kind, r, what in harness.notifier.sent if r == rid][-1]
    assert last in ("approval", "changed")


async def test_desk_failure_is_retried_and_request_not_lost(harness):
    """A chat API failure while posting is retried; the request stays pending and visible meanwhile."""
    flaky = FlakyNotifier(failures=2)
    harness.broker.lifecycle.notifiers.append(flaky)
    rid = (await harness.propose()).json()["id"]
    assert (await harness.status(rid)).json()["status"] == "pending"
    await harness.broker.outbox.drain(timeout=15)
    assert ("post", rid, "pending") in flaky.sent
    req = await harness.life.get(rid)
    assert {m["transport"] for m in req.messages} == {"log", "flaky"}
    # The log desk posted on the first try and was not asked to post again.
    assert [e for e in harness.notifier.sent if e[0] == "post" and e[1] == rid] == [("post", rid, "pending")]


async def test_change_made_elsewhere_is_delivered_by_the_serving_broker(harness):
    """An approval made by an operator process without desks is delivered by the broker that serves."""
    from broker.app import build, shutdown
    import redis.asyncio as aioredis

    rid = (await harness.propose()).json()["id"]
    tool = await build(harness.settings, redis=aioredis.from_url(harness.settings.redis_url), notifiers=[], desks=[],
                       clock=harness.clock, start_background=False)
    try:
        await tool.lifecycle.approve(rid, tool.directory.approver("bob"), channel="cli")
    finally:
        await shutdown(tool)
    await harness.broker.outbox.drain()
    assert ("update", rid, "approval") in harness.notifier.sent


async def test_entries_of_a_dead_consumer_are_claimed(harness):
    """At least once: an entry taken by a consumer that died is claimed and delivered by another."""
    from broker.outbox import GROUP, Outbox

    s = harness.broker.store
    await harness.broker.outbox.stop()
    rid = (await harness.propose()).json()["id"]
    # A consumer that reads the entry and dies before acknowledging it.
    await s.redis.xreadgroup(GROUP, "dead-replica", {s.outbox: ">"}, count=10)
    delivered = []

    async def handler(kind, request_id, only=None):
        delivered.append((kind, request_id))

    other = Outbox(s.redis, s.outbox, "live-replica", handler, claim_idle_ms=50)
    await other.start()
    try:
        await asyncio.sleep(0.1)
        await other.drain(timeout=10)
    finally:
        await other.stop()
    assert ("proposed", rid) in delivered


async def test_only_the_failing_desk_is_retried(harness):
    """A desk that failed is retried on its own; the desks that were told are not told twice."""
    flaky = FlakyNotifier(failures=0)
    harness.broker.lifecycle.notifiers.append(flaky)
    rid = (await harness.propose()).json()["id"]
    await harness.broker.outbox.drain(timeout=15)
    flaky.failures = 1
    await harness.approve(rid, "bob")
    await harness.broker.outbox.drain(timeout=15)
    assert [e for e in harness.notifier.sent if e[0] == "update" and e[1] == rid] == [("update", rid, "approval")]
    assert ("update", rid, "approval") in flaky.sent


async def test_a_desk_that_keeps_failing_is_recorded(harness):
    """After every retry, a desk that could not be told is recorded in the audit log."""
    import orjson

    flaky = FlakyNotifier(failures=100)
    harness.broker.lifecycle.notifiers.append(flaky)
    harness.broker.outbox.max_attempts = 2
    rid = (await harness.propose()).json()["id"]
    await harness.broker.outbox.drain(timeout=15)
    s = harness.broker.store
    kinds = [orjson.loads(f[b"event"])["type"] for _, f in await s.redis.xrange(s.audit_stream)]
    assert "notification.failed" in kinds
    assert (await harness.life.get(rid)).status == "pending"


async def test_restarts_leave_no_consumers_behind_and_pending_entries_stay(harness, monkeypatch):
    """Issue 21, item 5 ("every start leaves a consumer in the outbox group forever"): a broker
    that stops with nothing pending leaves the group; the consumer of a broker that died is
    removed once it has been silent long enough and holds nothing, and one that still holds an
    entry is never removed (its entry would be lost with it)."""
    import broker.outbox as outbox_module
    from broker.outbox import GROUP, Outbox

    s = harness.broker.store

    async def consumers():
        return {(c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): c["pending"]
                for c in await s.redis.xinfo_consumers(s.outbox, GROUP)}

    async def handler(kind, request_id, only=None):
        pass

    await harness.broker.outbox.stop()
    for n in range(3):  # three restarts of a broker, each delivering something
        await harness.propose()
        other = Outbox(s.redis, s.outbox, f"restarted-{n}", handler)
        await other.start()
        await other.drain(timeout=10)  # it has read (and so joined the group) and acknowledged
        assert (await consumers())[f"restarted-{n}"] == 0
        await other.stop()
        assert f"restarted-{n}" not in await consumers()

    # Two brokers that died: one with nothing pending, one holding an entry.
    await harness.propose()
    await s.redis.xreadgroup(GROUP, "died-empty", {s.outbox: ">"}, count=10)
    await s.redis.xack(s.outbox, GROUP, *[e[0] for e in (await s.redis.xrange(s.outbox))])
    await harness.propose()
    await s.redis.xreadgroup(GROUP, "died-holding", {s.outbox: ">"}, count=10)
    assert (await consumers())["died-holding"] >= 1
    live = Outbox(s.redis, s.outbox, "live", handler)
    monkeypatch.setattr(outbox_module, "DEAD_CONSUMER_IDLE_MS", 1_000_000)
    assert await live.prune_dead() == []  # not silent long enough
    await asyncio.sleep(0.05)
    monkeypatch.setattr(outbox_module, "DEAD_CONSUMER_IDLE_MS", 10)
    assert await live.prune_dead() == ["died-empty"]
    assert "died-holding" in await consumers()
