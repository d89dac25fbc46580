"""Policy lifecycle (issue 23, items 2, 3 and 5): shadow policies beside the enforcing set,
what-if replay over the recorded audit log, coverage, and policy reviews with their reminder."""

from __future__ import annotations

import base64
import json
import os
import shutil

import orjson
import pytest

from broker.clock import ManualClock
from broker.policy import PolicyGate
from broker.policyhistory import coverage, parse_since, replay, shadow_report
from broker.policyreview import DAY_S, record_review, remind_if_due
from tests.support.harness import FIXTURES, Harness, make_settings, write_agents
from tests.support.process import jitgate_env, run_cli

# Laid over the enforcing fixture policies: prod-deploy replaced (3 approvals), a forbid added.
SHADOW = """
@id("prod-deploy") @approvals("3") @approver_group("sre") @max_duration("900")
permit(principal, action == Jitgate::Action::"deploy", resource in Jitgate::Env::"prod")
when { context.confidence >= 70 };

@id("no-prod-restart")
forbid(principal, action == Jitgate::Action::"restart", resource in Jitgate::Env::"prod");
"""


def _policies(tmp_path, shadow: str | None = None):
    policies = tmp_path / "policies"
    shutil.copytree(FIXTURES / "policies", policies)
    if shadow is not None:
        (policies / "shadow").mkdir()
        (policies / "shadow" / "next.cedar").write_text(shadow)
    return policies


async def _harness(tmp_path, redis_url, prefix, policies, **settings):
    s = make_settings(tmp_path, redis_url, prefix, policy_dir=policies, **settings)
    h = Harness(s, write_agents(s.agents_file), ManualClock())
    await h.start(background=False)
    return h


async def _audit(h) -> list[dict]:
    s = h.broker.store
    return [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]


async def test_shadow_disagreement_is_recorded_counted_and_reported_but_never_decides(tmp_path, redis_url, prefix, redis):
    """Issue 23 item 2: the shadow set (the enforcing policies with shadow/ laid over them) is
    evaluated beside the enforcing one on a decision and never changes it; a disagreement (here: 3
    approvals instead of 2; a restart the shadow set would deny) is in the decision's audit entry,
    counted by the policy that decided in the shadow set, and listed by the report."""
    h = await _harness(tmp_path, redis_url, prefix, _policies(tmp_path, SHADOW))
    try:
        assert h.broker.gate.shadow_ids == ("prod-deploy", "no-prod-restart")
        deploy = (await h.propose()).json()
        assert deploy["status"] == "pending" and deploy["decision"]["approvals_required"] == 2
        restart = (await h.propose(action="restart", duration_s=300)).json()
        assert restart["decision"]["outcome"] == "require_approval"
        read = (await h.propose(action="read", target="staging/payments-api")).json()
        assert read["decision"]["outcome"] == "auto_grant"  # the shadow set agrees: nothing recorded

        decisions = {e["request_id"]: e["data"] for e in await _audit(h) if e["type"] == "policy.decision"}
        assert decisions[deploy["id"]]["shadow"] == {
            "outcome": "require_approval", "policies": ["prod-deploy"], "approvals_required": 3,
            "approver_group": "sre", "max_duration_s": 900, "differs": ["approvals_required"],
            "reason": "needs 3 approvals from sre; decided by policy prod-deploy"}
        assert decisions[restart["id"]]["shadow"]["outcome"] == "deny"
        assert decisions[restart["id"]]["shadow"]["policies"] == ["no-prod-restart"]
        assert "shadow" not in decisions[read["id"]]
        assert "shadow" not in deploy["decision"]  # the request's decision is the enforcing one, as before

        metrics = h.broker.metrics.render().decode()
        assert 'jitgate_policy_shadow_disagreements_total{policy="prod-deploy"} 1.0' in metrics
        assert 'jitgate_policy_shadow_disagreements_total{policy="no-prod-restart"} 1.0' in metrics

        report = await shadow_report(h.broker.redis, h.broker.store.audit_stream, 0)
        assert report["decisions"] == 3 and report["disagreements"] == 2
        assert [(r["request_id"], r["stage"], r["decision"]["outcome"], r["shadow"]["outcome"]) for r in report["requests"]] \
            == [(deploy["id"], "submit", "require_approval", "require_approval"),
                (restart["id"], "submit", "require_approval", "deny")]
        assert report["by_policy"] == {"prod-deploy": 1, "no-prod-restart": 1}
    finally:
        await h.stop()


async def test_a_broken_shadow_policy_is_reported_and_never_blocks_the_enforcing_set(tmp_path, redis_url, prefix, redis):
    """Issue 23 item 2: a malformed shadow file is reported (naming the file) while the broker
    starts and decides with the enforcing set; fixing it loads the shadow set on the next reload."""
    policies = _policies(tmp_path, 'permit(principal, action, resource) when { context.confidence >= };')
    h = await _harness(tmp_path, redis_url, prefix, policies)
    try:
        gate = h.broker.gate
        assert gate.shadow_ids == () and "next.cedar" in (gate.shadow_error or "")
        r = (await h.propose()).json()
        assert r["decision"]["approvals_required"] == 2
        assert all("shadow" not in e.get("data", {}) for e in await _audit(h))
        (policies / "shadow" / "next.cedar").write_text(SHADOW)
        h.broker.maybe_reload()
        assert gate.shadow_ids == ("prod-deploy", "no-prod-restart") and gate.shadow_error is None
    finally:
        await h.stop()


def test_no_shadow_folder_loads_as_before(tmp_path):
    """Issue 23 item 2: without a shadow folder nothing changes (start-up validation unaffected)."""
    from broker.directory import Directory

    gate = PolicyGate.load(FIXTURES / "policies", Directory.load(FIXTURES / "approvers.yaml", FIXTURES / "targets.yaml"), [])
    assert gate.shadow_ids == () and gate.shadow_error is None


CANDIDATE_CHANGES = {
    # prod-restart asks for 2 approvals instead of 1; staging-read needs sre instead of none.
    '@id("prod-restart") @approvals("1")': '@id("prod-restart") @approvals("2")',
    '@id("staging-read") @approvals("0") @max_duration("600")':
        '@id("staging-read") @approvals("1") @approver_group("sre") @max_duration("600")',
    # prod-deploy's cap halves.
    '@id("prod-deploy") @approvals("2") @approver_group("sre") @max_duration("900")':
        '@id("prod-deploy") @approvals("2") @approver_group("sre") @max_duration("450")',
}

# (agent, body, how many): 300 decisions through the real submit path.
MIX = [
    ("deploy-bot", {"action": "deploy", "confidence": 0.9}, 60),                                  # 2×sre, cap 900
    ("deploy-bot", {"action": "deploy", "confidence": 0.5}, 40),                                  # default deny
    ("ops-bot", {"action": "restart", "duration_s": 300}, 70),                                    # 1×sre
    ("reader-bot", {"action": "read", "target": "staging/payments-api"}, 80),                    # auto_grant
    ("ops-bot", {"action": "read", "target": "staging/payments-api"}, 20),                       # deny (team ops)
    ("deploy-bot", {"action": "db.export", "target": "prod/payments-api"}, 30),                  # forbid no-export
]


async def test_replay_reports_exactly_the_decisions_a_candidate_would_change(tmp_path, redis_url, prefix, redis):
    """Issue 23 item 3: a few hundred decisions made through the real lifecycle, replayed from the
    audit log with a candidate set: every changed decision is reported (auto-grant → approval, a
    different approval count, a different cap) with counts per policy, and nothing else is."""
    h = await _harness(tmp_path, redis_url, prefix, _policies(tmp_path))
    ids: dict[int, list[str]] = {}
    try:
        for n, (agent, body, count) in enumerate(MIX):
            for i in range(count):
                r = await h.propose(agent, justification=f"task {n}-{i}", **body)
                assert r.status_code in (200, 201), r.text
                ids.setdefault(n, []).append(r.json()["id"])
        candidate = tmp_path / "candidate"
        shutil.copytree(FIXTURES / "policies", candidate)
        text = (candidate / "test.cedar").read_text()
        for old, new in CANDIDATE_CHANGES.items():
            assert old in text
            text = text.replace(old, new)
        (candidate / "test.cedar").write_text(text)
        gate = PolicyGate.load(candidate, h.broker.directory, [])
        from broker.app import principals

        gate.set_agents(principals(h.broker.registry))
        report = await replay(h.broker.redis, h.broker.store.audit_stream, 0, gate)
    finally:
        await h.stop()

    assert report.replayed == 300 and not report.skipped
    assert len(report.changes) == 60 + 70 + 80 and report.unchanged == 90
    assert dict(report.by_kind) == {"cap 900 → 450": 60, "approvals 1 → 2": 70,
                                    "auto_grant → require_approval": 80}
    assert dict(report.by_policy) == {"prod-deploy": 60, "prod-restart": 70, "staging-read": 80}
    changed = {c["request_id"]: c for c in report.changes}
    assert set(changed) == set(ids[0]) | set(ids[2]) | set(ids[3])
    one = changed[ids[3][0]]
    assert one["before"]["outcome"] == "auto_grant" and one["after"] == {
        "outcome": "require_approval", "approvals_required": 1, "approver_group": "sre", "max_duration_s": 600,
        "policies": ["staging-read"]}
    rendered = report.render()
    assert rendered.startswith("replayed 300 decisions: 210 would change, 90 unchanged")
    assert "auto_grant → require_approval" in rendered and ids[2][0] in rendered


async def test_coverage_lists_policies_that_never_decided_and_each_policys_decisions(tmp_path, redis_url, prefix, redis):
    """Issue 23 item 5: coverage reads the determining policies from the audit entries."""
    h = await _harness(tmp_path, redis_url, prefix, _policies(tmp_path))
    try:
        for i in range(3):
            await h.propose(justification=f"t{i}")
        await h.propose("reader-bot", action="read", target="staging/payments-api")
        await h.propose(action="db.export")
        await h.propose(confidence=0.2)
        report = await coverage(h.broker.redis, h.broker.store.audit_stream, 0, h.broker.gate.policy_ids)
    finally:
        await h.stop()
    assert report["decisions"] == 6
    assert report["never_matched"] == ["break-glass", "export-envelope", "incident-freeze", "prod-restart",
                                       "prod-rollback"]
    by_id = {p["id"]: p for p in report["policies"]}
    assert by_id["prod-deploy"]["decisions"] == 3 and by_id["prod-deploy"]["outcomes"] == {"require_approval": 3}
    assert by_id["prod-deploy"]["top"] == ["deploy prod/payments-api"]
    assert by_id["no-export"]["outcomes"] == {"deny": 1}
    assert by_id["(default deny)"]["decisions"] == 1 and not by_id["(default deny)"]["loaded"]


async def test_review_reminder_goes_to_security_once_a_day_until_a_review_is_recorded(tmp_path, redis_url, prefix, redis):
    """Issue 23 item 5: with no review for JITGATE_POLICY_REVIEW_DAYS the security channel is
    reminded, at most once a day; `policy reviewed` records a policy.reviewed entry and stops it."""
    h = await _harness(tmp_path, redis_url, prefix, _policies(tmp_path), policy_review_days=2)
    try:
        life = h.life
        assert not await remind_if_due(life)  # the period starts at the first check
        h.clock.advance(DAY_S)
        assert not await remind_if_due(life)
        h.clock.advance(DAY_S + 60)
        assert await remind_if_due(life)
        assert not await remind_if_due(life)  # once a day
        outbox = await redis.xrange(h.broker.store.outbox)
        assert [f[b"kind"] for _, f in outbox][-1] == b"policy.review_due"
        await life.notices.deliver("policy.review_due", "")
        security = [s for s in h.notifier.sent if s[0] == "security"]
        assert len(security) == 1 and "Policy review due" in security[0][2] and "none has been recorded" in security[0][2]

        await record_review(life, "carol", "quarterly review: no changes")
        reviewed = [e for e in await _audit(h) if e["type"] == "policy.reviewed"]
        assert reviewed[-1]["actor"] == {"operator": "carol", "channel": "cli"}
        assert reviewed[-1]["data"]["note"] == "quarterly review: no changes"
        assert "prod-deploy" in reviewed[-1]["data"]["policies"]
        h.clock.advance(DAY_S)
        assert not await remind_if_due(life)  # reviewed a day ago
        h.clock.advance(2 * DAY_S)
        assert await remind_if_due(life)
    finally:
        await h.stop()


async def test_review_reminder_off_with_zero_days(tmp_path, redis_url, prefix, redis):
    """Issue 23 item 5: JITGATE_POLICY_REVIEW_DAYS=0 turns the reminder off."""
    h = await _harness(tmp_path, redis_url, prefix, _policies(tmp_path), policy_review_days=0)
    try:
        h.clock.advance(1000 * DAY_S)
        assert not await remind_if_due(h.life)
    finally:
        await h.stop()


def test_since_parses_periods_and_refuses_nonsense():
    """--since takes 24h / 7d / 90m / seconds; anything else is a clear error."""
    assert parse_since("24h") == 86400 and parse_since("7d") == 7 * 86400 and parse_since("90m") == 5400
    assert parse_since("3600") == 3600
    from broker.errors import InvalidRequest

    for bad in ("", "7w", "-1d", "0h", "1.5d"):
        with pytest.raises(InvalidRequest):
            parse_since(bad)


async def test_policy_commands_from_the_cli(tmp_path, redis_url, prefix, redis):
    """Issue 23 items 2, 3, 5: the commands run as the operator runs them (exit 0, JSON and tables)."""
    from broker.clock import SystemClock
    from broker.config import Settings

    keys = write_agents(tmp_path / "agents.yaml")
    env = jitgate_env(tmp_path, prefix, base64.urlsafe_b64encode(os.urandom(32)).decode(), redis_url)
    h = Harness(Settings.from_env(env), keys, SystemClock())
    await h.start(background=False)
    try:
        rid = (await h.propose(action="restart", duration_s=300)).json()["id"]
    finally:
        await h.stop()
    candidate = _policies(tmp_path)
    text = (candidate / "test.cedar").read_text()
    (candidate / "test.cedar").write_text(text.replace('@id("prod-restart") @approvals("1")', '@id("prod-restart") @approvals("3")'))

    out = run_cli(env, "policy", "replay", "--candidate", str(candidate), "--since", "1h", "--format", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["changed"] == 1 and report["changes"][0]["request_id"] == rid
    assert report["by_policy"] == {"prod-restart": 1}
    table = run_cli(env, "policy", "replay", "--candidate", str(candidate), "--since", "1h")
    assert table.returncode == 0 and "approvals 1 → 3" in table.stdout

    cov = run_cli(env, "policy", "coverage", "--since", "30d")
    assert cov.returncode == 0 and "never decided one: break-glass" in cov.stdout
    shadow = run_cli(env, "policy", "shadow-report", "--since", "24h")
    assert shadow.returncode == 0 and "no disagreements" in shadow.stdout
    reviewed = run_cli(env, "policy", "reviewed", "--note", "looked at coverage", "--as", "carol")
    assert reviewed.returncode == 0 and "recorded by carol" in reviewed.stdout
    bad = run_cli(env, "policy", "coverage", "--since", "soon")
    assert bad.returncode == 2 and "--since" in bad.stderr


async def test_shadow_disagreements_at_redecisions_are_recorded_without_changing_them(tmp_path, redis_url, prefix, redis):
    """Issue 23 item 2, the re-decisions (issue 16): at an approval the shadow set would refuse,
    a ``policy.shadow`` entry records it and the approval counts; when the walk after a posture
    change refuses the request (incident freeze) and the shadow set would not, the walk's entry
    carries ``shadow``; both are in the report with their stage."""
    shadow = """
@id("prod-restart") @approvals("1") @approver_group("sre") @max_duration("300")
permit(principal, action == Jitgate::Action::"restart", resource in Jitgate::Env::"prod")
when { context.stage != "approval" };

@id("incident-freeze")
forbid(principal, action, resource) when { false };
"""
    h = await _harness(tmp_path, redis_url, prefix, _policies(tmp_path, shadow))
    try:
        rid = (await h.propose("ops-bot", action="restart", duration_s=300)).json()["id"]
        await h.approve(rid, "erin")
        assert (await h.life.get(rid)).status == "approved"  # the shadow refusal changed nothing
        await h.life.set_posture("incident", h.approver("carol"), channel="cli")  # the walk denies it
        assert (await h.life.get(rid)).status == "denied"
        audit = await _audit(h)
        by_type = {e["type"]: e for e in audit if e.get("request_id") == rid}
        assert "shadow" not in by_type["policy.decision"]["data"]  # agreed at submit
        assert by_type["policy.shadow"]["data"]["stage"] == "approval"
        assert by_type["policy.shadow"]["data"]["shadow"]["outcome"] == "deny"
        (walk,) = [e for e in audit if e["type"] == "requests.redecided"]
        assert walk["data"]["requests"][0]["shadow"]["outcome"] == "require_approval"
        report = await shadow_report(h.broker.redis, h.broker.store.audit_stream, 0)
        assert [(r["stage"], r["decision"]["outcome"], r["shadow"]["outcome"], r["agent"]) for r in report["requests"]] \
            == [("approval", "require_approval", "deny", "ops-bot"), ("recheck", "deny", "require_approval", "ops-bot")]
    finally:
        await h.stop()


def test_shadow_policies_are_validated_against_the_enforcing_schema(tmp_path):
    """Issue 23 item 2: with a schema, a shadow policy the schema refuses is reported (naming file
    and policy) and not evaluated; a valid one decides beside the shipped set with its schema."""
    from broker.context import build_context
    from broker.directory import Directory

    root = FIXTURES.parent.parent
    policies = tmp_path / "policies"
    shutil.copytree(root / "policies", policies)
    (policies / "shadow").mkdir()
    (policies / "shadow" / "next.cedar").write_text(
        '@id("s-bad") permit(principal, action, resource) when { context.nonsense == 1 };')
    gate = PolicyGate.load(policies, Directory.load(root / "examples" / "approvers.yaml",
                                                    root / "examples" / "targets.yaml"), [])
    assert gate.shadow_ids == () and "next.cedar: policy 's-bad'" in (gate.shadow_error or "")
    context = build_context(confidence=90, duration_s=300, posture="normal", evidence_count=1, delegation_depth=0, now=0)
    before = gate.decide(agent_id="deploy-bot", action="deploy", target="prod/payments-api", context=context)
    assert before.shadow is None

    (policies / "shadow" / "next.cedar").write_text(
        '@id("s-deploy") @approvals("3") @approver_group("sre") @max_duration("900")\n'
        'permit(principal, action == Jitgate::Action::"deploy", resource);')
    assert gate.reload_shadow_if_changed() and gate.shadow_ids == ("s-deploy",) and gate.shadow_error is None
    after = gate.decide(agent_id="deploy-bot", action="deploy", target="prod/payments-api", context=context)
    assert after == before  # the enforcing decision, unchanged
    assert after.shadow is not None and "s-deploy" in after.shadow["policies"]
    assert after.shadow["approvals_required"] == 3


async def test_the_scheduler_checks_the_review_at_most_hourly(tmp_path, redis_url, prefix, redis):
    """Issue 23 item 5: the scheduler's remind job runs the review check (Redis asked at most
    hourly per process); once the period has passed the reminder is in the outbox."""
    h = await _harness(tmp_path, redis_url, prefix, _policies(tmp_path), policy_review_days=1)
    try:
        scheduler, outbox = h.broker.scheduler, h.broker.store.outbox

        async def kinds() -> list[bytes]:
            return [f[b"kind"] for _, f in await redis.xrange(outbox)]

        await scheduler._remind_job()  # the first check starts the period
        assert await redis.get(prefix + "policy:review_since") is not None
        await redis.delete(prefix + "policy:review_since")
        h.clock.advance(1800)
        await scheduler._remind_job()  # within the hour: Redis is not asked (the period would restart)
        assert await redis.get(prefix + "policy:review_since") is None
        await redis.set(prefix + "policy:review_since", str(int((h.clock.now() - 2 * DAY_S) * 1000)))
        assert b"policy.review_due" not in await kinds()
        h.clock.advance(1860)
        await scheduler._remind_job()
        assert b"policy.review_due" in await kinds()
    finally:
        await h.stop()
