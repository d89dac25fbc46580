"""The distributions as a user gets them, built once per session: the server's sdist and
wheel (``python -m build``) and the client's (``client/build.py``), from a copy of the work
tree so that building leaves nothing in it. Each test installs one into a fresh virtual
environment *with* dependency resolution (pip's cache, else the package index), exactly as
``pip install`` would.

The tests here are marked ``packaging``; ``-m 'not packaging'`` leaves them out of a
quick local run (CI runs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.client.conftest import live, live_settings  # noqa: F401 - the client test drives a live broker
from tests.support.process import ROOT

BUILD_TIMEOUT_S = 240
INSTALL_TIMEOUT_S = 240
# Not part of the package; copying them would only slow the build down.
UNSHIPPED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist",
                                   ".pytest_cache", ".jitgate", ".env")


def pytest_configure(config):
    config.addinivalue_line("markers", "packaging: builds the distributions and installs them in fresh virtual "
                                       "environments (a minute or two; needs pip's cache or the package index)")


@dataclass(frozen=True)
class Dists:
    server_wheel: Path
    server_sdist: Path
    client_wheel: Path
    client_sdist: Path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no jitgate settings, no Redis URL, nothing on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JITGATE_", "REDIS_URL", "SLACK_", "MICROSOFT_", "TEAMS_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


def check(cmd: list[str], timeout: float, **kw) -> str:
    """Run ``cmd``; return its output, or fail the test with it."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def fresh_venv(path: Path, *requirements: str) -> Path:
    """A new virtual environment with ``requirements`` installed, dependencies resolved; its bin folder."""
    check([sys.executable, "-m", "venv", str(path)], 60)
    check([str(path / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
          INSTALL_TIMEOUT_S, env=clean_env(), cwd=path)  # outside the work tree (see installed())
    return path / "bin"


def installed(bin_dir: Path) -> set[str]:
    """Normalised names of every distribution installed in the environment of ``bin_dir``."""
    script = ("import importlib.metadata as m, re\n"
              "for d in m.distributions(): print(re.sub(r'[-_.]+', '-', d.metadata['Name']).lower())")
    # Run outside the work tree: its jitgate.egg-info and broker/ would be found from the cwd.
    return set(check([str(bin_dir / "python"), "-c", script], 60, env=clean_env(), cwd=bin_dir).split())


@pytest.fixture(scope="session")
def dists(tmp_path_factory) -> Dists:
    """Both distributions, built side by side from one copy of the work tree."""
    tmp = tmp_path_factory.mktemp("dists")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=UNSHIPPED)
    out = tmp / "dist"
    builds = [
        subprocess.Popen([sys.executable, "-m", "build", "--outdir", str(out), str(src)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env()),
        subprocess.Popen([sys.executable, str(src / "client/build.py"), "--outdir", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env()),
    ]
    for proc in builds:
        try:
            log, _ = proc.communicate(timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for p in builds:
                p.kill()
            raise
        assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{log}"

    def one(pattern: str) -> Path:
        found = sorted(out.glob(pattern))
        assert len(found) == 1, f"expected one {pattern} in {out}: {found}"
        return found[0]

    return Dists(one("jitgate-*.whl"), one("jitgate-*.tar.gz"), one("jitgate_client-*.whl"),
                 one("jitgate_client-*.tar.gz"))
