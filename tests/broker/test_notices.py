"""broker/notices.py, the one home of notification fan-out (issue 15, notice port): every kind
gets the audience the core resolves once, reaches the Notifier method it calls for, and an
outbox entry queued in the wire format of before still delivers."""

from __future__ import annotations

import pytest

from broker import rules
from broker.directory import Approver, Directory
from broker.model import APPROVED, PENDING, Proposal, Request
from broker.notices import audience
from broker.notify import Kind, LoggingNotifier, Notice

DIRECTORY = Directory([
    Approver("alice", frozenset({"sre"})), Approver("bob", frozenset({"sre"})), Approver("erin", frozenset({"sre"})),
    Approver("olive", frozenset({"on-call"})), Approver("frank", frozenset({"on-call", "sre"})),
    Approver("carol", frozenset({"security"})), Approver("sam", frozenset({"security", "on-call"})),
])

ORDINARY = [k for k in Kind if not k.break_glass and not k.credential and not k.audit
            and k not in (Kind.KILL_SWITCH, Kind.POLICY_REVIEW_DUE, Kind.ALTERNATE_PATHS)]
AUDIT = [k for k in Kind if k.audit]
BREAK_GLASS = [k for k in Kind if k.break_glass]
CREDENTIAL = [k for k in Kind if k.credential]


def request(*, escalated: bool = False, approvals=(), status: str = PENDING, **kw) -> Request:
    decision = {"outcome": "require_approval", "approver_group": "sre", "backup_group": "on-call",
                "approvals_required": 2, "policies": ["prod-deploy"]}
    return Request(id="r1", agent="deploy-bot", status=status, proposal=Proposal("deploy", "prod/payments-api", "fix", 600),
                   proposal_sha256="0" * 64, decision=decision, created_at=0.0, owner="alice",
                   approvals=[{"approver": a} for a in approvals], escalated=escalated, **kw)


def ids(people) -> list[str]:
    return [a.id for a in people]


def test_the_wire_strings_are_the_ones_queued_before():
    """Issue 15 "the kind an enum shared with the Lua scripts": its values are exactly the strings the
    transition scripts and the scheduler queue in the outbox, so entries queued before an upgrade deliver."""
    assert sorted(k.value for k in Kind) == sorted([
        "proposed", "changed", "approval", "approved", "denied", "cancelled", "collected", "completed", "revoked",
        "expired", "remind", "escalate", "bg.granted", "bg.review_reminder", "bg.suspended", "bg.reviewed",
        "bg.reinstated", "cred.revocation_pending", "cred.orphan", "killswitch", "asked_again", "audit.failing",
        "audit.recovered", "policy.review_due", "alternate_paths"])
    assert Kind.parse("bg.granted") is Kind.BG_GRANTED and Kind.parse("no.such.kind") is None
    assert f"thread:ts:event:{Kind.APPROVED}" == "thread:ts:event:approved"  # desks' say-once markers unchanged


@pytest.mark.parametrize("kind", [k for k in ORDINARY if k is not Kind.ESCALATE])
def test_an_ordinary_notice_is_for_who_may_still_decide(kind):
    """Issue 15 "the audience resolved once in the core (who may still decide)": the policy's group, never the
    owner, each person once, and the backup group only once escalated (broker.rules.deciders)."""
    req = request(approvals=["bob"])
    who = audience(kind, req, DIRECTORY, security_group="security")
    assert ids(who.deciders) == ["erin", "frank"] == ids(rules.deciders(req, DIRECTORY))
    assert who.decider_groups == ("sre",)
    assert who.bypassed == () and who.security == () and who.bypassed_group is None
    escalated = audience(kind, request(approvals=["bob"], escalated=True), DIRECTORY, security_group="security")
    assert escalated.decider_groups == ("sre", "on-call") and ids(escalated.deciders) == ["erin", "frank", "olive", "sam"]
    assert audience(kind, request(status=APPROVED), DIRECTORY, security_group="security").deciders == ()


def test_an_escalation_is_for_the_backup_group_alone():
    """Issue 3 "escalate to the backup group": the escalation mentions the people who just gained the right."""
    notice = Notice(Kind.ESCALATE, request(escalated=True),
                    audience(Kind.ESCALATE, request(escalated=True), DIRECTORY, security_group="security"))
    assert notice.audience.decider_groups == ("on-call",) and notice.escalated_to == "on-call"
    assert ids(notice.audience.deciders) == ["olive", "frank", "sam"]
    assert Notice(Kind.REMIND, request()).escalated_to is None


@pytest.mark.parametrize("kind", BREAK_GLASS)
def test_a_break_glass_notice_is_for_security_and_who_was_bypassed(kind):
    """Issue 15 "who was bypassed, security": the members of the group whose approval a break-glass bypassed and of
    the security group, never the engineer who broke the glass nor the agent's owner; nobody is asked to decide."""
    req = request(status=APPROVED, approvals=["frank"], break_glass=True, engineer="frank")
    who = audience(kind, req, DIRECTORY, security_group="security", bypassed_group="sre")
    assert ids(who.bypassed) == ["bob", "erin"] and who.bypassed_group == "sre"
    assert ids(who.security) == ["carol", "sam"] and who.security_group == "security"
    assert who.deciders == () and who.decider_groups == ()
    for_themself = audience(kind, req, DIRECTORY, security_group="security", bypassed_group=None)
    assert for_themself.bypassed == () and for_themself.bypassed_group is None


class Recorder(LoggingNotifier):
    """A desk that records which port method each notice reached, and the notice."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Notice]] = []

    async def post_proposal(self, notice):
        self.calls.append(("post_proposal", notice))
        return await super().post_proposal(notice)

    async def update(self, notice):
        self.calls.append(("update", notice))

    async def remind(self, notice):
        self.calls.append(("remind", notice))

    async def alert_security(self, notice):
        self.calls.append(("alert_security", notice))

    async def announce(self, notice):
        self.calls.append(("announce", notice))


CALLS = {Kind.REMIND: ["remind"], Kind.ESCALATE: ["remind"], Kind.BG_GRANTED: ["alert_security", "announce"],
         **{k: ["alert_security"] for k in BREAK_GLASS if k is not Kind.BG_GRANTED}}


async def test_each_kind_reaches_its_port_method_with_the_core_audience(harness):
    """Issue 15 "notification fan-out lives in one module, which builds the Notice": each kind calls the port
    method it asks for, with this desk's message refs and the audience the core resolved."""
    rec = Recorder()
    harness.broker.lifecycle.notifiers.append(rec)
    rid = (await harness.propose("ops-bot", action="rollback", target="prod/payments-api")).json()["id"]
    await harness.broker.outbox.drain()
    notices = harness.broker.lifecycle.notices
    assert [m for m, _ in rec.calls] == ["post_proposal"]
    for kind in ORDINARY:
        if kind is Kind.PROPOSED:
            continue
        rec.calls.clear()
        await notices.deliver(kind.value, rid, {"recorder"})
        ((method, notice),) = rec.calls
        assert method == CALLS.get(kind, ["update"])[0] and notice.kind is kind
        assert [r.transport for r in notice.refs] == ["recorder"]
        assert ids(notice.audience.deciders) == ids(harness.life.deciders(notice.request, groups=list(
            notice.audience.decider_groups)))
    for kind in CREDENTIAL:  # issue 17, item 6: credential events go to the security channel, with the core's text
        rec.calls.clear()
        await notices.deliver(kind.value, rid, {"recorder"})
        ((method, notice),) = rec.calls
        assert method == "alert_security" and notice.kind is kind and notice.text
        assert notice.audience.security_group == "security"
    rec.calls.clear()  # issue 16, item 5: the kill switch's one message goes to the security channel too
    await notices.deliver(Kind.KILL_SWITCH.value, rid, {"recorder"})
    ((method, notice),) = rec.calls
    assert method == "alert_security" and notice.kind is Kind.KILL_SWITCH and "kill switch" in notice.text
    assert notice.audience.security_group == "security"
    for kind in AUDIT:  # issue 18, item 4: audit cannot record / records again, to the security channel
        rec.calls.clear()
        await notices.deliver(kind.value, "audit", {"recorder"})
        ((method, notice),) = rec.calls
        assert method == "alert_security" and notice.kind is kind and "audit log" in notice.text
        assert notice.request.id == "audit" and notice.audience.security_group == "security"
    g = await harness.broker.breakglass.grant(harness.approver("alice"), subject="ops-bot", action="rollback",
                                              target="prod/payments-api", duration_s=600, reason="pods down",
                                              channel="cli")
    await harness.broker.outbox.drain()
    for kind in BREAK_GLASS:
        rec.calls.clear()
        await notices.deliver(kind.value, g.request.id, {"recorder"})
        assert [m for m, _ in rec.calls] == CALLS[kind]
        notice = rec.calls[0][1]
        assert notice.kind is kind and notice.text and notice.audience.security_group == "security"
        assert "alice" not in ids(notice.audience.security) + ids(notice.audience.bypassed)
    assert rec.calls[0][1].audience.bypassed_group == "sre"


async def test_an_outbox_entry_in_the_old_format_still_delivers(harness):
    """Issue 15 "keep the wire strings unchanged so queued outbox entries from before the upgrade still deliver":
    entries written as plain (id, kind) strings, as every broker before the notice port wrote them, reach the desks."""
    rid = (await harness.propose("ops-bot", action="rollback", target="prod/payments-api")).json()["id"]
    await harness.broker.outbox.drain()
    store = harness.broker.store
    await store.redis.xadd(store.outbox, {"id": rid, "kind": "remind"})
    await store.redis.xadd(store.outbox, {"id": rid, "kind": "escalate"})
    await harness.broker.outbox.drain()
    sent = [e for e in harness.notifier.sent if e[1] == rid]
    assert ("remind", rid, "pending") in sent and ("remind", rid, "on-call") in sent
