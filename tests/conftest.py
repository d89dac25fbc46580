"""Shared fixtures: a real Redis for every test, isolated by key prefix.

The Redis at ``REDIS_URL`` is used when set (CI on this machine kind sets none, but
127.0.0.1:6379 is running); otherwise the test session starts its own ``redis-server``.
No fake Redis anywhere.
"""

from __future__ import annotations

import os
import secrets

import pytest
import redis.asyncio as aioredis

from tests.support.redis_server import RedisServer, redis_server_binary

_server: RedisServer | None = None


def _redis_url() -> str:
    global _server
    url = os.environ.get("REDIS_URL") or os.environ.get("JITGATE_TEST_REDIS_URL")
    if url:
        return url
    if _server is None:
        _server = RedisServer(redis_server_binary())
        _server.start()
    return _server.url


def pytest_sessionfinish(session, exitstatus):
    if _server is not None:
        _server.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis the tests use."""
    return _redis_url()


@pytest.fixture
def prefix() -> str:
    """A key prefix (and pub/sub channel prefix) private to one test."""
    return f"jgtest:{secrets.token_hex(6)}:"


@pytest.fixture
async def redis(redis_url, prefix):
    """An async Redis client; every key under the test's prefix is deleted afterwards."""
    client = aioredis.from_url(redis_url, decode_responses=False)
    yield client
    async for key in client.scan_iter(match=prefix + "*", count=1000):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
async def line(redis_url):
    """The broker's multiplexed connection (broker/redisline.py) to the same Redis."""
    from broker.redisline import RedisLine

    conn = RedisLine(redis_url)
    yield conn
    await conn.aclose()


@pytest.fixture
async def harness(tmp_path, redis_url, prefix, redis):
    """A running broker on the test prefix, with test agents, approvers and policies."""
    from broker.clock import ManualClock
    from tests.support.harness import Harness, make_settings, write_agents

    settings = make_settings(tmp_path, redis_url, prefix)
    keys = write_agents(settings.agents_file)
    h = Harness(settings, keys, ManualClock())
    await h.start()
    yield h
    await h.stop()
