"""Issue 16, item 5: the kill switch, disabled agents and suspended approvers, through the
core and the HTTP API (the CLI, Slack, Teams and the console have their own tests)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson
import pytest
import yaml

from broker.errors import InvalidRequest, NotApprover
from broker.killswitch import Selector


async def _events(h) -> list[dict]:
    s = h.broker.store
    return [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]


async def _told(h, wanted: set[tuple[str, str]]) -> None:
    """Wait (10 s at most) until the desks were told each (request id, kind): one update per request."""
    deadline = time.monotonic() + 10
    while not wanted <= {(rid, kind) for what, rid, kind in h.notifier.sent if what == "update"}:
        assert time.monotonic() < deadline, "the desks were not told of every request"
        await asyncio.sleep(0.05)


async def _active(h, agent: str = "reader-bot") -> tuple[str, str]:
    """An auto-granted read on staging, collected: (request id, access token)."""
    rid = (await h.propose(agent, action="read", target="staging/payments-api", duration_s=300)).json()["id"]
    r = await h.collect(rid, agent)
    assert r.status_code == 200, r.text
    return rid, r.json()["access_token"]


async def test_kill_switch_by_agent_revokes_grants_and_denies_pending_with_one_audit_entry(harness):
    """Issue 16.5 "every matching pending request is denied and every active grant revoked in one batched step,
    with one audit entry naming all of them": the agent's active grant is revoked (inactive at introspection),
    its pending request denied with the reason the agent reads, another agent's request untouched, and the
    audit log holds one killswitch.batch entry and one killswitch.engaged entry naming both."""
    h = harness
    active, token = await _active(h)
    pending = (await h.propose("reader-bot", action="deploy", target="prod/payments-api")).json()["id"]
    other = (await h.propose("deploy-bot")).json()["id"]
    result = await h.life.kill_switch(Selector.of("agent", "reader-bot"), h.approver("carol"),
                                      reason="agent compromised (INC-9)", channel="cli")
    assert result.revoked == [active] and result.denied == [pending]
    assert (await h.life.get(active)).status == "revoked"
    denied = await h.life.get(pending)
    assert denied.status == "denied" and denied.denial["reason"] == "agent compromised (INC-9)"
    assert denied.denial["kill_switch"] == result.id
    assert (await h.life.get(other)).status == "pending"
    assert (await h.introspect(token)).json() == {"active": False}
    body = (await h.status(pending, "reader-bot")).json()
    assert body["status"] == "denied" and body["denial"]["reason"] == "agent compromised (INC-9)"
    events = await _events(h)
    batch = [e for e in events if e["type"] == "killswitch.batch"]
    engaged = [e for e in events if e["type"] == "killswitch.engaged"]
    assert len(batch) == 1 and len(engaged) == 1
    assert {r["request_id"]: r["status"] for r in batch[0]["data"]["requests"]} == {active: "revoked", pending: "denied"}
    assert engaged[0]["data"]["revoked"] == [active] and engaged[0]["data"]["denied"] == [pending]
    assert engaged[0]["actor"]["approver"] == "carol" and engaged[0]["data"]["selector"] == {"scope": "agent",
                                                                                             "value": "reader-bot"}
    # Each request gets the outbox entry a single revoke or deny gives it (desks, signal receivers).
    await _told(h, {(active, "revoked"), (pending, "denied")})


async def test_kill_switch_batches_keep_one_entry_per_batch_and_outbox_per_grant(harness):
    """Issue 16.5: with batches of 2, five grants take three script calls (three killswitch.batch entries), every
    grant gets its own `revoked` outbox entry, and killswitch.engaged names all five; the chain still verifies."""
    from broker.audit import verify

    h = harness
    rids = [(await _active(h))[0] for _ in range(5)]
    result = await h.life.kill_switch(Selector.of("all"), h.approver("carol"), reason="drill", channel="cli", batch=2)
    assert sorted(result.revoked) == sorted(rids)
    events = await _events(h)
    assert sum(1 for e in events if e["type"] == "killswitch.batch") == 3
    (engaged,) = [e for e in events if e["type"] == "killswitch.engaged"]
    assert sorted(engaged["data"]["revoked"]) == sorted(rids)
    await _told(h, {(rid, "revoked") for rid in rids})
    assert [(await h.life.get(r)).status for r in rids] == ["revoked"] * 5
    s = h.broker.store
    assert (await verify(s.redis, s.audit_stream, s.audit_head)).ok


async def test_kill_switch_by_owner_and_target(harness):
    """Issue 16.5 `--owner PERSON` ends what the person's agents hold; `--target T` what is open on that target."""
    h = harness
    dave_grant, _ = await _active(h, "reader-bot")  # reader-bot is dave's
    alice_pending = (await h.propose("deploy-bot")).json()["id"]  # deploy-bot is alice's, prod
    bob_pending = (await h.propose("ops-bot", action="restart")).json()["id"]  # ops-bot is bob's, prod
    r = await h.life.kill_switch(Selector.of("owner", "dave"), h.approver("carol"), reason="dave left", channel="cli")
    assert r.revoked == [dave_grant] and r.denied == []
    r = await h.life.kill_switch(Selector.of("target", "prod/payments-api"), h.approver("carol"), reason="freeze",
                                 channel="cli")
    assert sorted(r.denied) == sorted([alice_pending, bob_pending])


async def test_only_the_security_group_may_pull_the_kill_switch_and_a_reason_is_required(harness):
    """Issue 16.5 "the same for the security group": an sre member is refused and nothing changes; no reason is a 400."""
    h = harness
    rid, _ = await _active(h)
    with pytest.raises(NotApprover):
        await h.life.kill_switch(Selector.of("all"), h.approver("bob"), reason="x", channel="cli")
    with pytest.raises(InvalidRequest):
        await h.life.kill_switch(Selector.of("all"), h.approver("carol"), reason="  ", channel="cli")
    with pytest.raises(InvalidRequest):
        Selector.of("agent", "")
    with pytest.raises(InvalidRequest):
        Selector.of("everything")
    assert (await h.life.get(rid)).status == "active"
    assert not [e for e in await _events(h) if e["type"].startswith("killswitch")]


async def test_kill_switch_notice_reaches_the_security_channel_once(harness):
    """Issue 16.5 "and the desks told": the desks get one security notice naming the pull, besides each request's update."""
    h = harness
    await _active(h)
    await h.life.kill_switch(Selector.of("all"), h.approver("carol"), reason="drill", channel="cli")
    deadline = time.monotonic() + 10
    while not [s for s in h.notifier.sent if s[0] == "security"]:
        assert time.monotonic() < deadline, "the security channel was not told"
        await asyncio.sleep(0.05)
    (said,) = [s for s in h.notifier.sent if s[0] == "security"]
    assert "kill switch" in said[2] and "1 grant(s) revoked" in said[2] and "carol" in said[2]


def _set_agent(path: Path, agent_id: str, **fields) -> None:
    doc = yaml.safe_load(path.read_text())
    for a in doc["agents"]:
        if a["id"] == agent_id:
            a.update(fields)
    path.write_text(yaml.safe_dump(doc))
    later = time.time() + 5
    os.utime(path, (later, later))


async def test_disabled_agent_is_refused_with_agent_disabled_and_its_grant_revoked_within_a_second(harness):
    """Issue 16.5 "An agent marked disabled: true in agents.yaml is refused at once and its active grants revoked
    within a second of the file reload": after the reload the API answers 403 problem agent-disabled, the token
    is inactive at introspection and the grant is revoked (actor registry) well within a second."""
    h = harness
    rid, token = await _active(h)
    _set_agent(h.settings.agents_file, "reader-bot", disabled=True)
    h.broker.maybe_reload()  # what the scheduler's reload job does every 2 s
    reloaded = time.monotonic()
    r = await h.propose("reader-bot", action="read", target="staging/payments-api")
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("/agent-disabled")
    assert (await h.introspect(token)).json() == {"active": False}
    while (await h.life.get(rid)).status != "revoked":
        assert time.monotonic() - reloaded < 1.0, "the disabled agent's grant was not revoked within a second"
        await asyncio.sleep(0.01)
    assert (await h.life.get(rid)).closed_by == "registry"
    # Enabled again: it may ask again.
    _set_agent(h.settings.agents_file, "reader-bot", disabled=False)
    h.broker.maybe_reload()
    assert (await h.propose("reader-bot", action="read", target="staging/payments-api")).status_code == 201


async def test_suspended_approver_cannot_approve(harness, tmp_path):
    """Issue 16.5 "A suspended person cannot approve": bob (sre) marked suspended: true is refused, and is no
    longer among the people who may decide."""
    import dataclasses

    h = harness
    rid = (await h.propose("deploy-bot")).json()["id"]
    approvers = yaml.safe_load(Path(h.settings.approvers_file).read_text())
    for a in approvers["approvers"]:
        if a["id"] == "bob":
            a["suspended"] = True
    path = tmp_path / "approvers.yaml"
    path.write_text(yaml.safe_dump(approvers))
    from broker.directory import Directory

    d = Directory.load(path, Path(h.settings.targets_file))
    bob = d.approver("bob")
    assert bob is not None and bob.suspended
    with pytest.raises(NotApprover, match="suspended"):
        await h.life.approve(rid, bob, channel="slack")
    with pytest.raises(NotApprover, match="suspended"):
        await h.life.deny(rid, bob, channel="slack", reason="no")
    assert not h.life.may_still_decide(bob, await h.life.get(rid))
    assert h.life.may_still_decide(dataclasses.replace(bob, suspended=False), await h.life.get(rid))
    with pytest.raises(NotApprover, match="suspended"):
        await h.life.kill_switch(Selector.of("all"), dataclasses.replace(d.approver("carol"), suspended=True),
                                 reason="x", channel="cli")


def test_suspended_must_be_a_boolean(tmp_path):
    """Fail closed: `suspended: "yes"` is a configuration error, never read as false."""
    from broker.directory import Directory
    from broker.errors import ConfigError

    path = tmp_path / "approvers.yaml"
    path.write_text("approvers:\n  - id: bob\n    groups: [sre]\n    suspended: 'yes'\n")
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets: []\n")
    with pytest.raises(ConfigError, match="suspended"):
        Directory.load(path, targets)


async def test_a_request_that_moves_while_the_switch_runs_is_read_again_and_left_as_it_closed(harness):
    """Issue 16.5, no partial or wrong state change: a grant the agent completes between the kill switch's read and
    its write makes the script refuse the whole batch (nothing written); the batch is read again, the completed
    grant is left completed, the others are revoked, and the batch entry names only those."""
    h = harness
    rids = [(await _active(h))[0] for _ in range(3)]
    store = h.broker.store
    real = store.revoke_batch
    calls = []

    async def racing(items, events, **kw):
        calls.append([i[0] for i in items])
        if len(calls) == 1:
            assert (await h.complete(rids[1], "reader-bot")).status_code == 200  # the agent finishes meanwhile
        return await real(items, events, **kw)

    store.revoke_batch = racing
    try:
        result = await h.life.kill_switch(Selector.of("agent", "reader-bot"), h.approver("carol"), reason="race",
                                          channel="cli")
    finally:
        store.revoke_batch = real
    assert len(calls) == 2 and sorted(calls[0]) == sorted(rids)
    assert sorted(result.revoked) == sorted([rids[0], rids[2]])
    assert [(await h.life.get(r)).status for r in rids] == ["revoked", "completed", "revoked"]
    (batch,) = [e for e in await _events(h) if e["type"] == "killswitch.batch"]
    assert sorted(r["request_id"] for r in batch["data"]["requests"]) == sorted([rids[0], rids[2]])


async def test_kill_switch_by_owner_ends_a_break_glass_grant_of_that_engineer(harness):
    """Issue 16.5 `--owner PERSON`: a break-glass grant the person holds for themselves is revoked too (its
    token inactive at introspection), marked break-glass in the batch entry; the security notice is still said."""
    h = harness
    g = await h.broker.breakglass.grant(h.approver("alice"), subject="me", action="rollback",
                                        target="prod/payments-api", duration_s=600, reason="outage", channel="cli")
    assert (await h.introspect(g.token.access_token)).json()["active"] is True
    result = await h.life.kill_switch(Selector.of("owner", "alice"), h.approver("carol"), reason="alice's laptop stolen",
                                      channel="cli")
    assert result.revoked == [g.request.id] and result.break_glass == {g.request.id}
    assert (await h.introspect(g.token.access_token)).json() == {"active": False}
    (batch,) = [e for e in await _events(h) if e["type"] == "killswitch.batch"]
    assert batch["data"]["requests"][0]["break_glass"] is True
    deadline = time.monotonic() + 10
    while not [s for s in h.notifier.sent if s[0] == "security" and "kill switch" in s[2]]:
        assert time.monotonic() < deadline, "the security channel was not told of the kill switch"
        await asyncio.sleep(0.05)
