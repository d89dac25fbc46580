"""broker/rules.py, the one home of the rules every desk and the core share (issue 15): pure
functions, checked here without Redis; tests/bot/*/test_agreement.py check the desks ask them."""

from __future__ import annotations

import pytest

from broker import rules
from broker.directory import Approver, Directory
from broker.model import ACTIVE, APPROVED, PENDING, Proposal, Request


def person(pid: str, *groups: str, slack: str | None = None) -> Approver:
    return Approver(pid, frozenset(groups), slack=slack)


DIRECTORY = Directory([
    person("alice", "sre", slack="U0ALICE"), person("bob", "sre"), person("erin", "sre"),
    person("olive", "on-call"), person("carol", "security"), person("dave", "platform"),
])


def request(*, duration_s: int = 1800, max_s: int | None = 900, approvals=(), owner: str = "alice",
            escalated: bool = False, chain=(), status: str = PENDING, **kw) -> Request:
    decision = {"outcome": "require_approval", "approver_group": "sre", "backup_group": "on-call",
                "approvals_required": 2, "max_duration_s": max_s, "policies": ["prod-deploy"]}
    return Request(id="r1", agent="deploy-bot", status=status,
                   proposal=Proposal("deploy", "prod/payments-api", "fix", duration_s),
                   proposal_sha256="0" * 64, decision=decision, created_at=0.0, owner=owner,
                   approvals=[{"approver": a, **({"duration_s": d} if d else {})} for a, d in approvals],
                   escalated=escalated, delegation_chain=list(chain), **kw)


def test_who_may_decide_is_the_group_then_the_backup_once_escalated_never_an_owner():
    """Issue 15 "who may decide a request (group, backup after escalation, never the owner, once)"."""
    req = request(approvals=[("bob", None)])
    assert [a.id for a in rules.deciders(req, DIRECTORY)] == ["erin"]  # alice owns the agent, bob counted
    assert rules.why_not_decider(DIRECTORY.approver("olive"), req) == "only members of 'sre' may decide this request"
    assert rules.why_not_decider(DIRECTORY.approver("alice"), req) == \
        "alice owns agent deploy-bot and may not approve its requests"
    escalated = request(approvals=[("bob", None)], escalated=True)
    assert [a.id for a in rules.deciders(escalated, DIRECTORY)] == ["erin", "olive"]
    assert [a.id for a in rules.deciders(escalated, DIRECTORY, groups=["on-call"])] == ["olive"]
    assert rules.deciders(request(status=APPROVED), DIRECTORY) == []


def test_an_owner_along_the_chain_or_under_an_alias_may_not_decide():
    """DESIGN "never the agent's owner", extended to every agent along the chain of intent, under any alias
    (``slack:<id>``); a link recorded without its owner is completed from the agents file (``owner_of``)."""
    alias_owner = request(owner="slack:U0ALICE")
    assert "alice owns agent deploy-bot" in rules.why_not_decider(DIRECTORY.approver("alice"), alias_owner)
    chain = [{"delegator": "planner-bot", "delegate": "deploy-bot", "delegator_owner": "erin"},
             {"delegator": "old-bot", "delegate": "planner-bot"}]
    req = request(owner="dave", chain=chain)
    assert "erin owns planner-bot in this request's delegation chain" in rules.why_not_decider(
        DIRECTORY.approver("erin"), req)
    assert rules.why_not_decider(DIRECTORY.approver("bob"), req) is None
    owner_of = {"old-bot": "bob"}.get
    assert "bob owns old-bot" in rules.why_not_decider(DIRECTORY.approver("bob"), req, owner_of)
    assert [a.id for a in rules.deciders(req, DIRECTORY, owner_of=owner_of)] == ["alice"]


def test_already_approved_counts_a_person_once_under_any_alias():
    """Issue 15 "once": an approval recorded under ``slack:<id>`` is the same person's."""
    req = request(owner="dave", approvals=[("slack:U0ALICE", None)])
    assert rules.already_approved(DIRECTORY.approver("alice"), req)
    assert not rules.may_still_decide(DIRECTORY.approver("alice"), req)
    assert rules.may_still_decide(DIRECTORY.approver("bob"), req)


def test_who_may_revoke_adds_security_the_owner_and_the_engineer():
    """``revoke_as``: the deciding groups, security, the agent's owner, or the break-glass engineer."""
    req = request(status=ACTIVE, owner="dave")
    assert rules.why_not_revoker(DIRECTORY.approver("carol"), req, "security") is None
    assert rules.why_not_revoker(DIRECTORY.approver("dave"), req, "security") is None
    assert rules.why_not_revoker(DIRECTORY.approver("olive"), req, "security") == \
        "only members of 'security or sre' or the agent's owner may revoke this grant"
    assert rules.why_not_revoker(DIRECTORY.approver("olive"), request(status=ACTIVE, escalated=True), "security") is None
    assert rules.why_not_revoker(person("frank"), request(break_glass=True, engineer="frank"), "security") is None


@pytest.mark.parametrize(("duration_s", "max_s", "approvals", "broker_max", "cap"), [
    (1800, 900, (), 3600, 900),  # the policy's maximum
    (600, 900, (), 3600, 600),  # what was asked
    (1800, None, (), 1200, 1200),  # the broker's maximum
    (1800, 900, (("bob", 300),), 3600, 300),  # an approver's shorter choice
    (1800, 900, (("bob", None),), 3600, 900),
])
def test_the_grant_cap_is_the_smallest_limit(duration_s, max_s, approvals, broker_max, cap):
    """Issue 15 "the grant duration cap": one function for the lifecycle and every desk's offered choices."""
    req = request(duration_s=duration_s, max_s=max_s, approvals=approvals)
    assert rules.approvable_max(req, broker_max) == cap
    assert rules.grant_cap(req.proposal, req.decision, [], broker_max) == min(duration_s, max_s or broker_max, broker_max)


def test_postures_and_expiry_reasons():
    """Issue 15 "postures normal/elevated/incident" (unknown means the strictest) and the expiry reasons."""
    assert rules.POSTURES == ("normal", "elevated", "incident")
    assert [rules.posture_or_strictest(v) for v in (None, "", "elevated", "bogus")] == \
        ["normal", "normal", "elevated", "incident"]
    assert rules.expiry_reason(PENDING) == "no decision before the deadline"
    assert (rules.expiry_event(ACTIVE), rules.expiry_event(APPROVED)) == ("grant.expired", "request.expired")


def test_a_break_glass_grant_suspends_only_once_the_core_recorded_it_for_that_grant():
    """Issue 15 "is this break-glass grant suspended?": the suspension record names the grant; overdue is not enough."""
    bg = request(break_glass=True, engineer="frank", review_due=10.0)
    assert not rules.suspended_by(bg, None)
    assert not rules.suspended_by(bg, {"request_id": "another"})
    assert rules.suspended_by(bg, {"request_id": "r1"})
    reviewed = request(break_glass=True, engineer="frank", reviewed_by="carol")
    assert not rules.suspended_by(reviewed, {"request_id": "r1"})
