"""A fault-injecting TCP proxy for tests: it stands between the broker and a real Redis and
can cut every connection, refuse new ones, or drop connections at random points.

Only loopback; the far side is the real server, never a fake.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import suppress

from redis.connection import parse_url


class TcpProxy:
    def __init__(self, upstream_url: str, *, seed: int = 0) -> None:
        """``upstream_url``: the real Redis (``redis://host:port/db`` or ``unix:///path?db=N``)."""
        opts = parse_url(upstream_url)
        self._path, self._host, self._port = opts.get("path"), opts.get("host", "127.0.0.1"), opts.get("port", 6379)
        self.db = int(opts.get("db", 0))
        self.port = 0
        self.refusing = False
        self.drop_chance = 0.0  # per forwarded chunk, either direction
        self.dropped = 0
        self._rng = random.Random(seed)
        self._server: asyncio.base_events.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> "TcpProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self) -> str:
        """The proxied Redis: the same database on the proxy's loopback port."""
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def cut(self) -> None:
        """Close every open connection and refuse new ones until :meth:`restore`."""
        self.refusing = True
        self._close_all()

    def restore(self) -> None:
        self.refusing = False
        self.drop_chance = 0.0

    async def stop(self) -> None:
        self._close_all()
        if self._server:
            self._server.close()
            with suppress(Exception):
                await self._server.wait_closed()

    def _close_all(self) -> None:
        for w in list(self._links):
            w.transport.abort()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            if self._path:
                up_reader, up_writer = await asyncio.open_unix_connection(self._path)
            else:
                up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer, writer), self._pipe(up_reader, writer, up_writer),
                             return_exceptions=True)
        self._links.discard(writer)
        self._links.discard(up_writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    other: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.refusing or (self.drop_chance and self._rng.random() < self.drop_chance):
                    self.dropped += 1
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            other.transport.abort()
