"""Issue 16, item 5: `jitgate revoke` (the kill switch) and `jitgate agents disable/enable`,
run as real processes against the real Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.broker.test_cli import _propose_async, cli_env  # noqa: F401 - the fixture
from tests.support.process import ROOT, run_cli


def _run_with_input(env: dict, text: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "broker.cli", *args], env=env, input=text, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def _status(env, rid: str) -> str:
    return json.loads(run_cli(env, "requests", "show", rid).stdout)["status"]


async def test_cli_kill_switch_asks_for_confirmation_then_denies_every_match(cli_env):  # noqa: F811
    """Issue 16.5 `jitgate revoke --agent ID --reason TEXT` "with a confirmation": the prompt says how many would
    end and nothing changes unless the operator types `revoke`; then the agent's pending request is denied,
    another agent's is not, and the audit log names the pull."""
    rid = await _propose_async(cli_env, agent="deploy-bot")
    other = await _propose_async(cli_env, agent="ops-bot", action="restart")
    args = ("revoke", "--agent", "deploy-bot", "--reason", "compromised", "--as", "carol")
    no = _run_with_input(cli_env, "no\n", *args)
    assert no.returncode == 1 and "deny 1 pending request(s)" in no.stdout and "nothing was changed" in no.stderr
    assert _status(cli_env, rid) == "pending"
    yes = _run_with_input(cli_env, "revoke\n", *args)
    assert yes.returncode == 0, yes.stderr
    assert "1 pending request(s) denied" in yes.stdout
    assert _status(cli_env, rid) == "denied" and _status(cli_env, other) == "pending"
    shown = json.loads(run_cli(cli_env, "requests", "show", rid).stdout)
    assert shown["denial"]["by"] == "carol" and shown["denial"]["reason"] == "compromised"
    assert run_cli(cli_env, "audit", "verify").returncode == 0


async def test_cli_kill_switch_all_with_yes_and_json(cli_env):  # noqa: F811
    """`--all --yes` needs no prompt; `--json` lists what was ended."""
    a = await _propose_async(cli_env, agent="deploy-bot")
    b = await _propose_async(cli_env, agent="ops-bot", action="restart")
    out = run_cli(cli_env, "revoke", "--all", "--reason", "drill", "--as", "carol", "--yes", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["denied"]) == sorted([a, b])


async def test_cli_kill_switch_refuses_non_security_and_missing_reason(cli_env):  # noqa: F811
    """Issue 16.5 "the security group" and "reason required": bob (sre) is refused, an empty reason is refused,
    a selector is required; nothing changes."""
    rid = await _propose_async(cli_env)
    bob = run_cli(cli_env, "revoke", "--all", "--reason", "x", "--as", "bob", "--yes")
    assert bob.returncode == 2 and "only members of 'security'" in bob.stderr
    empty = run_cli(cli_env, "revoke", "--all", "--reason", " ", "--as", "carol", "--yes")
    assert empty.returncode == 2 and "--reason" in empty.stderr
    none = run_cli(cli_env, "revoke", "--reason", "x", "--as", "carol", "--yes")
    assert none.returncode == 2 and "one of the arguments" in none.stderr
    assert _status(cli_env, rid) == "pending"


def test_cli_agents_disable_and_enable_edit_the_agents_file_in_place(cli_env, tmp_path):  # noqa: F811
    """`jitgate agents disable ID` marks the entry `disabled: true` in the agents file (the source of truth),
    keeping the operator's comments; `enable` sets it back; an unknown id is refused."""
    path = tmp_path / "agents.yaml"
    path.write_text("# our agents\n" + path.read_text())
    out = run_cli(cli_env, "agents", "disable", "reader-bot", "--file", str(path))
    assert out.returncode == 0 and "disabled" in out.stdout, out.stderr
    text = path.read_text()
    assert text.startswith("# our agents\n")
    doc = yaml.safe_load(text)
    assert [a.get("disabled") for a in doc["agents"] if a["id"] == "reader-bot"] == [True]
    assert all("disabled" not in a for a in doc["agents"] if a["id"] != "reader-bot")
    listed = json.loads(run_cli(cli_env, "agents", "list", "--json").stdout)["agents"]
    assert {a["id"]: a["disabled"] for a in listed}["reader-bot"] is True
    assert "DISABLED" in [line for line in run_cli(cli_env, "agents", "list").stdout.splitlines()
                          if line.startswith("reader-bot")][0]
    again = run_cli(cli_env, "agents", "disable", "reader-bot", "--file", str(path))
    assert again.returncode == 0 and "already disabled" in again.stdout
    assert run_cli(cli_env, "agents", "enable", "reader-bot", "--file", str(path)).returncode == 0
    assert [a.get("disabled") for a in yaml.safe_load(path.read_text())["agents"] if a["id"] == "reader-bot"] == [False]
    unknown = run_cli(cli_env, "agents", "disable", "nobody", "--file", str(path))
    assert unknown.returncode == 2 and "no agent 'nobody'" in unknown.stderr
