"""The `jitgate` command, run as a real process against the real Redis."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import jwt
import pytest

from tests.support.harness import ISSUER, write_agents
from tests.support.process import jitgate_env, run_cli


_keys: dict = {}


@pytest.fixture
def cli_env(tmp_path, redis_url, prefix, redis):
    """Env for CLI processes, plus the agents' private keys for proposing."""
    _keys.clear()
    _keys.update(write_agents(tmp_path / "agents.yaml"))
    return jitgate_env(tmp_path, prefix, base64.urlsafe_b64encode(os.urandom(32)).decode(), redis_url)


async def _propose_async(env, agent="deploy-bot", **body) -> str:
    from broker.clock import SystemClock
    from broker.config import Settings
    from broker.identity import make_assertion
    from tests.support.harness import Harness

    h = Harness(Settings.from_env(env), _keys, SystemClock())
    await h.start(background=False)
    try:
        proposal = {"action": "deploy", "target": "prod/payments-api", "justification": "fix", "duration_s": 300, "confidence": 0.9}
        proposal.update(body)
        token = make_assertion(_keys[agent], agent_id=agent, audience=ISSUER)
        r = await h.client.post("/v1/escalations", json=proposal, headers={"Authorization": f"Bearer {token}"})
        return r.json()["id"]
    finally:
        await h.stop()


async def test_cli_approve_and_deny_go_through_lifecycle_checks(cli_env):
    """Operators approve with the same checks as a chat click; the audit records channel cli and the OS user."""
    rid = await _propose_async(cli_env)
    refused = run_cli(cli_env, "requests", "approve", rid, "--as", "alice")  # alice owns deploy-bot
    assert refused.returncode != 0 and "owns agent deploy-bot" in refused.stderr
    ok = run_cli(cli_env, "requests", "approve", rid, "--as", "bob")
    assert ok.returncode == 0 and "pending" in ok.stdout
    shown = json.loads(run_cli(cli_env, "requests", "show", rid).stdout)
    assert shown["approvals"][0]["approver"] == "bob" and shown["approvals"][0]["channel"] == "cli"
    assert shown["approvals"][0]["platform_user"].startswith("os:")
    no_reason = run_cli(cli_env, "requests", "deny", rid, "--as", "erin")
    assert no_reason.returncode != 0 and "reason is required" in no_reason.stderr
    denied = run_cli(cli_env, "requests", "deny", rid, "--as", "erin", "--reason", "not now")
    assert denied.returncode == 0 and "denied" in denied.stdout
    again = run_cli(cli_env, "requests", "approve", rid, "--as", "alice")
    assert again.returncode != 0


async def test_cli_list_audit_verify_and_export(cli_env, tmp_path):
    """requests list shows requests; audit verify passes; audit export writes JSON Lines."""
    rid = await _propose_async(cli_env)
    assert rid in run_cli(cli_env, "requests", "list").stdout
    assert rid in run_cli(cli_env, "requests", "list", "--status", "pending").stdout
    assert rid not in run_cli(cli_env, "requests", "list", "--status", "denied").stdout
    v = run_cli(cli_env, "audit", "verify")
    assert v.returncode == 0 and "OK" in v.stdout
    out = tmp_path / "audit.jsonl"
    assert run_cli(cli_env, "audit", "export", "--out", str(out)).returncode == 0
    lines = out.read_text().splitlines()
    assert json.loads(json.loads(lines[0])["event"])["type"] == "proposal.received"


def test_policy_check_explains(cli_env, tmp_path):
    """policy check dry-runs a proposal and names the deciding policy."""
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"agent": "deploy-bot", "action": "deploy", "target": "prod/payments-api",
                             "justification": "x", "duration_s": 60, "confidence": 0.9}))
    out = run_cli(cli_env, "policy", "check", str(f))
    assert out.returncode == 0, out.stderr
    assert "prod-deploy" in out.stdout
    f.write_text(json.dumps({"agent": "deploy-bot", "action": "db.export", "target": "prod/payments-api",
                             "justification": "x", "duration_s": 60}))
    denied = run_cli(cli_env, "policy", "check", str(f))
    assert denied.returncode == 3 and "no-export" in denied.stdout


def test_init_writes_private_env_and_demo_agent(tmp_path):
    """init writes a .env readable only by its owner, with a fresh key-encryption key, and a demo agent."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITGATE_", "REDIS_URL"))}
    dotenv, data = tmp_path / ".env", tmp_path / "data"
    out = run_cli(env, "init", "--env", str(dotenv), "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    assert "JITGATE_KEY_ENCRYPTION_KEY=" in dotenv.read_text()
    # From the repository (as `make run` does it), the checkout's own policies and examples.
    assert "JITGATE_POLICY_DIR=policies\n" in dotenv.read_text()
    assert "JITGATE_APPROVERS_FILE=examples/approvers.yaml\n" in dotenv.read_text()
    assert stat.S_IMODE((data / "demo-agent.pem").stat().st_mode) == 0o600
    env["JITGATE_AGENTS_FILE"] = str(data / "agents.yaml")
    env["JITGATE_ENV_FILE"] = str(dotenv)
    assert "demo-agent" in run_cli(env, "agents", "list").stdout
    again = run_cli(env, "init", "--env", str(dotenv), "--data-dir", str(data))
    assert "left as it is" in again.stdout  # never overwrites secrets


def test_agents_add_generate_and_assertion(cli_env, tmp_path):
    """agents add --generate registers a new agent whose key signs a valid assertion."""
    key = tmp_path / "new.pem"
    out = run_cli(cli_env, "agents", "add", "new-bot", "--owner", "bob", "--team", "ops", "--generate", str(key),
                  "--kind", "P-256")
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    dup = run_cli(cli_env, "agents", "add", "new-bot", "--generate", str(tmp_path / "other.pem"))
    assert dup.returncode != 0
    a = run_cli(cli_env, "assertion", "--agent", "new-bot", "--key", str(key))
    claims = jwt.decode(a.stdout.strip(), options={"verify_signature": False})
    assert claims["iss"] == claims["sub"] == "new-bot" and claims["aud"] == ISSUER


def test_posture_cli(cli_env):
    """posture shows the level; setting it needs a security-group approver."""
    assert run_cli(cli_env, "posture").stdout.strip() == "normal"
    refused = run_cli(cli_env, "posture", "incident", "--as", "bob")
    assert refused.returncode != 0 and "security" in refused.stderr
    assert run_cli(cli_env, "posture", "elevated", "--as", "carol").stdout.strip() == "elevated"


async def test_breakglass_cli(cli_env):
    """Break-glass from a terminal: refused without confirmation, granted with --yes, reviewed by security."""
    unconfirmed = run_cli(cli_env, "breakglass", "grant", "ops-bot", "rollback", "prod/payments-api", "600",
                          "pods", "crashing", "--as", "alice")
    assert unconfirmed.returncode == 1 and "not confirmed" in unconfirmed.stderr
    ok = run_cli(cli_env, "breakglass", "grant", "ops-bot", "rollback", "prod/payments-api", "600",
                 "pods", "crashing", "--as", "alice", "--yes")
    assert ok.returncode == 0, ok.stderr
    rid = ok.stdout.split()[0]
    assert rid in run_cli(cli_env, "breakglass", "reviews").stdout
    refused = run_cli(cli_env, "breakglass", "review", rid, "ok", "--as", "bob")
    assert refused.returncode != 0
    assert run_cli(cli_env, "breakglass", "review", rid, "justified", "--as", "carol").returncode == 0
    assert rid not in run_cli(cli_env, "breakglass", "reviews").stdout


def test_breakglass_cli_binds_a_token_for_me_when_dpop_is_required(cli_env, tmp_path):
    """Issue 24.1: with JITGATE_REQUIRE_DPOP the CLI's break-glass token for oneself is DPoP-bound: without
    --dpop-key nothing is granted and the error says how; with it (the key file made if missing, mode 600) the
    token carries cnf.jkt of that key and the CLI prints how to make the proofs."""
    import time  # noqa: PLC0415

    from broker.jose import jwk_thumbprint, load_private_key, public_jwk, verify_dpop_proof  # noqa: PLC0415

    env = {**cli_env, "JITGATE_REQUIRE_DPOP": "1"}
    args = ("breakglass", "grant", "me", "restart", "prod/payments-api", "300", "outage", "--as", "alice", "--yes")
    refused = run_cli(env, *args)
    assert refused.returncode == 2 and "--dpop-key" in refused.stderr and "eyJ" not in refused.stdout
    key_file = tmp_path / "alice-dpop.pem"
    ok = run_cli(env, *args, "--dpop-key", str(key_file))
    assert ok.returncode == 0, ok.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = ok.stdout.split()[-1]
    jkt = jwk_thumbprint(public_jwk(load_private_key(key_file.read_bytes())))
    assert jwt.decode(token, options={"verify_signature": False})["cnf"] == {"jkt": jkt}
    assert "Authorization: DPoP" in ok.stderr and "jitgate agent proof GET" in ok.stderr and str(key_file) in ok.stderr
    url = "https://payments.example.com/v1/config"
    proof = run_cli(env, "agent", "proof", "GET", url, "--token", token, "--key", str(key_file))
    assert proof.returncode == 0, proof.stderr
    assert verify_dpop_proof(proof.stdout.strip(), method="GET", url=url, now=time.time(), access_token=token).jkt == jkt


async def test_audit_trim_only_what_an_export_holds(cli_env, tmp_path):
    """audit trim (issue 8 item 5, issue 18 item 8): refuses what no signed checkpoint covers;
    asks to confirm; refuses (nothing removed) unless the export holds every entry to remove;
    then verify reports the trimmed entries, and the export verifies offline."""
    await _propose_async(cli_env)
    old = tmp_path / "old.jsonl"
    assert run_cli(cli_env, "audit", "export", "--out", str(old)).returncode == 0
    exported = len(old.read_text().splitlines())
    not_sealed = run_cli(cli_env, "audit", "trim", "--before", str(exported + 1), "--exported", str(old), "--yes")
    assert not_sealed.returncode == 2 and "not covered by a signed checkpoint" in not_sealed.stderr
    assert run_cli(cli_env, "audit", "seal").returncode == 0
    await _propose_async(cli_env)  # newer entries, not in the export
    assert run_cli(cli_env, "audit", "seal").returncode == 0

    unconfirmed = run_cli(cli_env, "audit", "trim", "--before", str(exported + 1), "--exported", str(old))
    assert unconfirmed.returncode == 1 and "not confirmed; nothing trimmed" in unconfirmed.stderr
    assert f"will remove {exported} entries, seq 1 to {exported}" in unconfirmed.stderr
    too_far = run_cli(cli_env, "audit", "trim", "--before", str(exported + 2), "--exported", str(old), "--yes")
    assert too_far.returncode == 2 and "does not cover the entries to remove" in too_far.stderr
    missing = run_cli(cli_env, "audit", "trim", "--before", "2", "--exported", str(tmp_path / "nope.jsonl"), "--yes")
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
    assert "trimmed" not in run_cli(cli_env, "audit", "verify").stdout  # nothing removed so far

    ok = run_cli(cli_env, "audit", "trim", "--before", str(exported + 1), "--exported", str(old), "--yes")
    assert ok.returncode == 0, ok.stderr
    offline = run_cli({}, "audit", "verify", "--file", str(old))  # no settings, no Redis
    assert offline.returncode == 0 and f"seq 1 to {exported}" in offline.stdout and "tree root" in offline.stdout
    v = run_cli(cli_env, "audit", "verify")
    assert v.returncode == 0 and "OK" in v.stdout and f"{exported} older entries trimmed" in v.stdout
    new = tmp_path / "new.jsonl"
    assert run_cli(cli_env, "audit", "export", "--out", str(new)).returncode == 0
    rows = [json.loads(line) for line in new.read_text().splitlines()]
    last = json.loads(rows[-1]["event"])
    assert rows[0]["seq"] == exported + 1 and last["type"] == "audit.trimmed"
    assert last["actor"]["operator"].startswith("os:") and last["data"]["through_seq"] == exported
    assert last["data"]["export_sha256"] == hashlib.sha256(old.read_bytes()).hexdigest()
    assert run_cli({}, "audit", "verify", "--file", str(new)).returncode == 0
    new.write_text(new.read_text().replace('"seq":', '"seq": ', 1).replace('proposal', 'pr0posal', 1))
    broken = run_cli({}, "audit", "verify", "--file", str(new))
    assert broken.returncode == 1 and "export BROKEN: line 1" in broken.stdout


async def test_audit_prove_and_check_proof_offline(cli_env, tmp_path):
    """Issue 18.3: `audit prove --request` writes a bundle that `audit check-proof` verifies with
    only the audit key (no settings, no Redis), and refuses once a byte changed."""
    rid = await _propose_async(cli_env)
    assert run_cli(cli_env, "audit", "seal").returncode == 0
    vkey = run_cli(cli_env, "audit", "key").stdout.strip()
    bundle = tmp_path / "grant.json"
    p = run_cli(cli_env, "audit", "prove", "--request", rid, "--out", str(bundle))
    assert p.returncode == 0, p.stderr
    ok = run_cli({}, "audit", "check-proof", str(bundle), "--key", vkey)
    assert ok.returncode == 0 and "proof OK" in ok.stdout and rid in ok.stdout
    keyfile = tmp_path / "key.json"
    keyfile.write_text(json.dumps({"verifier_key": vkey}))
    assert run_cli({}, "audit", "check-proof", str(bundle), "--key-file", str(keyfile)).returncode == 0
    bundle.write_bytes(bundle.read_bytes().replace(b"proposal.received", b"proposal.receivee"))
    bad = run_cli({}, "audit", "check-proof", str(bundle), "--key", vkey)
    assert bad.returncode == 1 and "proof BROKEN" in bad.stdout
    v = run_cli(cli_env, "audit", "verify", "--checkpoints", str(tmp_path / "nope.jsonl"))
    assert v.returncode == 2 and "cannot read" in v.stderr


def test_version_is_the_installed_packages(cli_env):
    """`jitgate --version` (issue 13, item 7) prints the version the package metadata carries."""
    from importlib.metadata import version

    out = run_cli(cli_env, "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"jitgate {version('jitgate')}"


async def test_listings_print_json_with_json(cli_env):
    """`--json` on requests list and show, agents list and breakglass reviews (issue 13, item 7): JSON a
    script can parse, each request as the API returns it."""
    rid = await _propose_async(cli_env)
    listed = run_cli(cli_env, "requests", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (mine,) = [r for r in json.loads(listed.stdout) if r["id"] == rid]
    assert mine["status"] == "pending" and mine["agent"] == "deploy-bot" and mine["target"] == "prod/payments-api"
    assert mine["decision"]["policies"] == ["prod-deploy"]
    assert json.loads(run_cli(cli_env, "requests", "list", "--status", "denied", "--json").stdout) == []
    shown = json.loads(run_cli(cli_env, "requests", "show", rid, "--json").stdout)
    assert shown == mine

    agents = json.loads(run_cli(cli_env, "agents", "list", "--json").stdout)
    by_id = {a["id"]: a for a in agents["agents"]}
    assert by_id["deploy-bot"]["owner"] == "alice" and by_id["deploy-bot"]["kid"]
    assert {"id", "owner", "team", "kid", "can_delegate", "disabled"} == set(by_id["deploy-bot"])
    assert isinstance(agents["resource_servers"], list)

    assert json.loads(run_cli(cli_env, "breakglass", "reviews", "--json").stdout) == []
    ok = run_cli(cli_env, "breakglass", "grant", "ops-bot", "rollback", "prod/payments-api", "600",
                 "pods", "crashing", "--as", "alice", "--yes")
    assert ok.returncode == 0, ok.stderr
    (review,) = json.loads(run_cli(cli_env, "breakglass", "reviews", "--json").stdout)
    assert review["id"] == ok.stdout.split()[0] and review["break_glass"] is True
    assert review["break_glass_detail"]["engineer"] == "alice" and review["break_glass_detail"]["review_due"]


def test_demo_names_the_url_it_cannot_reach(cli_env, tmp_path):
    """`jitgate demo` against a broker that is not there (issue 13, item 7) names the URL and suggests
    starting the broker or `jitgate init --port`; no traceback."""
    from broker.identity import generate_key
    from tests.support.process import free_port

    (tmp_path / "data").mkdir(exist_ok=True)
    pem, _jwk = generate_key("Ed25519")
    (tmp_path / "data" / "demo-agent.pem").write_bytes(pem)
    (tmp_path / "data" / "demo-agent.pem").chmod(0o600)
    url = f"http://127.0.0.1:{free_port()}"
    out = run_cli({**cli_env, "JITGATE_ISSUER": url}, "demo")
    assert out.returncode == 1
    assert f"could not reach the broker at {url}" in out.stdout
    assert "jitgate init --port PORT" in out.stdout and "--url" in out.stdout
    assert "Traceback" not in out.stderr
