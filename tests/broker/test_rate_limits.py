"""Issue 19, item 4: proposals that would reach people are rate limited per agent and per
target (token buckets in Redis, shared by the replicas). Over the limit the agent gets a 429
problem with Retry-After, nothing is stored and no approver is asked."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from broker.config import Settings
from tests.support.harness import Harness, make_settings, write_agents
from broker.clock import ManualClock


async def _harness(tmp_path, redis_url, prefix, clock=None, keys=None, **limits) -> Harness:
    settings = make_settings(tmp_path, redis_url, prefix, **limits)
    if keys is None or not settings.agents_file.exists():
        keys = write_agents(settings.agents_file)
    return await Harness(settings, keys, clock or ManualClock()).start()


async def _requests(redis, prefix) -> int:
    return len([k async for k in redis.scan_iter(match=f"{prefix}{{req:*")])


async def _until(cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def _asked(h: Harness) -> int:
    """How many approval requests reached the approvers (the notifier's posts)."""
    return sum(1 for s in h.notifier.sent if s[0] != "security")


async def test_an_agent_over_its_limit_gets_429_and_nobody_is_asked(tmp_path, redis_url, prefix, redis):
    """Requirement (issue 19, item 4): an agent retrying in a loop cannot flood the approvers."""
    h = await _harness(tmp_path, redis_url, prefix, agent_proposals_per_min=3, target_proposals_per_min=0)
    try:
        for _ in range(3):
            assert (await h.propose()).status_code == 201
        await _until(lambda: _asked(h) == 3)
        requests = await _requests(redis, prefix)
        last = (await redis.xrevrange(h.broker.store.audit_stream, count=1))[0][0]
        r = await h.propose()
        assert r.status_code == 429
        assert r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert body["type"].endswith("/rate-limited") and body["scope"] == "agent"
        assert "deploy-bot" in body["detail"] and "nobody was asked" in body["detail"]
        assert int(r.headers["Retry-After"]) == 20  # one token a 20 s at 3 a minute
        # Nothing stored: no request, no proposal in the audit log (deliveries of the earlier
        # three may still be recorded).
        assert await _requests(redis, prefix) == requests
        later = await redis.xrange(h.broker.store.audit_stream, min=f"({last.decode()}")
        assert not [e for _, e in later if b"proposal.received" in b"".join(e.values())]
        # Another agent is not held back by deploy-bot's bucket; once its request is posted,
        # the approvers have seen four requests, not five.
        assert (await h.propose("ops-bot")).status_code == 201
        await _until(lambda: _asked(h) >= 4)
        await asyncio.sleep(0.2)
        assert _asked(h) == 4
        # Auto-grants are not rate limited: the policy pre-approved them and nobody is asked.
        for _ in range(5):
            r = await h.propose(action="read", target="staging/orders-db")
            assert r.status_code in (200, 201), r.text
        h.clock.advance(20)  # the bucket refills continuously
        assert (await h.propose()).status_code == 201
        assert (await h.propose()).status_code == 429
        metrics = h.broker.lifecycle.metrics.render()
        assert b'jitgate_proposals_rate_limited_total{scope="agent"} 2.0' in metrics
    finally:
        await h.stop()


async def test_a_target_limit_holds_across_agents_and_replicas(tmp_path, redis_url, prefix, redis):
    """Requirement (issue 19, item 4): the per-target bucket is shared by every agent and by
    every replica (it lives in Redis, not in a process)."""
    clock = ManualClock()
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets:\n  - {id: prod/payments-api, env: prod}\n  - {id: prod/checkout-api, env: prod}\n")
    a = await _harness(tmp_path, redis_url, prefix, clock=clock, agent_proposals_per_min=0, target_proposals_per_min=2,
                       targets_file=targets)
    b = await _harness(tmp_path, redis_url, prefix, clock=clock, keys=a.keys, agent_proposals_per_min=0,
                       key_encryption_key=a.settings.key_encryption_key, targets_file=targets,
                       target_proposals_per_min=2)
    try:
        assert (await a.propose("deploy-bot")).status_code == 201
        assert (await b.propose("ops-bot")).status_code == 201
        r = await b.propose("reader-bot")
        assert r.status_code == 429 and r.json()["scope"] == "target"
        assert "prod/payments-api" in r.json()["detail"]
        assert int(r.headers["Retry-After"]) == 30
        # Another target has its own bucket.
        r = await a.propose("deploy-bot", action="restart", target="prod/checkout-api")
        assert r.status_code == 201 and r.json()["status"] == "pending", r.text
    finally:
        await a.stop()
        await b.stop()


def test_the_limits_default_on_and_zero_turns_them_off():
    base = {"JITGATE_ISSUER": "https://j.example", "JITGATE_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode()}
    s = Settings.from_env(base)
    assert (s.agent_proposals_per_min, s.target_proposals_per_min) == (10, 30)
    s = Settings.from_env({**base, "JITGATE_AGENT_PROPOSALS_PER_MIN": "0", "JITGATE_TARGET_PROPOSALS_PER_MIN": "0"})
    assert (s.agent_proposals_per_min, s.target_proposals_per_min) == (0, 0)


@pytest.mark.parametrize("value", ["-1", "ten"])
def test_a_bad_limit_refuses_start_up(value):
    from broker.errors import ConfigError

    base = {"JITGATE_ISSUER": "https://j.example", "JITGATE_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode()}
    with pytest.raises(ConfigError, match="JITGATE_AGENT_PROPOSALS_PER_MIN"):
        Settings.from_env({**base, "JITGATE_AGENT_PROPOSALS_PER_MIN": value})


async def test_no_more_than_so_many_requests_of_one_agent_wait_for_people(tmp_path, redis_url, prefix, redis):
    """Requirement (issue 19, item 4): no approver channel ever shows more than a configured
    number of open requests from one agent; a decided, withdrawn or approved one frees a place."""
    h = await _harness(tmp_path, redis_url, prefix, max_open_per_agent=2, agent_proposals_per_min=0,
                       target_proposals_per_min=0)
    try:
        first = (await h.propose()).json()["id"]
        second = (await h.propose(action="restart", duration_s=300)).json()["id"]
        r = await h.propose(action="rollback")
        assert r.status_code == 429 and r.json()["scope"] == "open" and int(r.headers["Retry-After"]) > 0
        assert "already has 2 requests waiting" in r.json()["detail"]
        assert (await h.propose("ops-bot", action="rollback")).status_code == 201  # another agent's own count
        assert (await h.client.delete(f"/v1/escalations/{first}", headers=h.auth("deploy-bot"))).status_code == 200
        third = await h.propose(action="rollback")
        assert third.status_code == 201 and third.json()["status"] == "pending"
        assert (await h.propose(action="restart", dataset="x")).status_code == 429  # full again
        await h.approve(second, "bob")  # approved: no longer waiting for people
        r = await h.propose(action="deploy", dataset="orders")
        assert r.status_code == 201 and r.json()["status"] == "pending", r.text
    finally:
        await h.stop()
