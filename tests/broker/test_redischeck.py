"""The broker refuses a Redis that may evict keys (docs/production.md, "Redis"): evicted
request, replay-guard or audit keys would be lost silently, so unknown or evicting means no
start (fail closed)."""

import pytest
import redis.asyncio as aioredis

from broker.app import build, shutdown
from broker.errors import ConfigError
from broker.redischeck import eviction_problem
from tests.support.harness import make_settings, write_agents
from tests.support.redis_server import RedisServer, free_port, redis_server_binary


@pytest.mark.parametrize(
    ("memory", "refused"),
    [
        ({"maxmemory_policy": "noeviction", "maxmemory": 0}, False),
        ({"maxmemory_policy": "noeviction", "maxmemory": 1 << 30}, False),
        # Without a memory limit Redis never evicts, whatever the policy says.
        ({"maxmemory_policy": "allkeys-lru", "maxmemory": 0}, False),
        ({"maxmemory_policy": "volatile-lru", "maxmemory": 1 << 30}, True),
        ({"maxmemory_policy": "allkeys-random", "maxmemory": 1}, True),
        ({"maxmemory_policy": "volatile-ttl", "maxmemory": "garbage"}, True),
        ({"maxmemory": 0}, True),  # the policy not reported: unknown means refuse
    ],
)
def test_an_evicting_or_unknown_policy_is_a_problem(memory, refused):
    problem = eviction_problem(memory)
    assert (problem is not None) is refused
    if refused and "maxmemory_policy" in memory:
        assert memory["maxmemory_policy"] in problem and "noeviction" in problem


async def test_build_refuses_a_redis_that_evicts_and_starts_on_one_that_does_not(tmp_path, prefix):
    """A managed Redis's usual default (volatile-lru with a limit) refuses start-up with the
    setting to change; the same server set to noeviction starts."""
    server = RedisServer(redis_server_binary(), port=free_port(), appendonly=False).start()
    admin = aioredis.from_url(server.url)
    try:
        settings = make_settings(tmp_path, server.url, prefix)
        write_agents(settings.agents_file)
        await admin.config_set("maxmemory", "64mb")
        await admin.config_set("maxmemory-policy", "volatile-lru")
        with pytest.raises(ConfigError, match="volatile-lru.*noeviction"):
            await build(settings, desks=[], start_background=False)
        await admin.config_set("maxmemory-policy", "noeviction")
        broker = await build(settings, desks=[], start_background=False)
        await shutdown(broker)
    finally:
        await admin.aclose()
        server.stop()
