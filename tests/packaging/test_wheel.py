"""Issue 13, item 2: "A pip-installed jitgate starts." The wheel, installed with its
dependencies into a fresh virtual environment, runs ``jitgate init && jitgate serve`` in
an empty folder: the starter policies, approvers and targets come from the package.
"""

from __future__ import annotations

import signal
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from broker.embedded_redis import free_port
from tests.packaging.conftest import check, clean_env, fresh_venv
from tests.support.process import ROOT

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(480)]

STARTER = ["broker/defaults/approvers.yaml", "broker/defaults/targets.yaml",
           *(f"broker/defaults/policies/{p.relative_to(ROOT / 'policies')}"
             for p in sorted((ROOT / "policies").rglob("*")) if p.is_file())]


def children(pid: int) -> dict[int, str]:
    """Child processes of ``pid``: pid -> command name (from /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if int(rest[1]) == pid:
            found[int(stat.parent.name)] = comm
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        text = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2] != "Z"


def test_the_distributions_carry_the_starter_files(dists):
    """The wheel and the sdist hold the default policies and example approvers and targets as files."""
    with zipfile.ZipFile(dists.server_wheel) as whl:
        names = set(whl.namelist())
        assert set(STARTER) <= names, set(STARTER) - names
        # The symlinks in the repository became the files they point at.
        assert whl.read("broker/defaults/policies/prod.cedar") == (ROOT / "policies/prod.cedar").read_bytes()
    with tarfile.open(dists.server_sdist) as sdist:
        root = sdist.getnames()[0].split("/")[0]
        members = {m.name.removeprefix(root + "/"): m for m in sdist.getmembers()}
        assert all(members[name].isfile() for name in STARTER), [n for n in STARTER if n not in members]


def test_a_pip_installed_jitgate_inits_and_serves_in_an_empty_folder(dists, tmp_path):
    """`pip install jitgate-*.whl`, then `jitgate init && jitgate serve` in an empty folder, REDIS_URL unset:
    it answers /healthz and /readyz on the embedded Redis, and SIGINT stops it and its redis-server."""
    bin_dir = fresh_venv(tmp_path / "venv", str(dists.server_wheel))
    folder = tmp_path / "empty"
    folder.mkdir()
    env = clean_env()
    where = check([str(bin_dir / "python"), "-c", "import broker; print(broker.__file__)"], 30, cwd=folder, env=env)
    assert where.startswith(str(tmp_path / "venv")), f"not the installed package: {where}"

    port = free_port()
    out = check([str(bin_dir / "jitgate"), "init", "--port", str(port)], 60, cwd=folder, env=env)
    settings = dict(line.split("=", 1) for line in (folder / ".env").read_text().splitlines() if "=" in line)
    assert settings["JITGATE_POLICY_DIR"] == ".jitgate/policies", out
    assert settings["JITGATE_APPROVERS_FILE"] == ".jitgate/approvers.yaml"
    assert settings["JITGATE_TARGETS_FILE"] == ".jitgate/targets.yaml"
    for p in (ROOT / "policies").rglob("*"):  # the policies and their tests
        if p.is_file():
            assert (folder / ".jitgate/policies" / p.relative_to(ROOT / "policies")).read_text() == p.read_text()
    assert (folder / ".jitgate/approvers.yaml").read_text() == (ROOT / "examples/approvers.yaml").read_text()

    log = (tmp_path / "serve.log").open("w+")
    serve = subprocess.Popen([str(bin_dir / "jitgate"), "serve"], cwd=folder, env=env, stdout=log,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and serve.poll() is None and not ready:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        log.seek(0)
        assert ready, f"jitgate serve did not answer /healthz (exit {serve.poll()}):\n{log.read()}"
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        redis = [pid for pid, comm in children(serve.pid).items() if comm == "redis-server"]
        assert len(redis) == 1, f"expected one embedded redis-server child, found {children(serve.pid)}"

        serve.send_signal(signal.SIGINT)
        code = serve.wait(timeout=30)
        log.seek(0)
        output = log.read()
        assert code in (0, 130), f"exit {code}:\n{output}"  # 130: uvicorn re-raises the SIGINT it handled
        deadline = time.monotonic() + 10
        while running(redis[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(redis[0]), "the embedded redis-server outlived jitgate serve"
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        log.close()
