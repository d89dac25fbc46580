"""The outbox delivers every committed change to the desks, at least once and by one
replica; reminders, escalation to the backup group, posture and approver revocation."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from broker.errors import NotApprover
from broker.notify import LoggingNotifier, MessageRef


class FlakyNotifier(LoggingNotifier):
    """Fails the first ``failures`` calls, then records like the logging notifier."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def post_proposal(self, notice):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("chat API down")
        await super().post_proposal(notice)
        return [MessageRef(self.name, "#approvals", f"ts-{notice.request.id}")]

    async def update(self, notice):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("chat API down")
        await super().update(notice)


async def test_every_change_reaches_the_desk_in_order(harness):
    """Post, approvals, approval, collection and completion each reach the notifier."""
    rid = (await harness.propose()).json()["id"]
    await harness.broker.outbox.drain()
    await harness.approve(rid, "bob")
    await harness.approve(rid, "erin")
    await harness.collect(rid)
    await harness.complete(rid)
    await harness.broker.outbox.drain()
    events = [(kind, what) for kind, r, what in harness.notifier.sent if r == rid]
    assert events[0][0] == "post"
    assert [w for k, w in events[1:]] == ["approval", "approved", "collected", "completed"]
    req = await harness.life.get(rid)
    assert req.messages == [{"transport": "log", "destination": "log", "ref": rid, "extra": {}}]


async def test_a_grant_policy_gave_at_once_troubles_no_desk_until_it_ends_early(harness):
    """Nobody was shown an auto-granted request, so its collection and completion queue no
    notification (the audit log has both); a revocation still reaches the desks (its owner
    hears of it)."""
    rid = (await harness.propose("reader-bot", action="read", target="staging/payments-api")).json()["id"]
    await harness.collect(rid, "reader-bot")
    await harness.complete(rid, "reader-bot")
    other = (await harness.propose("reader-bot", action="read", target="staging/payments-api")).json()["id"]
    await harness.collect(other, "reader-bot")
    await harness.life.revoke(other, by="carol", reason="enough")
    await harness.broker.outbox.drain()
    assert [(k, w) for k, r, w in harness.notifier.sent if r == rid] == []
    assert [(k, w) for k, r, w in harness.notifier.sent if r == other] == [("update", "revoked")]
    s = harness.broker.store
    types = [orjson.loads(f[b"event"])["type"] for _, f in await s.redis.xrange(s.audit_stream)]
    assert types.count("token.collected") == 2 and types.count("grant.completed") == 1


async def test_change_during_posting_is_shown(harness):
    """An approval that lands while the proposal is being posted is rendered right after."""
    rid = (await harness.propose()).json()["id"]
    await harness.approve(rid, "bob")
    await harness.broker.outbox.drain()
    last = [what for kind, r, what in harness.notifier.sent if r == rid][-1]
    assert last in ("approval", "changed")


async def test_desk_failure_is_retried_and_request_not_lost(harness):
    """A chat API failure while posting is retried; the request stays pending and visible meanwhile."""
    flaky = FlakyNotifier(failures=2)
    harness.broker.lifecycle.notifiers.append(flaky)
    rid = (await harness.propose()).json()["id"]
    assert (await harness.status(rid)).json()["status"] == "pending"
    await harness.broker.outbox.drain(timeout=15)
    assert ("post", rid, "pending") in flaky.sent
    req = await harness.life.get(rid)
    assert {m["transport"] for m in req.messages} == {"log", "flaky"}
    # The log desk posted on the first try and was not asked to post again.
    assert [e for e in harness.notifier.sent if e[0] == "post" and e[1] == rid] == [("post", rid, "pending")]


async def test_change_made_elsewhere_is_delivered_by_the_serving_broker(harness):
    """An approval made by an operator process without desks is delivered by the broker that serves."""
    from broker.app import build, shutdown
    import redis.asyncio as aioredis

    rid = (await harness.propose()).json()["id"]
    tool = await build(harness.settings, redis=aioredis.from_url(harness.settings.redis_url), notifiers=[], desks=[],
                       clock=harness.clock, start_background=False)
    try:
        await tool.lifecycle.approve(rid, tool.directory.approver("bob"), channel="cli")
    finally:
        await shutdown(tool)
    await harness.broker.outbox.drain()
    assert ("update", rid, "approval") in harness.notifier.sent


async def test_entries_of_a_dead_consumer_are_claimed(harness):
    """At least once: an entry taken by a consumer that died is claimed and delivered by another."""
    from broker.outbox import GROUP, Outbox

    s = harness.broker.store
    await harness.broker.outbox.stop()
    rid = (await harness.propose()).json()["id"]
    # A consumer that reads the entry and dies before acknowledging it.
    await s.redis.xreadgroup(GROUP, "dead-replica", {s.outbox: ">"}, count=10)
    delivered = []

    async def handler(kind, request_id, only=None):
        delivered.append((kind, request_id))

    other = Outbox(s.redis, s.outbox, "live-replica", handler, claim_idle_ms=50)
    await other.start()
    try:
        await asyncio.sleep(0.1)
        await other.drain(timeout=10)
    finally:
        await other.stop()
    assert ("proposed", rid) in delivered


async def test_reminders_then_escalation_to_backup_group(harness, monkeypatch):
    """Nobody answers: reminders go out, then the request escalates to the policy's backup group, who may then decide."""
    import dataclasses

    life = harness.life
    life.settings = dataclasses.replace(life.settings, reminder_interval_s=60, escalate_after_s=120)
    # prod-restart-backup: 1 approval from sre, backup group on-call (fixture policy).
    rid = (await harness.propose("ops-bot", action="rollback", target="prod/payments-api")).json()["id"]
    req = await life.get(rid)
    assert req.decision["backup_group"] == "on-call"
    await harness.broker.store.redis.zadd(harness.broker.store.reminders, {rid: int(harness.clock.now() * 1000) + 60_000})
    harness.clock.advance(61)
    assert await life.remind_due() == 1
    harness.clock.advance(60)
    assert await life.remind_due() == 1
    await harness.broker.outbox.drain()
    sent = [e for e in harness.notifier.sent if e[1] == rid]
    assert ("remind", rid, "pending") in sent and ("remind", rid, "on-call") in sent
    assert (await life.get(rid)).escalated
    # carol is only in security; frank is only on-call: allowed after escalation.
    approved = await life.approve(rid, harness.approver("frank"), channel="cli")
    assert approved.status == "approved"


async def test_installation_backup_group_where_the_policy_names_none(harness):
    """JITGATE_BACKUP_GROUP (issue 3 item 6: backup group "per policy annotation or config"):
    used where the policy names no @backup_group, recorded in the decision and the audit log;
    a policy's own backup group wins, and the approver group is never its own backup."""
    import base64
    import dataclasses
    import os

    import orjson

    from broker.config import Settings

    base = {"JITGATE_ISSUER": "https://jitgate.test", "JITGATE_KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode()}
    assert Settings.from_env({**base, "JITGATE_BACKUP_GROUP": " on-call "}).backup_group == "on-call"
    assert Settings.from_env({**base, "JITGATE_BACKUP_GROUP": ""}).backup_group is None
    life = harness.life
    life.settings = dataclasses.replace(life.settings, backup_group="on-call", escalate_after_s=120, reminder_interval_s=60)
    rid = (await harness.propose()).json()["id"]  # prod-deploy: 2 from sre, no @backup_group
    req = await life.get(rid)
    assert req.decision["backup_group"] == "on-call"
    s = harness.broker.store
    decisions = [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]
    assert [e["data"]["backup_group"] for e in decisions if e["type"] == "policy.decision" and e["request_id"] == rid] == ["on-call"]
    with pytest.raises(NotApprover):
        await life.approve(rid, harness.approver("frank"), channel="cli")  # not before the escalation
    await s.redis.zadd(s.reminders, {rid: int(harness.clock.now() * 1000)})
    harness.clock.advance(121)
    assert await life.remind_due() == 1
    assert (await life.get(rid)).escalated
    assert (await life.approve(rid, harness.approver("frank"), channel="cli")).approvers == ["frank"]

    life.settings = dataclasses.replace(life.settings, backup_group="sre")  # the approver group itself: no backup
    assert (await life.get((await harness.propose()).json()["id"])).decision["backup_group"] is None
    life.settings = dataclasses.replace(life.settings, backup_group="security")  # the policy's own wins
    rid = (await harness.propose("ops-bot", action="rollback", target="prod/payments-api")).json()["id"]
    assert (await life.get(rid)).decision["backup_group"] == "on-call"


async def test_posture_is_security_only_audited_and_reaches_policy(harness):
    """Only the security group changes the posture; policy decisions see it at once."""
    life = harness.life
    with pytest.raises(NotApprover):
        await life.set_posture("incident", harness.approver("bob"), channel="cli")
    await life.set_posture("incident", harness.approver("carol"), channel="cli")
    assert await life.posture() == "incident"
    r = await harness.propose("reader-bot", action="read", target="staging/payments-api")
    assert r.json()["status"] == "denied" and "incident-freeze" in r.json()["decision"]["policies"]


async def test_pending_for_lists_what_an_approver_may_decide(harness):
    """An approver's list holds requests they may decide and have not approved yet."""
    rid = (await harness.propose()).json()["id"]
    assert [r.id for r in await harness.life.pending_for(harness.approver("bob"))] == [rid]
    assert await harness.life.pending_for(harness.approver("alice")) == []  # owns deploy-bot
    assert await harness.life.pending_for(harness.approver("carol")) == []  # not sre
    await harness.approve(rid, "bob")
    assert await harness.life.pending_for(harness.approver("bob")) == []


async def test_revoke_as_approver_owner_or_security_only(harness):
    """A grant may be ended early by its approvers' group, the agent's owner or security; not by others."""
    rid = (await harness.propose("reader-bot", action="read", target="staging/payments-api")).json()["id"]
    await harness.collect(rid, "reader-bot")
    with pytest.raises(NotApprover):
        await harness.life.revoke_as(rid, harness.approver("bob"), reason="x", channel="cli")
    req = await harness.life.revoke_as(rid, harness.approver("carol"), reason="suspicious", channel="cli")
    assert req.status == "revoked" and req.closed_by == "carol"


async def test_only_the_failing_desk_is_retried(harness):
    """A desk that failed is retried on its own; the desks that were told are not told twice."""
    flaky = FlakyNotifier(failures=0)
    harness.broker.lifecycle.notifiers.append(flaky)
    rid = (await harness.propose()).json()["id"]
    await harness.broker.outbox.drain(timeout=15)
    flaky.failures = 1
    await harness.approve(rid, "bob")
    await harness.broker.outbox.drain(timeout=15)
    assert [e for e in harness.notifier.sent if e[0] == "update" and e[1] == rid] == [("update", rid, "approval")]
    assert ("update", rid, "approval") in flaky.sent


async def test_a_desk_that_keeps_failing_is_recorded(harness):
    """After every retry, a desk that could not be told is recorded in the audit log."""
    import orjson

    flaky = FlakyNotifier(failures=100)
    harness.broker.lifecycle.notifiers.append(flaky)
    harness.broker.outbox.max_attempts = 2
    rid = (await harness.propose()).json()["id"]
    await harness.broker.outbox.drain(timeout=15)
    s = harness.broker.store
    kinds = [orjson.loads(f[b"event"])["type"] for _, f in await s.redis.xrange(s.audit_stream)]
    assert "notification.failed" in kinds
    assert (await harness.life.get(rid)).status == "pending"
