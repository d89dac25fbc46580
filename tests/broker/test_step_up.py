"""Step-up for high-risk approvals (issue 19, item 6), in the core: the ``@step_up("webauthn")``
annotation, the approvers file's ``step_up:`` on a group, and an approval that counts only
when the path that records it verified the approver's security key."""

from __future__ import annotations

import shutil
from pathlib import Path

import jwt
import pytest

from broker import audit
from broker.clock import ManualClock
from broker.context import build_context
from broker.directory import Directory
from broker.errors import ConfigError, PolicyError, StepUpRequired
from broker.policy import Decision, PolicyGate
from tests.support.harness import FIXTURES, Harness, make_settings, write_agents

STEP_UP_POLICY = '''
@id("prod-deploy-key") @approvals("1") @approver_group("sre") @step_up("webauthn") @max_duration("900")
permit(principal, action == Jitgate::Action::"deploy", resource in Jitgate::Env::"prod");
'''


def step_up_policies(tmp: Path, text: str = STEP_UP_POLICY) -> Path:
    d = tmp / "policies"
    d.mkdir(exist_ok=True)
    for f in (FIXTURES / "policies").glob("*.cedar"):
        shutil.copy(f, d / f.name)
    # The fixture's prod-deploy asks two approvals without a key; this test's set asks one with a key.
    (d / "test.cedar").write_text((d / "test.cedar").read_text().replace('@id("prod-deploy")', '@id("prod-deploy-plain")')
                                  .replace("context.confidence >= 70", "context.confidence >= 101"))
    (d / "stepup.cedar").write_text(text)
    return d


def ctx() -> dict:
    return build_context(confidence=90, duration_s=600, posture="normal", evidence_count=1, delegation_depth=0,
                         now=12 * 3600)


def gate(policy_dir: Path) -> PolicyGate:
    return PolicyGate.load(policy_dir, Directory.load(FIXTURES / "approvers.yaml", FIXTURES / "targets.yaml"), [])


def test_step_up_annotation_becomes_an_obligation(tmp_path):
    """Issue 19.6: `@step_up("webauthn")` on a permit that requires approval is carried on the decision."""
    g = gate(step_up_policies(tmp_path))
    d = g.decide(agent_id="deploy-bot", action="deploy", target="prod/payments-api", context=ctx())
    assert d.outcome == "require_approval" and d.step_up == "webauthn"
    assert d.to_dict()["step_up"] == "webauthn" and "step-up (webauthn)" in d.reason
    assert Decision.from_dict(d.to_dict()) == d
    other = g.decide(agent_id="deploy-bot", action="restart", target="prod/payments-api", context=ctx())
    assert other.step_up is None and "step_up" not in other.to_dict()
    explained = g.explain(agent_id="deploy-bot", action="deploy", target="prod/payments-api", context=ctx())
    assert explained["decision"]["step_up"] == "webauthn"
    assert {p["id"]: p["step_up"] for p in explained["policies"]}["prod-deploy-key"] == "webauthn"


@pytest.mark.parametrize("annotation, problem", [
    ('@approvals("1") @approver_group("sre") @step_up("sms")', "@step_up must be one of"),
    ('@approvals("1") @approver_group("sre") @step_up("")', "@step_up must be one of"),
    ('@approvals("0") @step_up("webauthn")', "requires approval"),
])
def test_a_step_up_annotation_that_cannot_protect_refuses_the_policy_set(tmp_path, annotation, problem):
    """Issue 19.6: an unknown kind, or a step-up on a pre-approved envelope, is refused at load (fail closed)."""
    text = f'@id("p") {annotation}\npermit(principal, action == Jitgate::Action::"deploy", resource);\n'
    with pytest.raises(PolicyError, match=problem):
        gate(step_up_policies(tmp_path, text))


def test_step_up_on_a_forbid_is_refused(tmp_path):
    """Issue 19.6: a forbid asks no approval, so a step-up on it would protect nothing."""
    text = '@id("f") @step_up("webauthn")\nforbid(principal, action == Jitgate::Action::"deploy", resource);\n'
    with pytest.raises(PolicyError, match="requires approval"):
        gate(step_up_policies(tmp_path, text))


def test_the_decision_rejects_an_unknown_step_up_kind():
    """A stored decision naming a step-up jitgate does not know is malformed, not ignored."""
    d = Decision("require_approval", ("p",), 1, "sre", None, None, None, "r", None, "webauthn").to_dict()
    with pytest.raises(PolicyError):
        Decision.from_dict({**d, "step_up": "sms"})


def test_policy_check_prints_the_step_up(tmp_path):
    """Issue 19.6: `jitgate policy check` shows the obligation."""
    import base64
    import json
    import os

    from tests.support.process import jitgate_env, run_cli

    write_agents(tmp_path / "agents.yaml")
    env = jitgate_env(tmp_path, "unused:", base64.urlsafe_b64encode(os.urandom(32)).decode(), "redis://127.0.0.1:1")
    env["JITGATE_POLICY_DIR"] = str(step_up_policies(tmp_path))
    proposal = tmp_path / "p.json"
    proposal.write_text(json.dumps({"agent": "deploy-bot", "action": "deploy", "target": "prod/payments-api",
                                    "justification": "x", "duration_s": 60, "confidence": 0.9}))
    out = run_cli(env, "policy", "check", str(proposal))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["decision"]["step_up"] == "webauthn"
    assert {p["id"]: p["step_up"] for p in result["policies"]}["prod-deploy-key"] == "webauthn"


def test_policy_test_cases_can_expect_the_step_up(tmp_path):
    """Issue 19.6: `jitgate policy test` checks a case's `step_up` like the other obligations."""
    from broker.policytest import run, test_files

    policy_dir = step_up_policies(tmp_path)
    (policy_dir / "tests").mkdir()
    (policy_dir / "tests" / "stepup.yaml").write_text(
        "agents:\n  deploy-bot: {owner: alice, team: platform}\n"
        "cases:\n"
        "  - {name: key, principal: deploy-bot, action: deploy, resource: prod/payments-api,"
        " expect: {step_up: webauthn}}\n"
        "  - {name: no key, principal: deploy-bot, action: restart, resource: prod/payments-api,"
        " expect: {step_up: null}}\n"
        "  - {name: wrong, principal: deploy-bot, action: restart, resource: prod/payments-api,"
        " expect: {step_up: webauthn}}\n")
    directory = Directory.load(FIXTURES / "approvers.yaml", FIXTURES / "targets.yaml")
    report = run(policy_dir, directory, test_files(policy_dir))
    assert [r.name for r in report.failed] == ["wrong"]
    assert "step_up" in report.render(verbose=False)


@pytest.fixture
async def stepup(tmp_path, redis_url, prefix, redis):
    settings = make_settings(tmp_path, redis_url, prefix, policy_dir=step_up_policies(tmp_path))
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    yield h
    await h.stop()


async def _audit_kinds(h) -> list[dict]:
    return [e.body() for e in reversed(await audit.newest(h.broker.redis, h.broker.store.audit_stream, 50))]


async def test_an_approval_without_step_up_records_nothing(stepup):
    """Issue 19.6: the API shows the obligation; an approval that brings no verified key changes nothing."""
    r = await stepup.propose()
    assert r.status_code in (200, 201, 202), r.text
    body = r.json()
    rid = body["id"]
    assert body["decision"]["step_up"] == "webauthn"
    with pytest.raises(StepUpRequired):
        await stepup.approve(rid, "bob")
    after = (await stepup.status(rid)).json()
    assert after["status"] == "pending" and after["approvals"] == []
    assert not [e for e in await _audit_kinds(stepup) if e["type"].startswith(("approval.", "request.approved"))]


async def test_a_verified_step_up_is_in_the_approval_the_audit_and_the_token(stepup):
    """Issue 19.6: `step_up: webauthn` in the approval record, its audit entry and the token's approval claim."""
    rid = (await stepup.propose()).json()["id"]
    await stepup.approve(rid, "bob", step_up="webauthn")
    status = (await stepup.status(rid)).json()
    assert status["status"] == "approved" and status["approvals"][0]["step_up"] == "webauthn"
    recorded = [e for e in await _audit_kinds(stepup) if e["type"] == "approval.recorded" and e.get("request_id") == rid]
    assert recorded and recorded[-1]["data"]["step_up"] == "webauthn"
    token = (await stepup.collect(rid)).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["approval"]["step_up"] == "webauthn" and claims["approval"]["step_up_approvers"] == ["bob"]


async def test_requests_without_step_up_keep_plain_tokens(stepup):
    """An ordinary approval is untouched: no step-up in the approval or the token."""
    rid = (await stepup.propose(action="restart")).json()["id"]
    await stepup.approve(rid, "bob")
    token = (await stepup.collect(rid)).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert "step_up" not in claims["approval"]


# ---------------------------------------------------------------------- the approvers file


def _approvers(tmp: Path, text: str) -> Directory:
    path = tmp / "approvers.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return Directory.load(path, FIXTURES / "targets.yaml")


def test_the_approvers_file_can_require_a_key_for_a_group(tmp_path):
    """Issue 19.6: `groups: [{id: security, step_up: webauthn}]` in approvers.yaml."""
    d = _approvers(tmp_path, "groups:\n  - id: security\n    step_up: webauthn\n  - id: sre\n"
                             "approvers:\n  - id: carol\n    groups: [security]\n")
    assert d.step_up_of("security") == "webauthn" and d.step_up_of("sre") is None
    assert d.approver("carol") is not None


@pytest.mark.parametrize("text, problem", [
    ("groups:\n  - id: security\n    step_up: sms\n", "step_up must be one of"),
    ("groups:\n  - id: security\n    stepup: webauthn\n", "unknown key"),
    ("groups:\n  - id: security\n  - id: security\n", "listed twice"),
    ("groups: {security: webauthn}\n", "'groups' must be a list"),
    ("teams_of: []\n", "unknown top-level key"),
])
def test_a_wrong_groups_entry_refuses_the_file(tmp_path, text, problem):
    """Fail closed: a typo in a step-up requirement must not silently drop it."""
    with pytest.raises(ConfigError, match=problem):
        _approvers(tmp_path, text)


async def test_every_approval_from_a_step_up_group_needs_the_key(tmp_path, redis_url, prefix, redis):
    """Issue 19.6: with `step_up: webauthn` on sre, an sre member's approval of any request needs the key;
    the policy alone asks none (restart)."""
    approvers = tmp_path / "approvers.yaml"
    approvers.write_text((FIXTURES / "approvers.yaml").read_text() + "groups:\n  - id: sre\n    step_up: webauthn\n")
    approvers.chmod(0o644)
    settings = make_settings(tmp_path, redis_url, prefix, approvers_file=approvers)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    try:
        rid = (await h.propose(action="restart")).json()["id"]
        req = await h.life.get(rid)
        assert "step_up" not in req.decision
        assert h.life.step_up_needed(h.approver("bob"), req) == "webauthn"
        with pytest.raises(StepUpRequired):
            await h.approve(rid, "bob")
        assert (await h.life.get(rid)).approvals == []
        await h.approve(rid, "bob", step_up="webauthn")
        assert (await h.life.get(rid)).approvals[0]["step_up"] == "webauthn"
    finally:
        await h.stop()


# ---------------------------------------------------------------------- settings


def test_webauthn_origin_and_rp_id_default_from_the_issuer():
    """Issue 19.6: JITGATE_WEBAUTHN_ORIGIN / _RP_ID default from the console's public URL (the issuer)."""
    from broker.config import Settings
    from tests.broker.test_settings import BASE

    s = Settings.from_env({**BASE, "JITGATE_ISSUER": "https://jit.example.com:8443/"})
    assert (s.step_up_origin, s.step_up_rp_id) == ("https://jit.example.com:8443", "jit.example.com")
    s = Settings.from_env({**BASE, "JITGATE_WEBAUTHN_ORIGIN": "https://console.corp.example.com",
                           "JITGATE_WEBAUTHN_RP_ID": "corp.example.com"})
    assert (s.step_up_origin, s.step_up_rp_id) == ("https://console.corp.example.com", "corp.example.com")


@pytest.mark.parametrize("values, problem", [
    ({"JITGATE_WEBAUTHN_ORIGIN": "console.example.com"}, "JITGATE_WEBAUTHN_ORIGIN"),
    ({"JITGATE_WEBAUTHN_ORIGIN": "https://console.example.com/console"}, "JITGATE_WEBAUTHN_ORIGIN"),
    ({"JITGATE_WEBAUTHN_ORIGIN": "https://console.example.com", "JITGATE_WEBAUTHN_RP_ID": "other.example.org"},
     "JITGATE_WEBAUTHN_RP_ID"),
    ({"JITGATE_WEBAUTHN_RP_ID": "ample.com"}, "JITGATE_WEBAUTHN_RP_ID"),
])
def test_a_webauthn_setting_browsers_would_refuse_is_refused_at_start(values, problem):
    """Fail closed at start rather than at the first approval: an RP id that is not the console's
    host (or a parent domain of it) can never verify."""
    from broker.config import Settings
    from tests.broker.test_settings import BASE

    with pytest.raises(ConfigError, match=problem):
        Settings.from_env({**BASE, "JITGATE_ISSUER": "https://console.example.com", **values})


def test_a_delegated_proposal_keeps_the_step_up_of_any_decision_in_its_chain(tmp_path):
    """Issue 19.6 (fail closed): a proposal made through a delegation chain combines the decisions
    of the proposal and of each link, the strictest winning; step-up asked by the proposal's own
    decision, or by a link's, is never dropped by the combination."""
    from types import SimpleNamespace

    from broker.identity.delegation import DelegationLink
    from broker.lifecycle import Lifecycle

    delegate = '''
@id("delegate-with-key") @approvals("1") @approver_group("sre") @step_up("webauthn")
permit(principal, action == Jitgate::Action::"delegate", resource);
'''
    link = DelegationLink(1, "orchestrator", "deploy-bot", ("deploy",), ("prod/*",), 0, 60, "j1")
    g = gate(step_up_policies(tmp_path, STEP_UP_POLICY + delegate))
    own = g.decide(agent_id="deploy-bot", action="deploy", target="prod/payments-api", context=ctx())
    combined = Lifecycle._delegated_decision(SimpleNamespace(gate=g), own, [link], ctx())
    assert own.step_up == "webauthn" and combined.step_up == "webauthn" and combined.approvals_required == 1
    # The link alone asks for it: the proposal's own decision (a plain approval) does not.
    plain = Decision.from_dict({**own.to_dict(), "step_up": None})
    assert plain.step_up is None
    combined = Lifecycle._delegated_decision(SimpleNamespace(gate=g), plain, [link], ctx())
    assert combined.step_up == "webauthn"
