"""Where signed audit checkpoints go besides Redis: places the Redis operator does not control.

* :class:`FileSink` appends each checkpoint as one JSON line ``{"checkpoint": note}`` to a file
  on the broker's disk (opened append-only, flushed and fsynced per checkpoint);
  ``jitgate audit verify --checkpoints FILE`` reads it back.
* :class:`WitnessSink` POSTs each checkpoint (``text/plain``, the signed note) to an HTTP
  witness, at least once: a failed POST is retried with backoff from an in-memory queue (bounded;
  when it overflows the oldest are dropped, the newer checkpoints still cover them).
* :class:`SyslogSink` sends each checkpoint as one syslog message (RFC 3164 over UDP or a
  local socket, through :mod:`logging.handlers`).

:class:`Sinks` fans a checkpoint out and says whether at least one sink took it now; the
audit log refuses new grants when none has for longer than a bound (``broker/audit.py``).
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import socket
from collections import deque
from pathlib import Path
from typing import Awaitable, Callable

import httpx
import orjson

log = logging.getLogger("jitgate.audit.sinks")


class FileSink:
    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    async def publish(self, note: str) -> bool:
        line = orjson.dumps({"checkpoint": note}) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    async def close(self) -> None:
        return None


class SyslogSink:
    name = "syslog"

    def __init__(self, address: str) -> None:
        if address.startswith("/"):
            addr: str | tuple[str, int] = address
            kind = socket.SOCK_DGRAM
        else:
            host, _, port = address.rpartition(":")
            addr, kind = (host or "localhost", int(port or 514)), socket.SOCK_DGRAM
        self.handler = logging.handlers.SysLogHandler(address=addr, facility=logging.handlers.SysLogHandler.LOG_AUTH,
                                                      socktype=kind)
        self.handler.setFormatter(logging.Formatter("jitgate-audit: %(message)s"))

    async def publish(self, note: str) -> bool:
        record = logging.LogRecord("jitgate.audit", logging.INFO, __file__, 0, "checkpoint %s", (note.replace("\n", "\\n"),),
                                   None)
        try:
            self.handler.emit(record)  # SysLogHandler.handleError would print; emit raises nothing we can see
            self.handler.flush()
        except OSError:
            return False
        return True

    async def close(self) -> None:
        self.handler.close()


class WitnessSink:
    """POST every checkpoint to ``url``, at least once (retried with backoff until accepted)."""

    name = "witness"

    def __init__(self, url: str, *, timeout_s: float = 2.0, max_queue: int = 10_000,
                 on_accept: Callable[[], Awaitable[None]] | None = None, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.queue: deque[str] = deque(maxlen=max_queue)
        self.on_accept = on_accept
        self.client = client or httpx.AsyncClient(timeout=timeout_s)
        self.accepted = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def publish(self, note: str) -> bool:
        self.queue.append(note)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()
        return False  # accepted later: on_accept reports it

    async def _run(self) -> None:
        delay = 0.1
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                note = self.queue[0]
                try:
                    r = await self.client.post(self.url, content=note.encode(), headers={"Content-Type": "text/plain"})
                    ok = 200 <= r.status_code < 300
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    log.warning("audit witness %s did not accept a checkpoint; retrying in %.1f s", self.url, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay = 0.1
                if self.queue and self.queue[0] is note:
                    self.queue.popleft()
                self.accepted += 1
                if self.on_accept is not None:
                    try:
                        await self.on_accept()
                    except Exception:  # noqa: BLE001 - the health flag is refreshed on the next acceptance
                        log.exception("recording a witness acceptance failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        await self.client.aclose()


class Sinks:
    """Every configured sink; a failing one never stops the others."""

    def __init__(self, sinks: list) -> None:
        self.sinks = sinks

    async def publish(self, note: str) -> bool:
        """Hand ``note`` to every sink; True when at least one took it now."""
        took = False
        for s in self.sinks:
            try:
                took = await s.publish(note) or took
            except Exception as e:  # noqa: BLE001 - logged; the health check counts the failures
                log.error("audit checkpoint sink %s failed: %r", s.name, e)
        return took

    async def close(self) -> None:
        for s in self.sinks:
            await s.close()

    @classmethod
    def from_settings(cls, settings, on_accept=None) -> "Sinks":
        out: list = []
        if settings.audit_checkpoint_path is not None:
            out.append(FileSink(settings.audit_checkpoint_path))
        for url in settings.audit_witness_urls:
            out.append(WitnessSink(url, on_accept=on_accept))
        if settings.audit_syslog:
            out.append(SyslogSink(settings.audit_syslog))
        return cls(out)
