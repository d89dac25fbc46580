"""Run real ``jitgate`` processes for tests that need a process boundary."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from broker.embedded_redis import free_port
from support.env import jitgate_env  # noqa: F401 - shared with the bench; the tests import it from here

ROOT = Path(__file__).resolve().parents[2]


def run_cli(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``jitgate ARGS`` and capture its output."""
    return subprocess.run([sys.executable, "-m", "broker.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


class BrokerProcess:
    """``jitgate serve`` on a free loopback port."""

    def __init__(self, env: dict, *args: str) -> None:
        self.env = env
        self.args = args  # more `jitgate serve` arguments (e.g. --first-run)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.cwd: Path = ROOT

    def command(self) -> list[str]:
        """The command line that starts this broker."""
        return [sys.executable, "-m", "broker.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                *self.args]

    def start(self, timeout: float = 30) -> "BrokerProcess":
        """Start it and wait until ``/readyz`` answers 200 (its output, if it exits first)."""
        # Output goes to a file: a pipe nobody reads would block a chatty broker.
        self._log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.command(), env=self.env, cwd=self.cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited ({self.proc.returncode}): {self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"broker did not become ready: {self.output()}")

    def stop(self, timeout: float = 15) -> str:
        """Stop with SIGTERM (as Ctrl-C would) and return what it printed."""
        if not self.proc:
            return ""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        out = self.output()
        self._log.close()
        self.proc = None
        return out

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read()

    def __enter__(self) -> "BrokerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
