"""Wake-ups are published only while a long poll waits on the request (``Store.watch``):
a change nobody waits for costs no broker process a pub/sub message."""

from __future__ import annotations

import asyncio

import pytest


class Listener:
    """The wake-up channel as every broker process hears it."""

    def __init__(self, redis, channel: str) -> None:
        self.redis, self.channel = redis, channel
        self.pubsub = redis.pubsub(ignore_subscribe_messages=True)

    async def __aenter__(self) -> "Listener":
        await self.pubsub.subscribe(self.channel)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.pubsub.aclose()

    async def heard(self) -> list[str]:
        """What was published so far: a marker published now arrives after it (pub/sub keeps order)."""
        await self.redis.publish(self.channel, "-- marker")
        out = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while loop.time() < deadline:
            msg = await self.pubsub.get_message(timeout=0.5)
            if msg is None:
                continue
            text = msg["data"].decode()
            if text == "-- marker":
                return out
            out.extend(text.split("\n"))
        pytest.fail("the marker never arrived")


async def test_an_unwatched_grant_publishes_nothing(harness, redis):
    """An auto-grant collected and completed with nobody long-polling publishes no wake-up."""
    async with Listener(redis, harness.broker.store.channel) as ears:
        r = await harness.propose("reader-bot", action="read", target="staging/payments-api", duration_s=60)
        assert r.json()["status"] == "approved"
        rid = r.json()["id"]
        assert (await harness.collect(rid, "reader-bot")).status_code == 200
        assert (await harness.complete(rid, "reader-bot")).json()["status"] == "completed"
        assert await ears.heard() == []


async def test_a_long_polled_request_publishes_its_changes(harness, redis):
    """While an agent long-polls, each change of its request is published (and wakes the poll)."""
    rid = (await harness.propose()).json()["id"]
    async with Listener(redis, harness.broker.store.channel) as ears:
        await harness.approve(rid, "bob")  # nobody waits yet
        assert await ears.heard() == []
        poll = asyncio.create_task(harness.status(rid, wait=30))
        for _ in range(100):  # until the poll has marked the request
            if await redis.hexists(harness.broker.store.req_key(rid), "watch_until"):
                break
            await asyncio.sleep(0.02)
        await harness.approve(rid, "erin")
        assert (await asyncio.wait_for(poll, 5)).json()["status"] == "approved"
        assert await ears.heard() == [f"{rid} approved"]


async def test_a_watch_never_shortens_another_and_never_creates(harness, redis):
    """A shorter long poll keeps a longer one's mark; watching a missing request writes nothing."""
    store = harness.broker.store
    rid = (await harness.propose()).json()["id"]
    assert (await store.watch(rid, 30)).status == "pending"
    long_mark = int(await redis.hget(store.req_key(rid), "watch_until"))
    await store.watch(rid, 1)
    assert int(await redis.hget(store.req_key(rid), "watch_until")) == long_mark
    now_ms = (await redis.time())[0] * 1000
    assert now_ms + 29_000 < long_mark <= now_ms + 32_000
    missing = "Zz" + rid[2:]
    assert await store.watch(missing, 30) is None
    assert not await redis.exists(store.req_key(missing))


async def test_a_sweep_publishes_only_the_watched_expiries(harness, redis):
    """The batched expiry publishes the requests someone waits on, and only those."""
    store = harness.broker.store
    watched = (await harness.propose()).json()["id"]
    alone = (await harness.propose()).json()["id"]
    await store.watch(watched, 60)
    async with Listener(redis, store.channel) as ears:
        harness.clock.advance(harness.settings.request_ttl_s + 1)
        await harness.life.expire_due([watched, alone])  # the background sweep may have begun: either way
        assert (await harness.life.get(watched)).status == "expired"
        assert (await harness.life.get(alone)).status == "expired"
        assert await ears.heard() == [f"{watched} expired"]
