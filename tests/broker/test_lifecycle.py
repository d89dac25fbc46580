"""The state machine's rules about who may decide and when (``broker/lifecycle.py``):
reminders and escalation to the backup group, the posture, an approver's pending list and
who may end a grant early."""

from __future__ import annotations

import pytest

from broker.errors import NotApprover


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
