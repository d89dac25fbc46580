"""Reporting the resulting action from the agent side (issue 18, item 6): the async client, the
sync client and `jitgate agent complete --outcome` against a live broker over real HTTP."""

from __future__ import annotations

import asyncio

import pytest

from broker.client import InvalidRequest, SyncClient, TaskOutcome
from tests.client.test_cli import READ as CLI_READ, agent

READ = dict(action="read", target="staging/payments-api", justification="check config drift", duration=120)


async def test_client_completes_with_an_outcome(live):
    """Client.complete(grant, outcome) sends the outcome; the escalation it returns carries it,
    and the policy set hash that decided."""
    client = live.client("reader-bot")
    grant = await client.escalate(**READ)
    await client.collect(grant)
    esc = await client.complete(grant, TaskOutcome("success", "config drift checked: none",
                                                   ("https://ci.example.com/run/1",)))
    assert esc.status == "completed"
    assert esc.outcome == {"status": "success", "summary": "config drift checked: none",
                           "evidence": ["https://ci.example.com/run/1"]}
    assert esc.policy_set_hash == live.broker.gate.policy_set_hash
    assert (await live.broker.lifecycle.get(grant.request_id)).outcome == esc.outcome


async def test_client_outcome_as_a_dict_and_a_refusal(live):
    """A dict works the same; an outcome the broker refuses raises InvalidRequest and leaves the
    grant active."""
    client = live.client("reader-bot")
    grant = await client.escalate(**READ)
    await client.collect(grant)
    with pytest.raises(InvalidRequest, match="https"):
        await client.complete(grant, {"status": "failure", "evidence": ["ftp://x.example/log"]})
    assert (await live.broker.lifecycle.get(grant.request_id)).status == "active"
    esc = await client.complete(grant, {"status": "failure", "summary": "timed out"})
    assert esc.outcome == {"status": "failure", "summary": "timed out"}


async def test_sync_client_completes_with_an_outcome(live):
    """SyncClient.complete takes the same outcome."""
    def flow():
        with SyncClient(live.url, "reader-bot", live.keys["reader-bot"]) as client:
            grant = client.escalate(**READ)
            client.collect(grant)
            return client.complete(grant, TaskOutcome("failure", "could not reach the host"))

    esc = await asyncio.to_thread(flow)
    assert esc.outcome == {"status": "failure", "summary": "could not reach the host"}


async def test_agent_cli_complete_with_an_outcome(live, tmp_path):
    """`jitgate agent complete ID --outcome … --summary … --evidence URL` records the outcome;
    --summary without --outcome is refused before anything is sent."""
    code, out, err = await agent(live, tmp_path, "request", *CLI_READ, "--wait", "10")
    rid = out.strip()
    assert code == 0, err
    code, _, err = await agent(live, tmp_path, "complete", rid, "--summary", "orphan")
    assert code != 0 and "--outcome" in err
    assert (await live.broker.lifecycle.get(rid)).status == "approved"
    code, _, err = await agent(live, tmp_path, "complete", rid, "--outcome", "success", "--summary", "no drift",
                               "--evidence", "https://ci.example.com/run/2", "--evidence", "https://ci.example.com/run/3")
    assert code == 0, err
    req = await live.broker.lifecycle.get(rid)
    assert req.status == "completed"
    assert req.outcome == {"status": "success", "summary": "no drift",
                           "evidence": ["https://ci.example.com/run/2", "https://ci.example.com/run/3"]}
