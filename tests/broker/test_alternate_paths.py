"""Issue 19, item 3: after a denial, another action on the denied target or the denied action on
another target of the same environment (or the very same again) is linked to it (stored,
audited, in the API JSON); K
linked attempts in the window raise one security alert and, if configured, suspend the agent
until a security member reinstates it; Cedar sees ``recent_denials`` and ``linked_attempts``."""

from __future__ import annotations

import asyncio
import shutil

import orjson
import pytest

from broker.clock import ManualClock
from broker.errors import NotApprover, PolicyDenied
from tests.support.harness import FIXTURES, Harness, make_settings, write_agents

TARGETS = """targets:
  - id: prod/payments-api
    env: prod
    attributes: {sensitivity: high}
  - id: prod/ledger
    env: prod
  - id: staging/payments-api
    env: staging
"""


async def _harness(tmp_path, redis_url, prefix, extra_policy: str = "", **settings) -> Harness:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "targets.yaml").write_text(TARGETS)
    policies = tmp_path / "policies"
    shutil.copytree(FIXTURES / "policies", policies)
    if extra_policy:
        (policies / "extra.cedar").write_text(extra_policy)
    values = dict(alternate_path_window_s=1800, alternate_path_alert_after=3, denial_cooldown_s=1800)
    values.update(settings)
    s = make_settings(tmp_path, redis_url, prefix, targets_file=tmp_path / "targets.yaml", policy_dir=policies,
                      **values)
    return await Harness(s, write_agents(s.agents_file), ManualClock()).start()


async def _until(cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def _alerts(h: Harness) -> list[str]:
    return [text for kind, _, text in h.notifier.sent if kind == "security"]


async def _audit(redis, h: Harness, rid: str) -> list[dict]:
    out = []
    for _, f in await redis.xrange(h.broker.store.audit_stream):
        e = orjson.loads(f[b"event"])
        if e.get("request_id") == rid:
            out.append(e)
    return out


async def test_another_action_on_the_denied_target_is_linked_to_the_denial(tmp_path, redis_url, prefix, redis):
    """Requirement (issue 19, item 3): the proposal is linked to the denied request: stored on
    the request, in its audit entry and in the API JSON (who denied, why, when)."""
    h = await _harness(tmp_path, redis_url, prefix)
    try:
        first = (await h.propose(action="restart")).json()["id"]
        await h.life.deny(first, h.approver("bob"), channel="slack", reason="restarts wait for the freeze to end")
        h.clock.advance(180)
        r = await h.propose(action="rollback")
        body = r.json()
        assert r.status_code == 201 and body["status"] == "pending"
        link = body["linked_to"]
        assert link["request"] == first and link["by"] == "bob"
        assert link["reason"] == "restarts wait for the freeze to end" and link["action"] == "restart"
        assert "another action (rollback)" in link["why"]
        stored = await h.life.get(body["id"])
        assert stored.linked_to == link
        events = {e["type"]: e for e in await _audit(redis, h, body["id"])}
        assert events["proposal.linked"]["data"]["linked_to"]["request"] == first
        decision = events["policy.decision"]["data"]["context"]
        assert decision["recent_denials"] == 1 and decision["linked_attempts"] == 1
        # The very same again is linked too (and denial memory denies it at once).
        again = (await h.propose(action="restart")).json()
        assert again["status"] == "denied" and again["linked_to"]["request"] == first
        # The same action on another target of the same environment is linked too.
        other = (await h.propose(action="restart", target="prod/ledger")).json()
        assert other["linked_to"]["request"] == first and "another target in prod" in other["linked_to"]["why"]
        # Another environment, or another agent: not linked.
        assert "linked_to" not in (await h.propose(action="read", target="staging/payments-api")).json()
        assert "linked_to" not in (await h.propose("ops-bot", action="rollback")).json()
    finally:
        await h.stop()


async def test_a_policy_denial_links_too_and_a_window_of_zero_turns_it_off(tmp_path, redis_url, prefix):
    """Requirement (issue 19, item 3): a refusal by policy counts as a denial; 0 turns it off."""
    h = await _harness(tmp_path, redis_url, prefix)
    try:
        denied = (await h.propose(action="db.export")).json()
        assert denied["status"] == "denied"
        r = (await h.propose(action="restart")).json()
        assert r["linked_to"]["request"] == denied["id"] and r["linked_to"]["by"] == "policy"
    finally:
        await h.stop()
    h = await _harness(tmp_path / "off", redis_url, prefix + "off:", alternate_path_window_s=0)
    try:
        assert (await h.propose(action="db.export")).json()["status"] == "denied"
        assert "linked_to" not in (await h.propose(action="restart")).json()
    finally:
        await h.stop()


async def test_k_linked_attempts_raise_one_alert_and_can_suspend_until_security_reinstates(
        tmp_path, redis_url, prefix, redis):
    """Requirement (issue 19, item 3): K linked attempts in the window raise ONE security alert
    and, with JITGATE_ALTERNATE_PATH_SUSPEND, the agent is refused (403 agent-disabled) and its
    open requests end until a member of the security group reinstates it."""
    h = await _harness(tmp_path, redis_url, prefix, alternate_path_suspend=True)
    try:
        first = (await h.propose(action="restart")).json()["id"]
        await h.life.deny(first, h.approver("bob"), channel="slack", reason="no")
        ids = [(await h.propose(action="rollback", justification=f"try {i}")).json()["id"] for i in range(2)]
        await asyncio.sleep(0.3)
        assert _alerts(h) == []
        third = await h.propose(action="rollback", justification="try 3")
        assert third.status_code == 201
        await _until(lambda: len(_alerts(h)) == 1)
        alert = _alerts(h)[0]
        assert "deploy-bot" in alert and first in alert and "SUSPENDED" in alert
        assert any(e["type"] == "security.alternate_paths" for e in await _audit(redis, h, third.json()["id"]))
        r = await h.propose(action="rollback")
        assert r.status_code == 403 and r.json()["type"].endswith("/agent-disabled")
        for rid in ids:
            assert (await h.life.get(rid)).status == "denied"  # ended as the kill switch ends them
        with pytest.raises(NotApprover):
            await h.life.reinstate_agent("deploy-bot", h.approver("bob"), channel="cli")
        assert await h.life.reinstate_agent("deploy-bot", h.approver("carol"), channel="cli") is True
        assert (await h.propose(action="rollback")).status_code == 201
        await asyncio.sleep(0.3)
        assert len(_alerts(h)) == 1  # one alert for the window
    finally:
        await h.stop()


async def test_policies_see_the_counts(tmp_path, redis_url, prefix):
    """Requirement (issue 19, item 3): Cedar's context has recent_denials and linked_attempts."""
    forbid = ('@id("no-second-way-round")\nforbid(principal, action, resource) '
              'when { context.linked_attempts >= 2 };\n')
    h = await _harness(tmp_path, redis_url, prefix, extra_policy=forbid)
    try:
        first = (await h.propose(action="restart")).json()["id"]
        await h.life.deny(first, h.approver("bob"), channel="slack", reason="no")
        assert (await h.propose(action="rollback")).json()["status"] == "pending"
        second = (await h.propose(action="rollback", justification="again")).json()
        assert second["status"] == "denied" and "no-second-way-round" in second["decision"]["policies"]
    finally:
        await h.stop()


async def test_a_refusal_when_the_policies_decide_again_counts_as_a_denial(tmp_path, redis_url, prefix):
    """Requirement (issue 19, item 3): a refusal by policy at a later step (the policies decide
    again at an approval) is remembered like one at submit, and later proposals link to it."""
    forbid = ('@id("second-approval-must-be-security")\nforbid(principal, action == Jitgate::Action::"deploy", '
              'resource) when { context.approval_count >= 2 && !context.approval_groups.contains("security") };\n')
    h = await _harness(tmp_path, redis_url, prefix, extra_policy=forbid)
    try:
        rid = (await h.propose()).json()["id"]
        await h.approve(rid, "bob")
        with pytest.raises(PolicyDenied):
            await h.approve(rid, "erin")
        assert (await h.life.get(rid)).status == "denied"
        r = (await h.propose(action="rollback")).json()
        assert r["linked_to"]["request"] == rid and r["linked_to"]["by"] == "policy"
    finally:
        await h.stop()
