"""Mixed quorums (issue 16, item 3): ``@approvals_from("sre:1,security:1")`` asks for
approvals from several groups; each approval counts for one group still short, each person
once, never the agent's owner."""

from __future__ import annotations

import time

from broker.context import build_context

import asyncio
import shutil
from pathlib import Path

import pytest

from broker.clock import ManualClock
from broker.errors import NotApprover, PolicyError
from broker.policy import Decision, PolicyGate
from broker.directory import Directory
from tests.support.harness import FIXTURES, Harness, make_settings, write_agents

QUORUM_POLICY = """
@id("prod-scale-quorum") @approvals_from("sre:1,security:1") @max_duration("600")
permit(principal, action == Jitgate::Action::"scale", resource in Jitgate::Env::"prod");

@id("prod-read-quorum") @approvals_from("sre:1,dba:1")
permit(principal, action == Jitgate::Action::"read", resource in Jitgate::Env::"prod");
"""

APPROVERS = """
approvers:
  - {id: alice, groups: [sre, on-call]}
  - {id: bob, groups: [sre]}
  - {id: carol, groups: [security]}
  - {id: erin, groups: [sre]}
  - {id: grace, groups: [sre, security]}
  - {id: hank, groups: [security]}
  - {id: ivan, groups: [dba]}
"""


def quorum_dirs(tmp_path: Path, extra: str = QUORUM_POLICY) -> tuple[Path, Path]:
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(FIXTURES / "policies" / "test.cedar", policies / "test.cedar")
    (policies / "quorum.cedar").write_text(extra)
    approvers = tmp_path / "approvers.yaml"
    approvers.write_text(APPROVERS)
    return policies, approvers


@pytest.fixture
async def qh(tmp_path, redis_url, prefix, redis):
    policies, approvers = quorum_dirs(tmp_path)
    settings = make_settings(tmp_path, redis_url, prefix, policy_dir=policies, approvers_file=approvers)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    yield h
    await h.stop()


async def _scale(h) -> str:
    r = await h.propose(action="scale", duration_s=300)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_the_decision_names_each_group_and_its_count(qh):
    """The escalation's decision carries the per-group requirement (API contract extended)."""
    rid = await _scale(qh)
    body = (await qh.status(rid)).json()
    d = body["decision"]
    assert d["approvals_from"] == {"sre": 1, "security": 1}
    assert d["approvals_required"] == 2 and body["approvals_required"] == 2 and d["approver_group"] == "sre"
    assert d["reason"] == "needs 1 approval from sre and 1 from security; decided by policy prod-scale-quorum"


async def test_one_from_each_group_approves_and_a_second_from_a_full_group_is_refused(qh):
    """Two people from sre do not make "1 from sre and 1 from security": the second is refused."""
    rid = await _scale(qh)
    after = await qh.approve(rid, "bob")
    assert after.status == "pending" and after.approvals[0]["group"] == "sre"
    with pytest.raises(NotApprover, match="still missing: 1 approval from security"):
        await qh.approve(rid, "erin")
    assert [r.id for r in await qh.life.pending_for(qh.approver("erin"))] == []
    assert [r.id for r in await qh.life.pending_for(qh.approver("carol"))] == [rid]
    done = await qh.approve(rid, "carol")
    assert done.status == "approved"
    body = (await qh.status(rid)).json()
    assert [(a["approver"], a["group"]) for a in body["approvals"]] == [("bob", "sre"), ("carol", "security")]
    assert (await qh.collect(rid)).status_code == 200


async def test_someone_in_both_groups_counts_once_for_one_group(qh):
    """An approver in sre and security counts once, for one group; their second click is a no-op."""
    rid = await _scale(qh)
    after = await qh.approve(rid, "grace")
    assert after.status == "pending" and [a["group"] for a in after.approvals] == ["sre"]
    again = await qh.approve(rid, "grace")
    assert again.status == "pending" and len(again.approvals) == 1
    with pytest.raises(NotApprover):
        await qh.approve(rid, "bob")  # sre is full
    assert (await qh.approve(rid, "hank")).status == "approved"


async def test_the_owner_may_not_fill_any_group(qh):
    """The agent's owner (alice, in sre) never approves their own agent's request."""
    rid = await _scale(qh)
    with pytest.raises(NotApprover, match="owns agent deploy-bot"):
        await qh.approve(rid, "alice")


async def test_two_from_one_group_at_once_count_once(qh):
    """Racing approvals for the same group: the script counts one; the other is refused, nothing else written."""
    rid = await _scale(qh)
    results = await asyncio.gather(qh.approve(rid, "bob"), qh.approve(rid, "erin"), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["NotApprover", "Request"]
    req = await qh.life.get(rid)
    assert req.status == "pending" and len(req.approvals) == 1 and req.approvals[0]["group"] == "sre"
    assert (await qh.approve(rid, "carol")).status == "approved"


async def test_every_group_of_the_quorum_may_end_the_grant_early(qh):
    """A member of any group the quorum named may revoke the grant, as the approver group's members may."""
    r = await qh.propose(action="read", duration_s=300)
    rid = r.json()["id"]
    await qh.approve(rid, "bob")
    assert (await qh.approve(rid, "ivan")).status == "approved"
    after = await qh.life.revoke_as(rid, qh.approver("ivan"), reason="done early", channel="cli")
    assert after.status == "revoked" and after.closed_by == "ivan"


async def test_someone_in_two_groups_takes_the_place_fewest_others_could_fill(tmp_path, redis_url, prefix, redis):
    """Judy is in sre and dba, and nobody else is in dba: her approval counts for dba (the
    policy lists sre first), so an SRE can complete the quorum instead of nobody."""
    policies, approvers = quorum_dirs(tmp_path)
    approvers.write_text("approvers:\n  - {id: bob, groups: [sre]}\n  - {id: erin, groups: [sre]}\n"
                         "  - {id: judy, groups: [sre, dba]}\n")
    settings = make_settings(tmp_path, redis_url, prefix, policy_dir=policies, approvers_file=approvers)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    try:
        rid = (await h.propose(action="read", duration_s=300)).json()["id"]
        after = await h.approve(rid, "judy")
        assert [a["group"] for a in after.approvals] == ["dba"]
        assert (await h.approve(rid, "bob")).status == "approved"
    finally:
        await h.stop()


# ------------------------------------------------------------------ the annotation


def _load(tmp_path: Path, text: str) -> PolicyGate:
    d = tmp_path / "p"
    d.mkdir(exist_ok=True)
    (d / "a.cedar").write_text(text)
    return PolicyGate.load(d, Directory(), [])


@pytest.mark.parametrize("raw", ["", "sre", "sre:0", "sre:1,", "sre:1, security:1", "sre:1,sre:1", "sre:x",
                                 "sre:11", "sre:6,security:5", "bad group:1"])
def test_malformed_approvals_from_refuses_to_load(tmp_path, raw):
    """@approvals_from is read strictly, like the other annotations: a typo refuses the policy set."""
    with pytest.raises(PolicyError, match="approvals_from"):
        _load(tmp_path, f'@id("q") @approvals_from("{raw}") permit(principal, action, resource);')


@pytest.mark.parametrize("other", ['@approvals("2")', '@approver_group("sre")'])
def test_approvals_from_does_not_mix_with_approvals_or_approver_group(tmp_path, other):
    """One policy says its quorum one way: with @approvals or @approver_group as well, one would silently lose."""
    with pytest.raises(PolicyError, match="already sets the count and the groups"):
        _load(tmp_path, f'@id("q") @approvals_from("sre:1") {other} permit(principal, action, resource);')


def _decide(gate: PolicyGate) -> Decision:
    ctx = build_context(confidence=90, duration_s=60, posture="normal", evidence_count=1, delegation_depth=0,
                        now=time.time())
    return gate.decide(agent_id="a", action="x", target="t", context=ctx)


def test_quorums_of_several_permits_combine_group_by_group(tmp_path):
    """Several permits decide: every group any names, each with the highest count asked of it."""
    gate = _load(tmp_path, """
@id("a") @approvals_from("security:1,sre:1") permit(principal, action, resource);
@id("b") @approvals("2") @approver_group("sre") permit(principal, action, resource);
""")
    d = _decide(gate)
    assert d.approvals_from == (("security", 1), ("sre", 2)) and d.approvals_required == 3
    assert d.approver_group == "security"


def test_a_permit_asking_approvals_from_nobody_leaves_nobody_able_to_approve(tmp_path):
    """A permit that needs approvals but names no group, beside a quorum: nobody may approve (fail closed)."""
    d = _decide(_load(tmp_path, """
@id("a") @approvals_from("security:1,sre:1") permit(principal, action, resource);
@id("b") @approvals("3") permit(principal, action, resource);
"""))
    assert d.outcome == "require_approval" and d.approver_group is None and d.approvals_from is None


def test_decisions_recorded_before_mixed_quorums_still_read():
    """A stored decision without approvals_from reads as before; a malformed one is refused."""
    old = {"outcome": "require_approval", "policies": ["p"], "approvals_required": 2, "approver_group": "sre",
           "max_duration_s": None, "channel": None, "backup_group": None, "reason": "r"}
    assert Decision.from_dict(old).approvals_from is None
    new = Decision.from_dict({**old, "approver_group": "sre", "approvals_from": {"sre": 1, "security": 1}})
    assert new.approvals_from == (("sre", 1), ("security", 1)) and Decision.from_dict(new.to_dict()) == new
    with pytest.raises(PolicyError):
        Decision.from_dict({**old, "approvals_from": {"sre": 1}})  # counts must add up to approvals_required
