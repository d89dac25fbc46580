"""Issue 21, item 5: every Redis failure is a retryable 503 on the agent API, never a 500.

A fault-injecting TCP proxy (tests/support/tcp_proxy.py) stands between the broker and the real
Redis: it cuts every connection, or drops connections at random points of the traffic.
"""

from __future__ import annotations

import random
import pytest

from broker.clock import ManualClock
from tests.support.harness import Harness, make_settings, write_agents
from tests.support.tcp_proxy import TcpProxy

READ = dict(action="read", target="staging/payments-api", duration_s=300)


@pytest.fixture
async def faulty(tmp_path, redis_url, prefix, redis):
    """A broker whose every Redis connection (hot-path line, pool, pub/sub) passes the proxy."""
    proxy = await TcpProxy(redis_url, seed=21).start()
    settings = make_settings(tmp_path, proxy.url(), prefix)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    try:
        yield h, proxy
    finally:
        proxy.restore()
        await h.stop()
        await proxy.stop()


def retryable(r) -> bool:
    return (r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
            and int(r.headers["retry-after"]) >= 1)


async def test_every_agent_call_is_a_503_with_retry_after_while_redis_is_away(faulty):
    """Issue 21.5 (a Redis failure during an idempotent proposal returned 500): with Redis cut off,
    each agent API call answers 503 problem+json with Retry-After; once Redis is back the same
    idempotent proposal creates exactly one request."""
    h, proxy = faulty
    rid, token = None, None
    rid = (await h.propose("reader-bot", **READ)).json()["id"]
    token = (await h.collect(rid, "reader-bot")).json()["access_token"]
    pending = (await h.propose()).json()["id"]

    proxy.cut()
    calls = {
        "propose": lambda: h.propose("reader-bot", **READ),
        "propose idempotent": lambda: h.propose("reader-bot", headers={"Idempotency-Key": "k-21-5"}, **READ),
        "status": lambda: h.status(pending),
        "long poll": lambda: h.status(pending, wait=1),
        "collect": lambda: h.collect(rid, "reader-bot"),
        "complete": lambda: h.complete(rid, "reader-bot"),
        "withdraw": lambda: h.client.delete(f"/v1/escalations/{pending}", headers=h.auth("deploy-bot")),
        "introspect": lambda: h.introspect(token),
    }
    for name, call in calls.items():
        r = await call()
        assert retryable(r), (name, r.status_code, r.headers, r.text)

    proxy.restore()
    for _ in range(50):  # the connections come back on their own
        r = await h.propose("reader-bot", headers={"Idempotency-Key": "k-21-5"}, **READ)
        if r.status_code != 503:
            break
    assert r.status_code == 201, r.text
    again = await h.propose("reader-bot", headers={"Idempotency-Key": "k-21-5"}, **READ)
    assert again.json()["id"] == r.json()["id"]
    assert (await h.status(pending)).json()["status"] == "pending"  # the refused withdrawal changed nothing


async def test_connections_dropped_at_random_points_never_give_a_500(faulty):
    """Issue 21.5: connections dropped at random points of the traffic (mid-command, mid-reply)
    give 503s or successes, never a 500; afterwards every request that was created is readable."""
    h, proxy = faulty
    rng = random.Random(5)
    created: list[str] = []
    proxy.drop_chance = 0.05
    seen: dict[int, int] = {}
    for i in range(120):
        op = rng.choice(["propose", "status", "collect"]) if created else "propose"
        if op == "propose":
            r = await h.propose("reader-bot", headers={"Idempotency-Key": f"chaos-{i}"}, **READ)
            if r.status_code == 201:
                created.append(r.json()["id"])
        elif op == "status":
            r = await h.status(rng.choice(created), "reader-bot")
        else:
            r = await h.collect(rng.choice(created), "reader-bot")
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500 or retryable(r), (op, r.status_code, r.text)
    assert proxy.dropped > 0 and seen.get(503, 0) > 0, seen  # the faults did happen
    proxy.restore()
    for rid in created:
        for _ in range(50):
            r = await h.status(rid, "reader-bot")
            if r.status_code != 503:
                break
        assert r.status_code == 200 and r.json()["status"] in {"approved", "active"}, r.text
