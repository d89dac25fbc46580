"""What the deployment-file tests share: the settings the code reads, and env files."""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path


from tests.support.process import BrokerProcess

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONFIG_PY = ROOT / "broker" / "config.py"
# Each desk reads its own settings from the same environment (issue 15).
DESK_SETTINGS_PY = (ROOT / "bot" / "slack" / "settings.py", ROOT / "bot" / "teams" / "settings.py")

# Settings that hold secrets: they must come from the env file / Secret, never be written
# into a manifest, the compose file or the image.
SECRET_SETTINGS = {"JITGATE_KEY_ENCRYPTION_KEY", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN",
                   "MICROSOFT_APP_PASSWORD"}

_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def _is_env(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and "env" in node.id.lower()


def settings_read_by_config() -> set[str]:
    """The environment variable names ``broker/config.py`` and the desks' settings modules read:
    the first string argument of ``env.get(...)``, ``env[...]`` and of helpers called as
    ``helper(env, "NAME", ...)``."""
    names: set[str] = set()
    nodes = [n for path in (CONFIG_PY, *DESK_SETTINGS_PY) for n in ast.walk(ast.parse(path.read_text()))]
    for node in nodes:
        candidate = None
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and _is_env(func.value) and node.args:
                candidate = node.args[0]
            elif len(node.args) >= 2 and _is_env(node.args[0]):
                candidate = node.args[1]
        elif isinstance(node, ast.Subscript) and _is_env(node.value):
            candidate = node.slice
        if isinstance(candidate, ast.Constant) and isinstance(candidate.value, str) \
                and _NAME.fullmatch(candidate.value):
            names.add(candidate.value)
    # Guard against a refactor that hides the names from this reader: the check would
    # then compare against nothing and pass for the wrong reason.
    assert {"JITGATE_ISSUER", "JITGATE_KEY_ENCRYPTION_KEY", "REDIS_URL", "SLACK_BOT_TOKEN",
            "MICROSOFT_APP_ID", "JITGATE_CONSOLE"} <= names and len(names) >= 40, (
        f"could not read the setting names from {CONFIG_PY} and {DESK_SETTINGS_PY} (found {sorted(names)}): "
        "update this reader")
    return names


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines as kustomize and compose read them (no inline comments used)."""
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path}: not a NAME=value line: {raw!r}"
        out[name.strip()] = value.strip()
    return out


class ServedAsInContainer(BrokerProcess):
    """``jitgate serve`` with no command-line options (or ``command``, the image's own), as a
    container runs it: the address comes from JITGATE_HOST (0.0.0.0 in the deployment
    files), the port from JITGATE_PORT (set here to a free one)."""

    def __init__(self, env: dict, command: list[str] | None = None, cwd: Path = ROOT) -> None:
        super().__init__(env)
        self.env = {**env, "JITGATE_PORT": str(self.port)}
        self._command = command or [sys.executable, "-m", "broker.cli", "serve"]
        self.cwd = cwd

    def command(self) -> list[str]:
        return self._command


def start_broker(env: dict[str, str], mounts: dict[str, Path], *, redis_url: str, prefix: str, tmp: Path,
                 kek: str) -> ServedAsInContainer:
    """Start ``jitgate serve`` with a container's settings, as the deployment files give them.

    ``mounts`` maps a container path to the local folder holding what is mounted there;
    settings whose value lies under a mount point are rewritten to the local folder.
    Only what cannot be the same here is replaced: the key-encryption key (the files hold a
    placeholder), REDIS_URL (the test's Redis), the port (a free one) and a key prefix
    private to the test.
    """
    run_env = {k: v for k, v in os.environ.items()
               if not k.startswith(("JITGATE_", "REDIS_URL", "SLACK_", "MICROSOFT_", "TEAMS_"))}
    for name, value in env.items():
        under = [m for m in mounts if value == m or value.startswith(m.rstrip("/") + "/")]
        if under:  # the innermost mount point holds it
            mount = max(under, key=len)
            value = str(mounts[mount]) + value[len(mount.rstrip("/")):]
        run_env[name] = value
    run_env.update(JITGATE_KEY_ENCRYPTION_KEY=kek, REDIS_URL=redis_url, JITGATE_REDIS_PREFIX=prefix,
                   JITGATE_ENV_FILE=str(tmp / "absent.env"))
    return ServedAsInContainer(run_env).start()
