"""Issue 19, items 5 and 7: the agent's recent history computed once in the core from Redis
indexes, and the approvers' load on /metrics (time to decision per group, requests waiting per
group, proposals absorbed by dedupe, denial memory and the rate limits)."""

from __future__ import annotations

import asyncio
import re

from broker.clock import ManualClock
from tests.support.harness import Harness, make_settings, write_agents


async def _harness(tmp_path, redis_url, prefix, **settings) -> Harness:
    s = make_settings(tmp_path, redis_url, prefix, metrics_public=True, **settings)
    return await Harness(s, write_agents(s.agents_file), ManualClock()).start()


def _value(text: str, metric: str) -> float:
    found = re.search(rf"^{re.escape(metric)} ([0-9.e+]+)$", text, re.M)
    assert found, f"{metric} not in /metrics"
    return float(found.group(1))


async def test_history_counts_requests_grants_denials_and_who_denied(tmp_path, redis_url, prefix):
    """Requirement (issue 19, item 5): the history stored with a proposal counts the agent's last
    24 h (requests, granted, denied with who and why), active grants and waiting requests."""
    h = await _harness(tmp_path, redis_url, prefix)
    try:
        granted = (await h.propose(action="read", target="staging/payments-api")).json()["id"]
        assert (await h.collect(granted)).status_code == 200
        denied = (await h.propose(action="restart")).json()["id"]
        await h.life.deny(denied, h.approver("bob"), channel="slack", reason="wait for the freeze")
        assert (await h.propose(action="db.export")).json()["status"] == "denied"
        waiting = (await h.propose(action="rollback")).json()["id"]
        body = (await h.propose(action="deploy")).json()
        history = (await h.life.get(body["id"])).history
        assert history["requests_24h"] == 4 and history["granted_24h"] == 1 and history["denied_24h"] == 2
        assert history["active_grants"] == 1 and history["waiting"] == 1
        last = history["last_denials"]
        assert [d["by"] for d in last] == ["policy", "bob"] and last[1]["reason"] == "wait for the freeze"
        assert last[1]["request"] == denied and last[1]["action"] == "restart"
        assert (await h.life.history("deploy-bot")).waiting == 2  # now, this one included
        assert waiting
    finally:
        await h.stop()


async def test_metrics_show_time_to_decision_waiting_and_absorbed(tmp_path, redis_url, prefix):
    """Requirement (issue 19, item 7): /metrics has a time-to-decision histogram and a gauge of
    waiting requests per approver group, and counters of what each protection absorbed."""
    h = await _harness(tmp_path, redis_url, prefix, dedupe=True, denial_cooldown_s=600, agent_proposals_per_min=2)
    try:
        first = (await h.propose(action="restart")).json()["id"]
        pending = (await h.propose(action="rollback")).json()["id"]
        assert (await h.propose(action="deploy")).status_code == 429  # rate limit: 2 a minute
        h.clock.advance(45)
        await h.life.deny(first, h.approver("bob"), channel="slack", reason="no")
        assert (await h.propose(action="restart")).json()["status"] == "denied"  # denial memory
        assert (await h.propose(action="rollback")).json()["id"] == pending  # dedupe
        await asyncio.sleep(0)
        text = (await h.client.get("/metrics")).text
        assert _value(text, 'jitgate_time_to_decision_seconds_count{group="sre"}') == 1
        assert _value(text, 'jitgate_time_to_decision_seconds_sum{group="sre"}') == 45
        assert _value(text, 'jitgate_time_to_decision_seconds_bucket{group="sre",le="60.0"}') == 1
        assert _value(text, 'jitgate_open_requests{group="sre"}') == 1
        for which in ("dedupe", "denial_memory", "rate_limit"):
            assert _value(text, f'jitgate_proposals_absorbed_total{{which="{which}"}}') == 1
        await h.life.deny(pending, h.approver("bob"), channel="slack", reason="no")
        text = (await h.client.get("/metrics")).text
        assert _value(text, 'jitgate_open_requests{group="sre"}') == 0
        assert _value(text, 'jitgate_time_to_decision_seconds_count{group="sre"}') == 2
    finally:
        await h.stop()
