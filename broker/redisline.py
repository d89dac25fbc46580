"""One multiplexed Redis connection for the broker's hot path.

redis-py's asyncio client spends ~100 µs of CPU per command on pool locks, a
``can_read`` probe at every checkout, observability hooks and per-read timeouts. Here
commands go out on one connection in the order they are issued (all those issued in one
loop turn in one write) and replies are handed to callers in that order (the Lettuce /
StackExchange.Redis pattern): ~10 µs of CPU per command at 16 in flight.

It is for request/reply commands only (Lua scripts, GET/HGETALL/HMGET, SET NX). It does
not do pub/sub, blocking commands (BLPOP, XREADGROUP BLOCK: they would stall every
caller behind them), MULTI/EXEC, RESP3, or retries: a command whose connection is lost
fails, and the caller decides, because a script may have run. redis-py stays for those.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.connection import parse_url
from redis.exceptions import (  # redis-py's, shadowing builtins: callers catch RedisError.
    AuthenticationError,
    ConnectionError,
    ResponseError,
    TimeoutError,
)

from .errors import ConfigError
from .redisconn import SentinelUrl, is_sentinel, master_address, parse_sentinel

log = logging.getLogger("jitgate.redis")

Arg = str | bytes | int | float

# URL options that only tune redis-py's own pool and sockets; meaningless here.
_IGNORED_OPTIONS = {"socket_timeout", "socket_connect_timeout", "socket_keepalive", "socket_read_size",
                    "retry_on_timeout", "retry_on_error", "max_connections", "health_check_interval",
                    "timeout", "protocol", "legacy_responses"}
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_ca_path", "ssl_ca_data", "ssl_certfile", "ssl_keyfile", "ssl_password",
                "ssl_cert_reqs", "ssl_check_hostname", "ssl_min_version", "ssl_ciphers")


@dataclass(frozen=True)
class LuaScript:
    """A Lua script and the SHA-1 Redis caches it under."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> LuaScript:
        """The script with its lowercase hex SHA-1, as EVALSHA expects."""
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


def _ssl_context(url_opts: dict[str, Any]) -> ssl.SSLContext:
    """A client TLS context from redis-py's ``ssl_*`` URL options (taken out of ``url_opts``);
    the server certificate and host name are verified unless the URL says otherwise."""
    opts = {k: url_opts.pop(k) for k in _TLS_OPTIONS if k in url_opts}
    reqs = opts.get("ssl_cert_reqs", "required")
    reqs = _CERT_REQS[reqs] if isinstance(reqs, str) else ssl.VerifyMode(reqs)
    ctx = ssl.create_default_context(cafile=opts.get("ssl_ca_certs"), capath=opts.get("ssl_ca_path"),
                                     cadata=opts.get("ssl_ca_data"))
    # Hostname checking needs verification; with cert_reqs=none redis-py turns it off too.
    ctx.check_hostname = bool(opts.get("ssl_check_hostname", True)) and reqs != ssl.CERT_NONE
    ctx.verify_mode = reqs
    if opts.get("ssl_certfile"):
        ctx.load_cert_chain(opts["ssl_certfile"], opts.get("ssl_keyfile"), opts.get("ssl_password"))
    if opts.get("ssl_min_version") is not None:
        ctx.minimum_version = ssl.TLSVersion(opts["ssl_min_version"])
    if opts.get("ssl_ciphers"):
        ctx.set_ciphers(opts["ssl_ciphers"])
    return ctx


class _Connection(asyncio.Protocol):
    """One transport and the callers waiting on it, oldest first."""

    _transport: asyncio.Transport  # Set by connection_made, before anyone can reach this object.

    def __init__(self, line: RedisLine) -> None:
        self._line = line
        self._loop = asyncio.get_running_loop()
        self._timeout_s = line._timeout_s
        self._max_in_flight = line._max_in_flight
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._outbox: list[bytes] = []  # Packed commands not yet handed to the transport.
        self._pending: deque[tuple[asyncio.Future, float]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.lost: asyncio.Future = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # A stream transport: it has write().

    def send(self, args: tuple[Arg, ...]) -> asyncio.Future:
        """Queue one command for this loop turn's write; the future gets its reply."""
        if len(self._pending) >= self._max_in_flight:
            raise ConnectionError("too many Redis commands in flight")
        packed = hiredis.pack_command(args)  # Raises TypeError before anything is written.
        fut = self._loop.create_future()
        # One write (one syscall) per loop turn for every command issued in it: at 16 in
        # flight this halves the CPU per command compared with a write per command.
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(packed)
        self._pending.append((fut, self._loop.time()))
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout_s, self._check_deadline)
        return fut

    def _flush(self) -> None:
        data = b"".join(self._outbox)
        self._outbox.clear()
        if not self._transport.is_closing():  # Lost or aborted: its callers have been failed already.
            self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._pending
        demoted = False
        try:
            while (reply := self._reader.gets()) is not False:
                fut = pending.popleft()[0]
                if isinstance(reply, ResponseError) and str(reply).startswith("READONLY"):
                    demoted = True  # a fail-over made this server a replica: reconnect to the master
                    reply = ConnectionError("Redis is a replica now (fail-over); reconnecting")
                # A cancelled caller's reply is still consumed, so the next one stays matched.
                if not fut.done():
                    if isinstance(reply, (ResponseError, ConnectionError)):
                        fut.set_exception(reply)
                    else:
                        fut.set_result(reply)
        except (hiredis.ProtocolError, IndexError):  # Garbage, or a reply nobody asked for.
            log.warning("Redis sent an unparsable or unexpected reply; aborting the connection")
            self.abort(ConnectionError("Redis protocol error; connection aborted"))
            return
        if demoted:
            log.warning("Redis answered READONLY: it is a replica now; reconnecting to the master")
            self.abort(ConnectionError("Redis is a replica now (fail-over); reconnecting"))

    def _check_deadline(self) -> None:
        # One timer per connection: only the oldest command can be late, replies come in order.
        self._timer = None
        if not self._pending:
            return
        deadline = self._pending[0][1] + self._timeout_s
        if self._loop.time() >= deadline - 0.001:  # call_at may fire within clock resolution early.
            log.warning("Redis did not answer within %.1f s; aborting the connection (%d commands pending)",
                        self._timeout_s, len(self._pending))
            self.abort(TimeoutError(f"Redis did not answer within {self._timeout_s} s"))
        else:
            self._timer = self._loop.call_at(deadline, self._check_deadline)

    def abort(self, exc: Exception) -> None:
        """Fail every waiting caller with ``exc`` and drop the transport."""
        self._detach(exc)
        self._transport.abort()

    def _detach(self, exc: Exception) -> None:
        if self._line._conn is self:
            self._line._conn = None  # The next command reconnects.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            fut = self._pending.popleft()[0]
            if not fut.done():
                fut.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._line._conn is self:
            log.warning("Redis connection lost (%d commands pending): %s", len(self._pending),
                        exc or "closed by server")
        self._detach(ConnectionError(f"Redis connection lost: {exc or 'closed by server'}"))
        if not self.lost.done():
            self.lost.set_result(None)


class RedisLine:
    """One multiplexed connection to Redis: commands are written as they are issued and
    replies are matched to callers in order."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, connect_timeout_s: float = 5.0,
                 max_in_flight: int = 10_000) -> None:
        # Sentinel: the master is asked for at every (re)connect and its role checked.
        self._sentinel: SentinelUrl | None = parse_sentinel(url) if is_sentinel(url) else None
        if self._sentinel is not None:
            target = self._sentinel
            url = f"{'rediss' if target.tls else 'redis'}://localhost/{target.db}"
        opts = parse_url(url)
        self._path: str | None = opts.pop("path", None)
        self._host: str = opts.pop("host", None) or "localhost"
        self._port: int = opts.pop("port", None) or 6379
        self._db: int = opts.pop("db", 0) or 0
        self._username: str | None = opts.pop("username", None)
        self._password: str | None = opts.pop("password", None)
        self._client_name: str | None = opts.pop("client_name", None)
        if self._sentinel is not None:
            self._username, self._password = self._sentinel.username, self._sentinel.password
        self._ssl = _ssl_context(opts) if url.lower().startswith("rediss://") else None
        for key in (*_IGNORED_OPTIONS, "connection_class"):
            opts.pop(key, None)
        if opts:  # Fail closed: an option nobody honours (a TLS one, say) is an error, not a no-op.
            raise ConfigError(f"Redis URL option not supported by RedisLine: {', '.join(sorted(opts))}")
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._max_in_flight = max_in_flight
        self._conn: _Connection | None = None  # Ready for commands; None while (re)connecting.
        self._last: _Connection | None = None  # The newest transport, even mid-handshake: aclose closes it.
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (bytes, int, list, None); error replies raise."""
        conn = self._conn
        if conn is None:
            conn = await self._connected()
        return await conn.send(args)

    async def run_script(self, script: LuaScript, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """EVALSHA the script, loading it with EVAL once if Redis does not have it cached."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        # NOSCRIPT means nothing ran, so this is not a retry; EVAL also caches the script.
        return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def aclose(self) -> None:
        """Fail waiting callers, close the connection; later commands raise ConnectionError."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.wait([self._connecting])
        conn, self._conn = self._last, None
        if conn is not None:
            conn.abort(ConnectionError("Redis line closed"))
            # Wait for the transport to let go of its socket: no ResourceWarning later.
            await asyncio.wait_for(asyncio.shield(conn.lost), self._connect_timeout_s)

    async def _connected(self) -> _Connection:
        if self._closed:
            raise ConnectionError("closed")
        if self._connecting is None:
            # Concurrent first callers share this attempt; it is not retried.
            self._connecting = asyncio.get_running_loop().create_task(self._open())
            self._connecting.add_done_callback(self._connect_done)
        # Shielded: one cancelled caller must not cancel the attempt the others wait on.
        conn = await asyncio.shield(self._connecting)
        if conn is not self._conn:  # Lost or closed before this caller woke up: do not write into it.
            raise ConnectionError("Redis connection lost")
        return conn

    def _connect_done(self, task: asyncio.Task) -> None:
        self._connecting = None
        if not task.cancelled():
            task.exception()  # Retrieved here, so an attempt nobody awaits is not logged.

    async def _open(self) -> _Connection:
        conn: _Connection | None = None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if self._sentinel is not None:
                    self._host, self._port = await master_address(self._sentinel)
                if self._path:
                    _, conn = await loop.create_unix_connection(lambda: _Connection(self), self._path)
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(self), self._host, self._port, ssl=self._ssl,
                        server_hostname=self._host if self._ssl else None)
                self._last = conn
                hello = []
                if self._password is not None:
                    auth = ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
                    hello.append(conn.send(auth))
                if self._db:
                    hello.append(conn.send(("SELECT", self._db)))
                if self._client_name:
                    hello.append(conn.send(("CLIENT", "SETNAME", self._client_name)))
                if self._sentinel is not None:
                    hello.append(conn.send(("ROLE",)))  # the sentinels may lag a fail-over
                replies = await asyncio.gather(*hello, return_exceptions=True)
        except builtins.TimeoutError as exc:  # asyncio.timeout's; TimeoutError here is redis-py's.
            self._discard(conn)
            raise TimeoutError(f"Timed out connecting to Redis after {self._connect_timeout_s} s") from exc
        except OSError as exc:  # Refused, unreachable, TLS verification failed.
            self._discard(conn)
            raise ConnectionError(f"Error connecting to Redis: {exc}") from exc
        except BaseException:
            self._discard(conn)
            raise
        if self._sentinel is not None and not isinstance(replies[-1], BaseException) and replies[-1][0] != b"master":
            self._discard(conn)
            raise ConnectionError(f"{self._host}:{self._port} is not the master of {self._sentinel.service!r} (yet)")
        for i, reply in enumerate(replies):
            if isinstance(reply, BaseException):
                self._discard(conn)
                if i == 0 and self._password is not None and isinstance(reply, ResponseError):
                    raise AuthenticationError(f"Redis authentication failed: {reply}") from reply
                raise reply
        if self._closed:
            self._discard(conn)
            raise ConnectionError("closed")
        self._conn = conn
        return conn  # type: ignore[return-value]

    def _discard(self, conn: _Connection | None) -> None:
        if conn is not None:
            conn.abort(ConnectionError("Redis connect failed"))
