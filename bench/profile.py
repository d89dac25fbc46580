"""Sampling profiles of a broker process with py-spy (from outside, non-blocking), summed
up as the functions holding the most samples."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from .procs import _preexec


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Profile:
    """``py-spy record`` of ``pid`` for ``seconds`` into a collapsed-stack file."""

    def __init__(self, pid: int, seconds: float, out: Path, cpus: set[int] | None) -> None:
        self.out = out
        self.proc: subprocess.Popen | None = None
        self.error: str | None = None
        exe = py_spy()
        if exe is None:
            self.error = "py-spy is not installed (pip install -e '.[bench]')"
            return
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "200",
             "--nonblocking", "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_preexec(cpus))

    def wait(self, timeout: float = 120) -> None:
        if self.proc is None:
            return
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode != 0 or not self.out.exists():
            self.error = f"py-spy failed: {(err or '').strip()[-300:]}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


_FRAME = re.compile(r"^(?P<fn>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")

LIBRARIES = [  # leaf file path fragment -> what it is
    ("redis/", "Redis clients (redis-py; broker/redisline.py)"),
    ("hiredis", "Redis clients (redis-py; broker/redisline.py)"),
    ("broker/redisline", "Redis clients (redis-py; broker/redisline.py)"),
    ("starlette/", "Starlette"),
    ("uvicorn/", "uvicorn / httptools"),
    ("httptools", "uvicorn / httptools"),
    ("jwt/", "pyjwt / cryptography (signatures)"),
    ("cryptography/", "pyjwt / cryptography (signatures)"),
    ("cedarpy", "cedarpy"),
    ("asyncio/", "asyncio"),
    ("uvloop", "asyncio"),
    ("logging/", "logging"),
    ("apscheduler/", "APScheduler"),
    ("broker/", "jitgate broker code"),
]


def _split(frame: str) -> tuple[str, str]:
    """(function, file relative to its package root) of one py-spy frame."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    path = m.group("file")
    for marker in ("site-packages/", "/main/", "lib/python3.11/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return m.group("fn"), path


def _library(path: str) -> str:
    for fragment, name in LIBRARIES:
        if fragment in path:
            return name
    return path.split("/", 1)[0] or "other"


def summarize(path: Path, top: int = 12) -> dict:
    """Where the samples went: by the innermost jitgate function on the stack (the broker
    operation responsible) and by the library running at the top of the stack."""
    by_broker: Counter = Counter()
    by_library: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_split(f) for f in stack.split(";")]
        total += n
        by_library[_library(frames[-1][1])] += n
        inner = next((f"{fn} ({p})" for fn, p in reversed(frames) if p.startswith("broker/") and fn != "<module>"
                      and fn not in ("main", "cmd_serve")), None)
        by_broker[inner or f"outside jitgate code: {_library(frames[-1][1])}"] += n
    if not total:
        return {"samples": 0}

    def pct(c: Counter) -> list:
        return [[f, round(100 * k / total, 1)] for f, k in c.most_common(top)]

    return {"samples": total, "by_function": pct(by_broker), "by_library": pct(by_library)}
