"""deploy/Dockerfile, checked without a Docker engine (there is none on this machine).

Issue 13 item 6: "a Dockerfile (slim Python base, non-root user, HEALTHCHECK on /healthz,
no secrets baked in)". hadolint lints it in .ci/steps/30-deploy.sh. Here: its instructions
are read and checked, and its run-time commands (CMD and HEALTHCHECK) are run for real with
the image's settings against a broker from this checkout.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from tests.deploy.common import DEPLOY, ROOT, SECRET_SETTINGS, ServedAsInContainer, settings_read_by_config

DOCKERFILE = DEPLOY / "Dockerfile"
HEALTHCHECK = DEPLOY / "healthcheck.py"
SETTING_PREFIXES = ("JITGATE_", "REDIS_", "SLACK_", "MICROSOFT_", "TEAMS_")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        word, _, rest = text.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation"
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last:]


def args_defaults() -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest)


def env_of_image() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in final_stage():
        if word == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", rest):
                env[name] = value
    return env


def exec_form(word: str) -> list[str]:
    (rest,) = [rest for w, rest in final_stage() if w == word]
    if word == "HEALTHCHECK":
        rest = rest[rest.index("CMD") + 3:].strip()
    value = json.loads(rest)  # exec form: a JSON array, so signals reach the process
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def test_slim_python_base_and_numeric_non_root_user():
    """Item 6: "slim Python base, non-root user" (numeric, so Kubernetes' runAsNonRoot can
    verify it without a passwd lookup)."""
    arg = args_defaults()
    for word, rest in instructions():
        if word == "FROM":
            image = rest.split()[0]
            image = arg.get(image.strip("${}"), image)
            assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim(-\w+)?", image), image
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users, "the image runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_healthcheck_asks_healthz():
    """Item 6: "HEALTHCHECK on /healthz"."""
    cmd = exec_form("HEALTHCHECK")
    assert cmd == ["jitgate-healthcheck", "/healthz"]
    assert "install -m 0755 /src/deploy/healthcheck.py /opt/jitgate/bin/jitgate-healthcheck" in DOCKERFILE.read_text()


def test_no_secret_baked_in_and_every_setting_is_real():
    """Item 6: "no secrets baked in": no secret setting in ENV or ARG; the build context
    leaves out .env files, keys and the deploy env/secret files. And the settings the image
    sets are ones broker/config.py reads."""
    names = set(env_of_image()) | {rest.split("=")[0] for word, rest in instructions() if word == "ARG"}
    assert not names & SECRET_SETTINGS
    settings = {n for n in env_of_image() if n.startswith(SETTING_PREFIXES)}
    assert settings <= settings_read_by_config(), sorted(settings - settings_read_by_config())
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for pattern in ("**/.env", "**/*.pem", ".jitgate/", "deploy/jitgate.env", "deploy/k8s/secrets.env", ".git/",
                    ".venv/"):
        assert pattern in ignore, pattern


def image_env(tmp_path: Path, **extra: str) -> dict:
    """The image's ENV over this machine's environment (PATH led by this checkout's virtualenv,
    where `jitgate` is installed), with the files the image expects at /etc/jitgate here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    image = env_of_image()
    env.update({k: v for k, v in image.items() if k.startswith(SETTING_PREFIXES)})
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    agents = tmp_path / "agents.yaml"
    agents.write_text("agents: []\n")
    env.update(
        JITGATE_POLICY_DIR=str(DEPLOY / "k8s/config/policies"),
        JITGATE_AGENTS_FILE=str(agents),
        JITGATE_APPROVERS_FILE=str(DEPLOY / "k8s/config/directory/approvers.yaml"),
        JITGATE_TARGETS_FILE=str(DEPLOY / "k8s/config/directory/targets.yaml"),
        JITGATE_DATA_DIR=str(tmp_path / "data"),
        JITGATE_ENV_FILE=str(tmp_path / "absent.env"),
    )
    env.update(extra)
    return env


def test_command_refuses_to_start_without_redis_url(tmp_path):
    """The image's command without REDIS_URL: an embedded Redis inside a container would
    lose its data with the container and be shared by no replica, so it refuses (exit 2),
    saying why, instead of starting one."""
    cmd = exec_form("CMD")
    env = image_env(tmp_path, JITGATE_ISSUER="https://jitgate.test",
                    JITGATE_KEY_ENCRYPTION_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "REDIS_URL is not set" in done.stderr
    assert not (tmp_path / "data").exists(), "no embedded Redis was started"


def healthcheck(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], env=env, capture_output=True, text=True,
                          timeout=15)


def test_command_serves_on_every_address_and_the_healthcheck_follows_it(tmp_path, redis_url, prefix, redis):
    """Item 6: the image "runs jitgate serve binding 0.0.0.0 ... with REDIS_URL from the
    environment", and its HEALTHCHECK passes while the broker serves and fails once it is gone."""
    env = image_env(tmp_path, REDIS_URL=redis_url, JITGATE_REDIS_PREFIX=prefix, JITGATE_CONSOLE="0",
                    JITGATE_ISSUER="https://jitgate.test",
                    JITGATE_KEY_ENCRYPTION_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                    # a proxy in the environment must not catch the check's loopback call
                    HTTP_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    assert env["JITGATE_HOST"] == "0.0.0.0"
    broker = ServedAsInContainer(env, command=exec_form("CMD"), cwd=tmp_path).start()
    try:
        pid = broker.proc.pid
        # `exec`: the broker itself is the container's main process and gets Docker's SIGTERM.
        assert b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        listening = Path(f"/proc/{pid}/net/tcp").read_text()
        port_hex = f"{broker.port:04X}"
        assert any(row.split()[1] == f"00000000:{port_hex}" and row.split()[3] == "0A"
                   for row in listening.splitlines()[1:]), "not listening on 0.0.0.0"
        assert healthcheck(broker.env, "/healthz").returncode == 0
        assert healthcheck(broker.env, "/readyz").returncode == 0
        missing = healthcheck(broker.env, "/no-such-path")
        assert missing.returncode == 1 and "404" in missing.stderr
    finally:
        broker.stop()
    gone = healthcheck(broker.env, "/healthz")
    assert gone.returncode == 1 and "unhealthy" in gone.stderr


def test_build_context_holds_what_the_install_needs():
    """The build stage copies the repository root minus Dockerfile.dockerignore and runs
    ``pip install /src``: what the package build reads must not be ignored."""
    ignore = {line.strip().rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    for needed in ("pyproject.toml", "README.md", "broker", "bot", "deploy", "deploy/healthcheck.py"):
        assert needed not in ignore and (ROOT / needed).exists(), needed
