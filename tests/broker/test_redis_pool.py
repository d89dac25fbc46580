"""The broker's Redis pool waits for a free connection under load instead of failing."""

from __future__ import annotations

import asyncio

from broker.redisconn import connect


async def test_pool_waits_instead_of_failing(redis_url):
    """More concurrent blocking calls than connections all succeed (they queue), none raise."""
    client = connect(redis_url, max_connections=4)
    try:
        results = await asyncio.gather(*(client.execute_command("BLPOP", f"jgtest:pool:none:{i}", 0.05)
                                         for i in range(20)))
        assert results == [None] * 20
    finally:
        await client.aclose()
