"""Issue 19, item 1: a proposal identical in its task (action, target, tool, dataset, arguments,
delegation) to one of the agent's pending requests joins it: the answer is the existing request,
no second message is posted, and a new justification or new evidence is added to the request
and shown on its message."""

from __future__ import annotations

import asyncio

import pytest

from broker.clock import ManualClock
from tests.support.harness import Harness, make_settings, write_agents


async def _settle(h) -> None:
    await asyncio.sleep(0.05)
    await h.broker.outbox.drain()


@pytest.fixture
async def harness(tmp_path, redis_url, prefix, redis):
    """The usual test broker, with dedupe on (the default outside the tests)."""
    h = Harness(make_settings(tmp_path, redis_url, prefix, dedupe=True), {}, ManualClock())
    h.keys = write_agents(h.settings.agents_file)
    await h.start()
    yield h
    await h.stop()


async def test_the_same_task_joins_the_pending_request(harness, redis):
    """Requirement (issue 19, item 1): 25 identical retries ask people once."""
    h = harness
    first = await h.propose()
    assert first.status_code == 201
    rid = first.json()["id"]
    await _settle(h)
    for _ in range(25):
        r = await h.propose()
        assert r.status_code == 200 and r.json()["id"] == rid
    await _settle(h)
    assert [s for s in h.notifier.sent if s[0] == "post"] == [("post", rid, "pending")]
    req = await h.life.get(rid)
    assert req.asked_again == 25 and req.repeats == []  # nothing new was said: nothing to show
    assert not [s for s in h.notifier.sent if s[0] == "update" and s[2] == "asked_again"]
    assert (await h.status(rid)).json()["asked_again"] == 25
    entries = [b"".join(f.values()) for _, f in await redis.xrange(h.broker.store.audit_stream)]
    assert sum(1 for e in entries if b"proposal.repeated" in e) == 25


async def test_a_new_justification_is_added_and_shown(harness):
    h = harness
    rid = (await h.propose()).json()["id"]
    r = await h.propose(justification="error rate now 30%, customers affected",
                        evidence=[{"kind": "log", "title": "error rate", "excerpt": "5xx 30%"}])
    assert r.status_code == 200 and r.json()["id"] == rid
    await _settle(h)
    req = await h.life.get(rid)
    assert req.repeats[-1]["justification"] == "error rate now 30%, customers affected"
    assert req.repeats[-1]["evidence"] == [{"kind": "log", "title": "error rate", "excerpt": "5xx 30%"}]
    assert ("update", rid, "asked_again") in h.notifier.sent
    assert req.proposal.justification == "roll out fix for INC-42"  # what people approve is unchanged


async def test_another_task_agent_or_a_decided_request_is_a_new_request(harness):
    h = harness
    rid = (await h.propose()).json()["id"]
    assert (await h.propose(action="rollback")).json()["id"] != rid
    assert (await h.propose(tool="helm")).json()["id"] != rid
    assert (await h.propose("ops-bot")).json()["id"] != rid
    await h.approve(rid, "bob")
    await h.approve(rid, "erin")
    again = await h.propose()
    assert again.status_code == 201 and again.json()["id"] != rid and again.json()["status"] == "pending"


async def test_dedupe_off_asks_people_again(tmp_path, redis_url, prefix, redis):
    """JITGATE_DEDUPE=false: every proposal is a request of its own."""
    h = Harness(make_settings(tmp_path, redis_url, prefix, dedupe=False), {}, ManualClock())
    h.keys = write_agents(h.settings.agents_file)
    await h.start()
    try:
        assert (await h.propose()).json()["id"] != (await h.propose()).json()["id"]
    finally:
        await h.stop()


async def test_other_arguments_are_another_task(harness):
    """Issue 16 item 4 meets issue 19 item 1: the arguments are part of the task."""
    h = harness
    refund = {"action": "deploy", "arguments": {"replicas": 3}}
    rid = (await h.propose(**refund)).json()["id"]
    assert (await h.propose(**refund)).json()["id"] == rid
    assert (await h.propose(action="deploy", arguments={"replicas": 4})).json()["id"] != rid
