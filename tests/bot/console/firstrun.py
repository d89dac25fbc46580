"""The `make run` set-up in a temporary folder: `jitgate init`, then `jitgate serve` with the
example policies and approvers, on the test Redis (under the test's prefix)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.process import ROOT, BrokerProcess, run_cli

LINK_RE = re.compile(r"(http://127\.0\.0\.1:\d+/console/login\?token=[A-Za-z0-9_-]+)")


def first_run_env(tmp: Path, prefix: str, redis_url: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JITGATE_", "REDIS_URL", "SLACK_", "MICROSOFT_", "TEAMS_"))}
    env.update(JITGATE_ENV_FILE=str(tmp / ".env"), REDIS_URL=redis_url, JITGATE_REDIS_PREFIX=prefix,
               JITGATE_SWEEP_INTERVAL_S="0.1")
    return env


def wait_for(predicate, timeout: float, what: str, output=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; output so far:\n{output()}")


class FirstRun:
    """`jitgate init` + `jitgate serve` as a newcomer's `make run` does them."""

    def __init__(self, tmp: Path, prefix: str, redis_url: str) -> None:
        self.tmp = tmp
        self.env = first_run_env(tmp, prefix, redis_url)
        self.broker = BrokerProcess(self.env, "--first-run")
        self.url = self.broker.url
        init = run_cli(self.env, "init", "--env", str(tmp / ".env"), "--data-dir", str(tmp / "data"),
                       "--port", str(self.broker.port))
        assert init.returncode == 0, init.stderr
        self.demos: list[tuple[subprocess.Popen, object]] = []

    def start(self) -> str:
        """Start the broker; return the sign-in link its banner printed."""
        self.broker.start()
        return wait_for(lambda: (m := LINK_RE.search(self.broker.output())) and m.group(1), 10,
                        "the sign-in link", self.broker.output)

    def demo(self, *args: str) -> "Demo":
        log = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "demo", *args], env=self.env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        d = Demo(proc, log)
        self.demos.append(d)
        return d

    def stop(self) -> str:
        for d in self.demos:
            d.stop()
        return self.broker.stop()


class Demo:
    """A running `jitgate demo`."""

    def __init__(self, proc: subprocess.Popen, log) -> None:
        self.proc = proc
        self.log = log

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def request_id(self, timeout: float = 20) -> str:
        return wait_for(lambda: (m := re.search(r"request (\w+): policy said", self.output())) and m.group(1),
                        timeout, "the demo's request", self.output)

    def wait_for(self, text: str, timeout: float = 20) -> None:
        wait_for(lambda: text in self.output(), timeout, repr(text), self.output)

    def finish(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
