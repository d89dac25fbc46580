"""Say-once markers: a desk tells a person or a thread something at most once per event,
however often the outbox delivers the same change (it delivers at least once).

``send()`` runs unless the marker says it ran already; the marker is written only after
``send()`` returned, so a failed send is tried again by the next delivery, and a send that
succeeded is never repeated. Markers expire after ``ttl_s`` (longer than the thing they
mark stays open)."""

from __future__ import annotations

from typing import Awaitable, Callable


async def say_once(redis, key: str, send: Callable[[], Awaitable[object]], *, ttl_s: int,
                   field: str | None = None) -> bool:
    """Call ``send()`` unless the marker (the Redis string ``key``, or the field ``field`` of the
    hash ``key``) is set; set it after. True when ``send()`` ran."""
    if await (redis.hexists(key, field) if field is not None else redis.exists(key)):
        return False  # a retried delivery: say nothing twice
    await send()
    async with redis.pipeline(transaction=True) as pipe:
        if field is not None:
            pipe.hset(key, field, "1")
            pipe.expire(key, ttl_s)
        else:
            pipe.set(key, b"1", ex=ttl_s)
        await pipe.execute()
    return True
