"""`jitgate agent` / `jitgate-agent` as a shell agent uses it: real processes against the live broker."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import sys
from pathlib import Path

import jwt
import yaml
from cryptography.hazmat.primitives import serialization

from broker.identity import Registry, generate_key, jwk_thumbprint, load_private_key, public_jwk
from tests.client.conftest import serve, stop

ROOT = Path(__file__).resolve().parents[2]
READ = ["--action", "read", "--target", "staging/payments-api", "-j", "check config drift", "--duration", "60"]
RESTART = ["--action", "restart", "--target", "prod/payments-api", "-j", "OOM loop", "--duration", "60",
           "--excerpt", "log", "pod events", "OOMKilled x14",
           "--link", "runbook", "Restart payments-api", "https://runbooks.example.com/payments"]


async def agent(live, tmp_path: Path, *args: str, agent_id: str = "reader-bot", module: str = "broker.client.cli"):
    """Run the agent CLI; returns (exit code, stdout, stderr)."""
    key_file = tmp_path / f"{agent_id}.pem"
    if not key_file.exists():
        key_file.write_bytes(live.keys[agent_id].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        key_file.chmod(0o600)  # a private key others may read is refused
    env = {**os.environ, "JITGATE_URL": live.url, "JITGATE_AGENT_ID": agent_id, "JITGATE_AGENT_KEY": str(key_file)}
    cmd = [sys.executable, "-m", module, *(["agent"] if module == "broker.cli" else []), *args]
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_keygen_writes_a_private_key_and_prints_the_agents_entry(live, tmp_path):
    """keygen: a P-256 key (mode 600) and an agents.yaml entry that the registry accepts as is."""
    code, out, err = await agent(live, tmp_path, "keygen", "--id", "new-bot", "--owner", "dave", "--team", "platform",
                                 "--out", "keys/new-bot.pem")
    assert code == 0 and "agents add new-bot" in err
    key_file = tmp_path / "keys/new-bot.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_private_key(key_file.read_bytes()).curve.name == "secp256r1"
    (tmp_path / "agents.yaml").write_text("agents:\n" + out)
    registered = Registry.load(tmp_path / "agents.yaml").agent("new-bot")
    assert registered.owner == "dave" and registered.alg == "ES256"
    again, _, err = await agent(live, tmp_path, "keygen", "--id", "new-bot", "--out", "keys/new-bot.pem")
    assert again == 1 and "not overwritten" in err


async def test_request_wait_token_complete(live, tmp_path):
    """request --wait prints the id and exits 0 when granted; token prints the token; complete ends the grant."""
    code, out, err = await agent(live, tmp_path, "request", *READ, "--wait", "10")
    rid = out.strip()
    assert code == 0 and len(out.splitlines()) == 1 and "approved by policy" in err
    code, token, err = await agent(live, tmp_path, "token", rid)
    claims = jwt.decode(token.strip(), options={"verify_signature": False})
    assert code == 0 and claims["approval"]["request_id"] == rid and "cnf" in claims and "DPoP-bound" in err
    code, _, err = await agent(live, tmp_path, "complete", rid)
    assert code == 0 and "completed" in err
    assert (await live.broker.lifecycle.get(rid)).status == "completed"


async def test_wait_shows_progress_and_exits_0_when_a_person_approves(live, tmp_path):
    """While waiting, progress goes to stderr (one line per change off a terminal); approval exits 0."""
    run = asyncio.create_task(agent(live, tmp_path, "request", *RESTART, "--wait", "20"))
    rid = await live.pending()
    await asyncio.sleep(0.3)
    await live.approve(rid, "bob")
    code, out, err = await run
    assert code == 0 and out.strip() == rid
    assert "pending: 0/1 approvals from sre" in err and "approved by bob" in err
    req = await live.broker.lifecycle.get(rid)
    assert sorted(e.kind for e in req.proposal.evidence) == ["log", "runbook"]


async def test_denied_exits_2_with_the_reason(live, tmp_path):
    """A policy denial exits 2 and says why on stderr; so does a person's denial while waiting."""
    code, out, err = await agent(live, tmp_path, "request", "--action", "db.export", "--target", "prod/payments-api",
                                 "-j", "copy", "--wait")
    assert code == 2 and out.strip() and "denied by policy" in err and "no-export" in err
    run = asyncio.create_task(agent(live, tmp_path, "request", *RESTART, "--wait", "20"))
    await live.deny(await live.pending(), "change freeze")
    code, _, err = await run
    assert code == 2 and "denied by bob: change freeze" in err


async def test_timed_out_exits_4_and_status_reports(live, tmp_path):
    """No decision within --wait exits 4; status prints the request as JSON (exit 0 while pending)."""
    code, out, err = await agent(live, tmp_path, "request", *RESTART, "--wait", "0.5")
    assert code == 4 and "timed out" in err
    rid = out.strip()
    code, out, _ = await agent(live, tmp_path, "status", rid)
    assert code == 0 and '"status": "pending"' in out
    code, _, err = await agent(live, tmp_path, "cancel", rid)
    assert code == 0 and "cancelled" in err
    code, _, _ = await agent(live, tmp_path, "status", rid)
    assert code == 2
    code, token, err = await agent(live, tmp_path, "token", rid)  # nothing to collect: the same exit code, no token
    assert code == 2 and token == "" and "cancelled" in err


async def test_expired_exits_3(live_settings, redis, tmp_path):
    """A request nobody decided before the broker's deadline exits 3."""
    live = await serve(dataclasses.replace(live_settings["settings"], request_ttl_s=0.3), live_settings["keys"],
                       live_settings["svid_key"])
    try:
        code, out, err = await agent(live, tmp_path, "request", *RESTART, "--wait", "20")
        assert code == 3 and "expired" in err
        code, token, err = await agent(live, tmp_path, "token", out.strip())
        assert code == 3 and token == "" and "expired" in err
    finally:
        await stop(live)


async def test_delegate_and_request_with_the_chain(live, tmp_path):
    """delegate prints the chain for the sub-agent; the sub-agent's request with it is granted."""
    code, chain, _ = await agent(live, tmp_path, "delegate", "--to", "worker", "--actions", "read",
                                 "--targets", "staging/*", "--reason", "audit", agent_id="orchestrator")
    assert code == 0 and len(chain.split()) == 1
    (tmp_path / "chain.txt").write_text(chain)
    code, out, _ = await agent(live, tmp_path, "request", *READ, "--delegation", "chain.txt", "--wait", "10",
                               agent_id="worker")
    assert code == 0
    assert (await live.broker.lifecycle.get(out.strip())).delegation_chain[0]["delegator"] == "orchestrator"


async def test_jitgate_agent_is_a_jitgate_subcommand(live, tmp_path):
    """`jitgate agent ...` (the jitgate.cli entry point) runs the same commands."""
    code, out, _ = await agent(live, tmp_path, "request", *READ, module="broker.cli")
    assert code == 0 and (await live.broker.lifecycle.get(out.strip())).status == "approved"
    code, _, err = await agent(live, tmp_path, "status", "abcdefgh1234", module="broker.cli")
    assert code == 1 and "no escalation" in err


def test_yaml_entry_is_plain_yaml(tmp_path, monkeypatch):
    """The printed entry (here for an Ed25519 key that may delegate) is YAML to paste under agents:."""
    from broker.client.cli import main  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["keygen", "--id", "yaml-bot", "--team", "platform", "--can-delegate", "--ed25519"]) == 0
    entry = yaml.safe_load("agents:\n" + out.getvalue())["agents"][0]
    assert entry["id"] == "yaml-bot" and entry["can_delegate"] is True and entry["public_key"]["crv"] == "Ed25519"
    assert (tmp_path / "yaml-bot.pem").exists()


async def test_workload_api_identity(live, tmp_path, monkeypatch):
    """--workload-api: the command authenticates with a JWT-SVID fetched from SPIFFE_ENDPOINT_SOCKET."""
    from tests.client.conftest import SPIFFE_AGENT  # noqa: PLC0415
    from tests.support.fake_spire import FakeWorkloadApi  # noqa: PLC0415

    api = FakeWorkloadApi(tmp_path / "agent.sock", SPIFFE_AGENT, live.svid_key, "svid-key-1").start()
    try:
        monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", api.endpoint)
        code, out, err = await agent(live, tmp_path, "request", *READ, "--workload-api", "--wait", "10")
        assert code == 0, err
        assert (await live.broker.lifecycle.get(out.strip())).agent == SPIFFE_AGENT
        assert api.calls and api.calls[0].audience == [live.broker.settings.issuer]
        rid = out.strip()
        code, _, err = await agent(live, tmp_path, "token", rid, "--workload-api")
        assert code == 1 and "--dpop-key" in err  # a token bound to a key that dies with the process is useless
        dpop_key = tmp_path / "dpop.pem"
        dpop_key.write_bytes(generate_key("P-256")[0])
        dpop_key.chmod(0o600)
        code, token, err = await agent(live, tmp_path, "token", rid, "--workload-api", "--dpop-key", str(dpop_key))
        assert code == 0, err
        claims = jwt.decode(token.strip(), options={"verify_signature": False})
        assert claims["cnf"]["jkt"] == jwk_thumbprint(public_jwk(load_private_key(dpop_key.read_bytes())))
        code, proof, _ = await agent(live, tmp_path, "proof", "GET", "https://rs.example/x", "--token", token.strip(),
                                     "--key", str(dpop_key))
        assert code == 0 and jwt.get_unverified_header(proof.strip())["jwk"]["x"] == public_jwk(
            load_private_key(dpop_key.read_bytes()))["x"]
        monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", f"unix://{tmp_path}/none.sock")
        code, _, err = await agent(live, tmp_path, "status", out.strip(), "--workload-api")
        assert code == 1 and "SPIFFE Workload API" in err
    finally:
        api.stop()


async def test_wait_on_a_terminal_shows_a_spinner_and_clears_it(live, tmp_path):
    """On a terminal, --wait keeps one spinner line (status and elapsed time) and erases it when decided."""
    import pty  # noqa: PLC0415

    key_file = tmp_path / "reader-bot.pem"
    key_file.write_bytes(live.keys["reader-bot"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_file.chmod(0o600)
    env = {**os.environ, "JITGATE_URL": live.url, "JITGATE_AGENT_ID": "reader-bot", "JITGATE_AGENT_KEY": str(key_file)}
    master, slave = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "broker.client.cli", "request", *RESTART,
                                                    "--wait", "20", env=env, cwd=tmp_path,
                                                    stdout=asyncio.subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = -1
        rid = await live.pending()
        await asyncio.sleep(0.8)  # a few spinner frames
        await live.approve(rid, "bob")
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        screen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    text = screen.decode()
    assert proc.returncode == 0 and out.decode().strip() == rid
    frames = [f for f in text.split("\r") if "pending: 0/1 approvals from sre" in f]
    assert len(frames) >= 2 and {f[0] for f in frames} <= set("|/-\\")
    assert "\r\x1b[K" in text and text.rstrip().endswith("approved by bob; collect the token with: "
                                                         f"jitgate agent token {rid}")


def _help(*args: str) -> str:
    import subprocess

    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_jitgate_agent_names_itself_in_its_usage_lines():
    """The usage lines of `jitgate-agent` read `jitgate-agent ...`, not `jitgate-agent agent ...` (issue 13,
    item 7), and the old spelling with `agent` first still runs."""
    top = _help("broker.client.cli", "--help")
    assert top.startswith("usage: jitgate-agent [-h] [--version]")
    assert "jitgate-agent agent" not in top
    assert _help("broker.client.cli", "keygen", "--help").startswith("usage: jitgate-agent keygen ")
    assert _help("broker.client.cli", "agent", "keygen", "--help").startswith("usage: jitgate-agent keygen ")
    assert _help("broker.cli", "agent", "keygen", "--help").startswith("usage: jitgate agent keygen ")


def test_agent_help_shows_no_restructuredtext_marks():
    """`jitgate agent --help` and `jitgate-agent --help` print the description as plain text (issue 13, item 7)."""
    for args in (("broker.cli", "agent", "--help"), ("broker.client.cli", "--help")):
        text = _help(*args)
        assert "Exit codes: 0 granted" in text
        assert "``" not in text
        assert "jitgate agent ... (and jitgate-agent ..., which the client-only jitgate-client install also has)" in text


def test_jitgate_agent_version():
    """`jitgate-agent --version` prints the installed version."""
    from importlib.metadata import version

    assert _help("broker.client.cli", "--version").strip() == f"jitgate-agent {version('jitgate')}"


async def test_request_sends_tool_and_arguments_and_the_token_carries_them(live, tmp_path):
    """Issue 16, item 4: --tool and --arguments reach the proposal (and its hash) and the token."""
    args = '{"namespace": "payments", "replicas": 3}'
    code, out, err = await agent(live, tmp_path, "request", *READ, "--tool", "kubectl", "--arguments", args, "--wait", "10")
    rid = out.strip()
    assert code == 0, err
    req = await live.broker.lifecycle.get(rid)
    assert req.proposal.tool == "kubectl" and req.proposal.arguments == {"namespace": "payments", "replicas": 3}
    code, token, err = await agent(live, tmp_path, "token", rid)
    detail = jwt.decode(token.strip(), options={"verify_signature": False})["authorization_details"][0]
    assert code == 0 and detail["tool"] == "kubectl" and detail["arguments"] == {"namespace": "payments", "replicas": 3}


async def test_request_refuses_arguments_that_are_not_a_json_object(live, tmp_path):
    """--arguments that is not a JSON object is refused before anything is sent; too deep is the broker's 400."""
    code, _, err = await agent(live, tmp_path, "request", *READ, "--arguments", "[1, 2]")
    assert code != 0 and "--arguments must be a JSON object" in err
    code, _, err = await agent(live, tmp_path, "request", *READ, "--arguments", '{"a": {"b": {"c": {"d": {"e": 1}}}}}')
    assert code != 0 and "nests deeper than 4" in err
    assert await live.request_ids() == []
