"""A broker restart (a new broker on the same Redis) in the middle of each flow loses
nothing, and the start-up sweep handles every deadline that passed while it was down."""

from __future__ import annotations

import asyncio


async def test_restart_between_approvals(harness):
    """Approvals before and after a restart both count."""
    rid = (await harness.propose()).json()["id"]
    await harness.approve(rid, "bob")
    await harness.restart()
    req = await harness.approve(rid, "erin")
    assert req.status == "approved" and req.approvers == ["bob", "erin"]


async def test_restart_catches_up_overdue_deadlines(harness):
    """Deadlines that passed while the broker was down are handled by the start-up sweep."""
    pending = (await harness.propose()).json()["id"]
    approved = (await harness.propose("reader-bot", action="read", target="staging/payments-api")).json()["id"]
    active = (await harness.propose("reader-bot", action="read", target="staging/payments-api", duration_s=60)).json()["id"]
    token = (await harness.collect(active, "reader-bot")).json()["access_token"]
    await harness.stop()
    harness.clock.advance(harness.settings.request_ttl_s + 5)
    await harness.start()  # the start-up sweep runs before serving
    for rid, agent in ((pending, "deploy-bot"), (approved, "reader-bot"), (active, "reader-bot")):
        assert (await harness.status(rid, agent)).json()["status"] == "expired", rid
    assert (await harness.introspect(token)).json() == {"active": False}


async def test_restart_keeps_active_grant_and_keys(harness):
    """An active grant stays active across a restart and its token still verifies (keys live in Redis)."""
    rid = (await harness.propose("reader-bot", action="read", target="staging/payments-api", duration_s=300)).json()["id"]
    token = (await harness.collect(rid, "reader-bot")).json()["access_token"]
    await harness.restart()
    assert (await harness.introspect(token)).json()["active"] is True
    assert (await harness.complete(rid, "reader-bot")).json()["status"] == "completed"


async def test_restart_during_long_poll_wait(harness):
    """An agent that re-polls after a restart sees a decision made on the new broker."""
    rid = (await harness.propose()).json()["id"]
    await harness.approve(rid, "bob")
    await harness.restart()
    poll = asyncio.create_task(harness.status(rid, wait=10))
    await asyncio.sleep(0.1)
    await harness.approve(rid, "erin")
    assert (await asyncio.wait_for(poll, 5)).json()["status"] == "approved"


async def test_expire_does_not_undo_a_fresh_approval(harness):
    """A stale sweep cannot expire a request whose deadline moved (approved just before)."""
    rid = (await harness.propose()).json()["id"]
    harness.clock.advance(10)
    await harness.approve(rid, "bob")
    await harness.approve(rid, "erin")  # approved: new collection deadline
    out = await harness.broker.store.transition(rid, ["approved"], "expired", {}, [], int(harness.clock.now() * 1000), due_check=True)
    assert out.result == "not_due"
    assert (await harness.life.get(rid)).status == "approved"
