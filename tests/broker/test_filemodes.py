"""Issue 14.13: what is unsafe refuses to start, with the ``chmod`` that fixes it, as OpenSSH
does with keys: a made-up key-encryption key, a .env holding secrets that others may read,
trusted files others may write, and an agent key others may read."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broker.config import Settings, environment, read_env_file
from broker.directory import Directory
from broker.errors import ConfigError, PolicyError
from broker.identity import Registry, add_agent, generate_key
from broker.policy import PolicyGate
from tests.support.harness import FIXTURES, write_agents
from tests.support.process import jitgate_env, run_cli

ROOT = Path(__file__).resolve().parents[2]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


BASE = {"JITGATE_ISSUER": "https://jitgate.test"}


# ---------------------------------------------------------------------- the key-encryption key
@pytest.mark.parametrize("raw", [bytes(32), b"\x41" * 32, b"\xff" * 32, b"abcd" * 8, bytes(range(7)) * 4 + b"\0" * 4])
def test_a_made_up_kek_refuses_to_start(raw):
    """Issue 14.13: "A key-encryption key of 32 zero bytes or one repeated byte ... start[s] without
    complaint": fewer than 8 distinct byte values refuses, naming the setting and how to make one."""
    with pytest.raises(ConfigError) as e:
        Settings.from_env({**BASE, "JITGATE_KEY_ENCRYPTION_KEY": _b64(raw)})
    assert "JITGATE_KEY_ENCRYPTION_KEY is not random" in e.value.detail and "jitgate init" in e.value.detail


def test_a_random_kek_starts():
    """Random keys pass (they hold about 30 distinct byte values)."""
    for _ in range(200):
        assert len(Settings.from_env({**BASE, "JITGATE_KEY_ENCRYPTION_KEY": _b64(os.urandom(32))}).key_encryption_key) == 32


# ---------------------------------------------------------------------- .env
def _env_file(tmp_path: Path, mode: int, text: str | None = None) -> Path:
    path = tmp_path / ".env"
    path.write_text(text if text is not None else f"JITGATE_ISSUER=https://jitgate.test\n"
                                                  f"JITGATE_KEY_ENCRYPTION_KEY={_b64(os.urandom(32))}\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_a_readable_env_with_the_kek_is_refused(tmp_path, mode):
    """Issue 14.13: "a world-readable .env that holds the KEK ... start[s] without complaint": a
    .env holding secrets that the group or others may read is refused, naming it and `chmod 600`."""
    path = _env_file(tmp_path, mode)
    with pytest.raises(ConfigError) as e:
        Settings.from_env(environment(path))
    assert str(path) in e.value.detail and f"chmod 600 {path}" in e.value.detail


@pytest.mark.parametrize("secret", ["SLACK_SIGNING_SECRET=0123456789abcdef0123456789abcdef",
                                    "MICROSOFT_APP_PASSWORD=abc~def", "REDIS_URL=redis://:hunter2@redis:6379/0"])
def test_a_readable_env_with_any_secret_is_refused(tmp_path, secret):
    """Issue 14.13: the same for a chat secret or a Redis password in the file."""
    with pytest.raises(ConfigError, match="chmod 600"):
        read_env_file(_env_file(tmp_path, 0o644, secret + "\n"))


def test_a_private_env_and_a_readable_env_without_secrets_start(tmp_path):
    """A 0600 .env is read; a .env holding no secret may be readable (it tells nothing)."""
    assert Settings.from_env(environment(_env_file(tmp_path, 0o600))).issuer == "https://jitgate.test"
    public = _env_file(tmp_path, 0o644, "JITGATE_PORT=9000\nREDIS_URL=redis://redis:6379/0\n")
    assert read_env_file(public)["JITGATE_PORT"] == "9000"


def test_serve_refuses_a_readable_env(tmp_path, prefix, redis_url):
    """Issue 14.13, end to end: `jitgate serve` with a world-readable .env holding the KEK exits
    non-zero and prints the file and the chmod."""
    write_agents(tmp_path / "agents.yaml")
    path = _env_file(tmp_path, 0o644)
    env = jitgate_env(tmp_path, prefix, "", redis_url, JITGATE_ENV_FILE=str(path))
    del env["JITGATE_KEY_ENCRYPTION_KEY"]  # from the file only
    out = run_cli(env, "serve", "--port", "0", timeout=60)
    assert out.returncode != 0
    assert f"chmod 600 {path}" in out.stderr


# ---------------------------------------------------------------------- files the broker re-reads
def _copy_fixtures(tmp_path: Path) -> dict[str, Path]:
    files = {"agents": tmp_path / "agents.yaml", "approvers": tmp_path / "approvers.yaml",
             "targets": tmp_path / "targets.yaml", "policies": tmp_path / "policies"}
    write_agents(files["agents"])
    shutil.copy(FIXTURES / "approvers.yaml", files["approvers"])
    shutil.copy(FIXTURES / "targets.yaml", files["targets"])
    shutil.copytree(FIXTURES / "policies", files["policies"])
    return files


def _load_all(files: dict[str, Path]) -> None:
    registry = Registry.load(files["agents"])
    directory = Directory.load(files["approvers"], files["targets"])
    PolicyGate.load(files["policies"], directory, [])
    assert registry.agents


@pytest.mark.parametrize("which", ["agents", "approvers", "targets"])
def test_a_world_writable_trusted_file_is_refused(tmp_path, which):
    """Issue 14.13: "a world-writable agents/approvers/targets file ... (they are re-read every few
    seconds)" is refused, naming the file and `chmod o-w`."""
    files = _copy_fixtures(tmp_path)
    _load_all(files)
    files[which].chmod(0o666)
    with pytest.raises(ConfigError) as e:
        _load_all(files)
    assert str(files[which]) in e.value.detail and f"chmod o-w {files[which]}" in e.value.detail


def test_a_world_writable_policy_folder_or_file_is_refused(tmp_path):
    """Issue 14.13: a world-writable policy folder (even with the sticky bit: anyone could add a
    policy) or policy file is refused."""
    files = _copy_fixtures(tmp_path)
    pol = files["policies"]
    for mode in (0o777, 0o1777):
        pol.chmod(mode)
        with pytest.raises(PolicyError, match=f"chmod o-w {pol}"):
            _load_all(files)
    pol.chmod(0o755)
    one = sorted(pol.glob("*.cedar"))[0]
    one.chmod(0o646)
    with pytest.raises(PolicyError, match=f"chmod o-w {one}"):
        _load_all(files)
    one.chmod(0o644)
    _load_all(files)


def test_a_folder_anyone_may_replace_files_in_is_refused(tmp_path):
    """Issue 14.13: the folder holding a trusted file must not be world-writable without the
    sticky bit (anyone could swap the file); with the sticky bit (like /tmp) it may be."""
    folder = tmp_path / "shared"
    folder.mkdir()
    files = _copy_fixtures(folder)
    folder.chmod(0o777)
    with pytest.raises(ConfigError, match=f"chmod o-w {folder}"):
        _load_all(files)
    folder.chmod(0o1777)
    _load_all(files)


def test_a_reload_of_a_world_writable_file_is_refused(tmp_path):
    """Issue 14.13: the re-read every few seconds refuses too: the previous agents stay in force."""
    files = _copy_fixtures(tmp_path)
    registry = Registry.load(files["agents"])
    before = {a.id for a in registry.agents}
    files["agents"].chmod(0o666)
    edited = tmp_path / "edited.yaml"
    edited.write_text(files["agents"].read_text())
    add_agent(edited, id="intruder-bot", owner="mallory", team="x", public_jwk=generate_key("Ed25519")[1])
    files["agents"].write_text(edited.read_text())  # what anyone could now write
    with pytest.raises(ConfigError, match="writable by everyone"):
        registry.reload_if_changed()
    assert {a.id for a in registry.agents} == before


def test_serve_refuses_a_world_writable_approvers_file(tmp_path, prefix, redis_url):
    """Issue 14.13, end to end: `jitgate serve` with a world-writable approvers file refuses to start."""
    files = _copy_fixtures(tmp_path)
    files["approvers"].chmod(0o666)
    env = jitgate_env(tmp_path, prefix, _b64(os.urandom(32)), redis_url, JITGATE_APPROVERS_FILE=str(files["approvers"]))
    out = run_cli(env, "serve", "--port", "0", timeout=60)
    assert out.returncode != 0 and f"chmod o-w {files['approvers']}" in out.stderr


# ---------------------------------------------------------------------- private keys
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666])
def test_the_client_refuses_a_key_others_may_read(tmp_path, mode):
    """Issue 14.13: "the client loads a world-readable private key silently": like OpenSSH, a key
    file the group or others may read is refused, naming it and `chmod 600`."""
    from broker.client import AgentKey, load_key

    key = tmp_path / "agent.pem"
    key.write_bytes(generate_key("P-256")[0])
    key.chmod(mode)
    for load in (lambda: load_key(key), lambda: load_key(str(key)), lambda: AgentKey("a", key)):
        with pytest.raises(ConfigError) as e:
            load()
        assert f"chmod 600 {key}" in e.value.detail
    key.chmod(0o600)
    from broker.jose import read_private_key

    assert load_key(key) is not None and read_private_key(key) is not None


def test_the_agent_cli_refuses_a_readable_key_cleanly(tmp_path):
    """Issue 14.13: `jitgate-agent` with a world-readable key exits 1 with the chmod, no traceback."""
    key = tmp_path / "agent.pem"
    key.write_bytes(generate_key("Ed25519")[0])
    key.chmod(0o644)
    env = {**os.environ, "JITGATE_URL": "http://127.0.0.1:9", "JITGATE_AGENT_ID": "a", "JITGATE_AGENT_KEY": str(key)}
    out = subprocess.run([sys.executable, "-m", "broker.client.cli", "status", "0123456789abcdef"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert out.returncode == 1, out
    assert f"chmod 600 {key}" in out.stderr and "Traceback" not in out.stderr


def test_init_writes_files_that_pass_the_checks_under_any_umask(tmp_path):
    """`jitgate init` creates .env and the demo key 0600 from the first byte (umask 000 too), so
    the refusals above never hit a fresh install."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITGATE_", "REDIS_URL"))}
    dotenv, data = tmp_path / ".env", tmp_path / "data"
    out = subprocess.run([sys.executable, "-m", "broker.cli", "init", "--env", str(dotenv), "--data-dir", str(data)],
                         env=env, capture_output=True, text=True, timeout=60, cwd=ROOT, umask=0, check=False)
    assert out.returncode == 0, out.stderr
    assert dotenv.stat().st_mode & 0o777 == 0o600 and (data / "demo-agent.pem").stat().st_mode & 0o777 == 0o600
    from broker.jose import read_private_key

    settings = Settings.from_env(environment(dotenv))
    read_private_key(data / "demo-agent.pem")
    assert Registry.load(settings.agents_file).agent("demo-agent") is not None
