"""Issue 23, item 1: `jitgate policy test DIR` runs YAML cases against a policy set, with a
readable diff and a non-zero exit on failure; the shipped policies have a suite covering each."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from broker.cli import main

ROOT = Path(__file__).resolve().parents[2]
FILES = ["--approvers", str(ROOT / "examples/approvers.yaml"), "--targets", str(ROOT / "examples/targets.yaml")]


@pytest.fixture
def policies(tmp_path) -> Path:
    """A copy of the shipped policies and their tests, to change."""
    target = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", target)
    return target


def test_the_shipped_policies_pass_their_suite_and_every_policy_decides_a_case(capsys):
    assert main(["policy", "test", str(ROOT / "policies"), *FILES, "--require-coverage"]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "policies that decided a case: 19 of 19" in out, out


def test_a_wrong_expectation_fails_with_a_readable_diff(policies, capsys):
    (policies / "tests" / "extra.yaml").write_text(
        "agents: {deploy-bot: {owner: dave, team: platform}}\n"
        "cases:\n"
        "  - name: prod deploy with one approval\n"
        "    principal: deploy-bot\n    action: deploy\n    resource: prod/payments-api\n"
        "    expect: {outcome: require_approval, approvals: 1, group: security}\n")
    assert main(["policy", "test", str(policies), *FILES]) == 1
    out = capsys.readouterr().out
    assert "FAIL  prod deploy with one approval" in out
    assert "approvals: expected 1, got 2" in out and "group: expected 'security', got 'sre'" in out
    assert "decided by: prod-deploy" in out and "1 failed" in out


def test_a_policy_change_that_breaks_a_case_is_caught(policies, capsys):
    """What a policy repository's CI relies on: loosen prod deploys to one approver, and the suite fails."""
    prod = policies / "prod.cedar"
    prod.write_text(prod.read_text().replace('@id("prod-deploy")\n@approvals("2")', '@id("prod-deploy")\n@approvals("1")'))
    assert main(["policy", "test", str(policies), *FILES]) == 1
    assert "approvals: expected 2, got 1" in capsys.readouterr().out


def test_a_policy_no_case_reaches_fails_only_with_require_coverage(policies, capsys):
    (policies / "extra.cedar").write_text(
        '@id("staging-scale")\n@approvals("0")\npermit (principal, action == Jitgate::Action::"scale", '
        'resource in Jitgate::Env::"staging");\n')
    assert main(["policy", "test", str(policies), *FILES]) == 0
    assert main(["policy", "test", str(policies), *FILES, "--require-coverage"]) == 1
    captured = capsys.readouterr()
    assert "19 of 20 (never: staging-scale)" in captured.out and "every policy must decide" in captured.err


@pytest.mark.parametrize("case, needle", [
    ("principal: deploy-bot\n    action: deploy\n    resource: prod/payments-api\n    expect: {outcom: deny}",
     "unknown expectation(s) outcom"),
    ("principal: deploy-bot\n    action: deploy\n    resource: prod/payments-api", "'expect' is required"),
    ("action: deploy\n    resource: prod/payments-api\n    expect: {outcome: deny}", "either a 'principal'"),
    ("principal: deploy-bot\n    actoin: deploy\n    resource: prod/x\n    expect: {outcome: deny}", "unknown key(s): actoin"),
])
def test_a_broken_test_file_is_named_with_its_case_and_exits_2(policies, capsys, case, needle):
    (policies / "tests" / "broken.yaml").write_text(f"cases:\n  - {case}\n")
    assert main(["policy", "test", str(policies), *FILES]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml: case 1" in err and needle in err, err


def test_a_policy_set_that_does_not_load_exits_2(policies, capsys):
    (policies / "bad.cedar").write_text("permit (principal, action, resource) when { context.nope ==  };\n")
    assert main(["policy", "test", str(policies), *FILES]) == 2
    assert "does not load" in capsys.readouterr().err


def test_a_context_value_of_the_wrong_type_is_reported_on_its_case(policies, capsys):
    (policies / "tests" / "typed.yaml").write_text(
        "agents: {deploy-bot: {owner: dave, team: platform}}\ncases:\n"
        "  - name: confidence as a fraction\n    principal: deploy-bot\n    action: read\n"
        "    resource: staging/payments-api\n    context: {confidence: 0.9}\n    expect: {outcome: auto_grant}\n")
    assert main(["policy", "test", str(policies), *FILES]) == 1
    assert "could not be decided" in capsys.readouterr().out
