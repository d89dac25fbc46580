"""RedisLine: one multiplexed connection, replies matched in order, every wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Self

import hiredis
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    RedisError,
    ResponseError,
    TimeoutError,
)

from broker.errors import ConfigError
from broker.redisline import LuaScript, RedisLine
from tests.support.redis_server import RedisServer, free_port

PING = hiredis.pack_command(("PING",))


# --- stand-ins and private servers ---------------------------------------------------------


class StandIn:
    """A TCP server that records what each connection sent and, from connection number
    ``answer_from`` on, answers every PING with +PONG after ``delay_s``; earlier connections
    get silence."""

    def __init__(self, answer_from: int = 10**9, delay_s: float = 0.0) -> None:
        self.answer_from = answer_from
        self.delay_s = delay_s
        self.received: list[bytearray] = []
        self._handlers: set[asyncio.Task] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()
        for writer in self._writers:
            writer.close()  # The handler then reads EOF and returns.
        await asyncio.wait_for(asyncio.gather(*self._handlers), 5)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        self._writers.append(writer)
        buf = bytearray()
        index = len(self.received)
        self.received.append(buf)
        answered = 0
        try:
            while data := await reader.read(65536):
                buf += data
                if index >= self.answer_from:
                    await asyncio.sleep(self.delay_s)
                    new = buf.count(PING) - answered
                    writer.write(b"+PONG\r\n" * new)
                    answered += new
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


async def _until(predicate, within_s: float = 2.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@contextlib.contextmanager
def _redis_server(data_dir: Path, port: int, *args: str):
    """A private ``redis-server`` (the system one: it has TLS), stopped on exit."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    proc = subprocess.Popen([binary, "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
                             "--dir", str(data_dir), "--loglevel", "warning", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "redis-server exited at start"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not listen in time"
                time.sleep(0.02)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _write_certs(d: Path) -> None:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def base(subject: str, key, issuer: x509.Name) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(hours=1)))

    def save(stem: str, key, cert: x509.Certificate) -> None:
        (d / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        (d / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (base("jitgate test CA", ca_key, name("jitgate test CA"))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    save("ca", ca_key, ca)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    for stem, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (base(f"jitgate test {stem}", key, ca.subject)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                          x509.DNSName("localhost")]), critical=False)
                .add_extension(aki, critical=False)
                .sign(ca_key, hashes.SHA256()))
        save(stem, key, cert)


def _tls_args(d: Path, tls_port: int, auth_clients: str) -> tuple[str, ...]:
    return ("--port", "0", "--tls-port", str(tls_port), "--tls-cert-file", str(d / "server.pem"),
            "--tls-key-file", str(d / "server.key"), "--tls-ca-cert-file", str(d / "ca.pem"),
            "--tls-auth-clients", auth_clients)


# --- multiplexing --------------------------------------------------------------------------


async def test_lua_script_sha_is_what_redis_computes(redis):
    """LuaScript.of gives the lowercase hex SHA-1 that SCRIPT LOAD returns."""
    script = LuaScript.of("return 'jitgate redisline sha check'")
    assert script.sha == (await redis.script_load(script.source))
    assert script.sha == script.sha.lower() and len(script.sha) == 40


async def test_two_thousand_concurrent_commands_each_get_their_own_reply(redis_url, prefix, redis):
    """2,000 commands in flight at once (SET GET / GET / HSET / HGETALL on distinct keys) each get their own reply."""
    n = 2000
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.set(f"{prefix}s:{i}", f"old{i}")
            pipe.hset(f"{prefix}h:{i}", mapping={"f": f"h{i}", "n": i})
        await pipe.execute()

    def command(i: int) -> tuple[tuple, object]:
        kind = i % 4
        if kind == 0:
            return ("SET", f"{prefix}s:{i}", f"new{i}", "GET"), f"old{i}".encode()
        if kind == 1:
            return ("GET", f"{prefix}s:{i}"), f"old{i}".encode()
        if kind == 2:
            fields = [x for j in range(i % 7 + 1) for x in (f"f{j}", i)]
            return ("HSET", f"{prefix}n:{i}", *fields), i % 7 + 1
        return ("HGETALL", f"{prefix}h:{i}"), [b"f", f"h{i}".encode(), b"n", str(i).encode()]

    line = RedisLine(redis_url)
    try:
        commands = [command(i) for i in range(n)]
        replies = await asyncio.gather(*(line.execute(*args) for args, _ in commands))
        assert replies == [expected for _, expected in commands]
        written = await redis.mget([f"{prefix}s:{i}" for i in range(0, n, 4)])
        assert written == [f"new{i}".encode() for i in range(0, n, 4)]
    finally:
        await line.aclose()


async def test_error_reply_raises_for_that_caller_only(redis_url, prefix):
    """An error reply raises ResponseError for its caller; commands pipelined around it and after it succeed."""
    line = RedisLine(redis_url)
    try:
        await line.execute("PING")  # Connected, so the next commands are written in this order.
        results = await asyncio.gather(
            line.execute("SET", f"{prefix}n", 1),
            line.execute("SET", f"{prefix}s", "text"),
            line.execute("INCR", f"{prefix}s"),
            line.execute("INCR", f"{prefix}n"),
            line.execute("GET", f"{prefix}n"),
            return_exceptions=True,
        )
        assert results[:2] == [b"OK", b"OK"]
        assert isinstance(results[2], ResponseError) and "not an integer" in str(results[2])
        assert results[3:] == [2, b"2"]
        assert await line.execute("GET", f"{prefix}s") == b"text"
    finally:
        await line.aclose()


async def test_run_script_loads_an_uncached_script_and_raises_lua_errors(redis_url, prefix, redis):
    """A script Redis has not cached (NOSCRIPT) runs via EVAL once and is cached; a Lua error raises ResponseError."""
    # A script unique to this test is uncached by construction; SCRIPT FLUSH would also
    # empty the cache of everyone else using the shared server.
    script = LuaScript.of(f"-- {prefix}\nreturn {{KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}}")
    assert await redis.script_exists(script.sha) == [False]
    line = RedisLine(redis_url)
    try:
        assert await line.run_script(script, [f"{prefix}c"], ["a"]) == [f"{prefix}c".encode(), b"a", 1]
        assert await redis.script_exists(script.sha) == [True]
        assert await line.run_script(script, [f"{prefix}c"], [b"b"]) == [f"{prefix}c".encode(), b"b", 2]

        failing = LuaScript.of(f"-- {prefix}\nredis.call('INCR', KEYS[1]) error('boom')")
        with pytest.raises(ResponseError, match="boom"):
            await line.run_script(failing, [f"{prefix}runs"], [])
        assert await redis.get(f"{prefix}runs") == b"1"  # EVALSHA failed with NOSCRIPT, EVAL ran once: no retry.
        with pytest.raises(ResponseError, match="boom"):
            await line.run_script(failing, [f"{prefix}runs"], [])
        assert await redis.get(f"{prefix}runs") == b"2"  # Cached now: EVALSHA ran and failed; not sent again.
        assert await line.execute("GET", f"{prefix}c") == b"2"
    finally:
        await line.aclose()


async def test_cancelled_caller_does_not_shift_replies(redis_url, prefix, redis):
    """A caller cancelled while its GET is in flight has its reply dropped; every other caller gets its own value."""
    await redis.mset({f"{prefix}{i}": f"v{i}" for i in range(10)})
    line = RedisLine(redis_url)
    try:
        await line.execute("PING")
        tasks = [asyncio.create_task(line.execute("GET", f"{prefix}{i}")) for i in range(10)]
        # One turn of the loop: every GET is queued on the line; no reply can be read before the next turn.
        await asyncio.sleep(0)
        tasks[3].cancel()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 3)
        assert isinstance(results[3], asyncio.CancelledError)
        assert results[:3] + results[4:] == [f"v{i}".encode() for i in range(10) if i != 3]
        assert await line.execute("GET", f"{prefix}7") == b"v7"
    finally:
        await line.aclose()


async def test_cancelled_first_caller_does_not_cancel_the_shared_connect(redis_url, prefix, redis):
    """Concurrent first callers share one connect; cancelling one of them does not fail the others."""
    await redis.set(f"{prefix}k", "v")
    line = RedisLine(redis_url)
    try:
        first = asyncio.create_task(line.execute("GET", f"{prefix}k"))
        second = asyncio.create_task(line.execute("GET", f"{prefix}k"))
        await asyncio.sleep(0)
        first.cancel()
        assert await asyncio.wait_for(second, 3) == b"v"
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await line.aclose()


async def test_concurrent_first_callers_make_one_connection():
    """Fifty commands issued before the line is connected share one connection."""
    async with StandIn(answer_from=0) as server:
        line = RedisLine(server.url)
        try:
            assert await asyncio.gather(*(line.execute("PING") for _ in range(50))) == [b"PONG"] * 50
            assert len(server.received) == 1
        finally:
            await line.aclose()


# --- failures and deadlines ----------------------------------------------------------------


async def test_server_killed_fails_pending_callers_and_next_command_reconnects(prefix, caplog):
    """Server SIGKILLed: pending callers fail with ConnectionError at once; after a restart the next command works."""
    server = RedisServer(port=free_port(), appendonly=False).start()
    line = RedisLine(server.url, timeout_s=10)
    try:
        await line.execute("PING")
        key = f"{prefix}secret-token"
        # BLPOP keeps the commands queued behind it in flight (it is only a test device here).
        pending = [asyncio.create_task(line.execute("BLPOP", key, 0))]
        pending += [asyncio.create_task(line.execute("GET", key)) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in pending)
        with caplog.at_level(logging.WARNING, logger="jitgate.redis"):
            server.kill()
            started = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 2)
        assert time.monotonic() - started < 1
        assert all(isinstance(r, ConnectionError) for r in results), results
        # Logged, but without command contents: they may carry secrets.
        assert "connection lost" in caplog.text and "secret-token" not in caplog.text

        server.start()
        assert await line.execute("PING") == b"PONG"
    finally:
        await line.aclose()
        server.stop()


async def test_silent_server_times_out_then_line_reconnects():
    """A server that never answers: every pending caller gets TimeoutError after ~timeout_s; then a new connection."""
    async with StandIn(answer_from=1) as server:
        line = RedisLine(server.url, timeout_s=0.3)
        try:
            started = time.monotonic()
            both = asyncio.gather(line.execute("PING"), line.execute("PING"), return_exceptions=True)
            results = await asyncio.wait_for(both, 3)
            elapsed = time.monotonic() - started
            assert all(isinstance(r, TimeoutError) for r in results), results
            assert isinstance(results[0], RedisError)
            assert 0.29 <= elapsed < 1.0
            assert await line.execute("PING") == b"PONG"
            assert len(server.received) == 2
        finally:
            await line.aclose()


async def test_watchdog_counts_only_the_age_of_pending_commands():
    """An idle line, and a line never without a command in flight but each answered in time, outlive timeout_s."""
    # Each reply takes 30 ms, so when the watchdog looks there is almost surely a command pending.
    async with StandIn(answer_from=0, delay_s=0.03) as server:
        line = RedisLine(server.url, timeout_s=0.2)
        try:
            assert await line.execute("PING") == b"PONG"
            await asyncio.sleep(0.4)
            busy_until = time.monotonic() + 0.5
            while time.monotonic() < busy_until:
                assert await asyncio.gather(*(line.execute("PING") for _ in range(5))) == [b"PONG"] * 5
            assert len(server.received) == 1
        finally:
            await line.aclose()


async def test_connect_has_its_own_deadline_and_authenticates_before_commands():
    """An unanswered handshake fails with TimeoutError after connect_timeout_s; AUTH goes before any command."""
    async with StandIn() as server:
        line = RedisLine(f"redis://:pw@127.0.0.1:{server.port}/0", timeout_s=30, connect_timeout_s=0.3)
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="connecting"):
                await asyncio.wait_for(line.execute("PING"), 3)
            assert 0.29 <= time.monotonic() - started < 1.0
            assert bytes(server.received[0]) == hiredis.pack_command(("AUTH", "pw"))
        finally:
            await line.aclose()


async def test_too_many_in_flight_raises_without_writing_then_aclose_fails_pending():
    """Past max_in_flight a command raises and is not written; aclose fails pending callers; later commands raise."""
    async with StandIn() as server:
        line = RedisLine(server.url, max_in_flight=3)
        pending = [asyncio.create_task(line.execute("PING")) for _ in range(3)]
        await _until(lambda: len(server.received) == 1 and server.received[0].count(PING) == 3)
        with pytest.raises(ConnectionError, match="too many Redis commands in flight"):
            await line.execute("GET", "not-written")
        await asyncio.sleep(0.05)
        assert bytes(server.received[0]) == PING * 3

        await asyncio.wait_for(line.aclose(), 3)
        results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 3)
        assert all(isinstance(r, ConnectionError) for r in results), results
        with pytest.raises(ConnectionError, match="closed"):
            await line.execute("PING")
        await line.aclose()  # Idempotent.
        assert len(server.received) == 1  # A closed line does not reconnect.


async def test_aclose_releases_the_socket_before_returning(redis_url):
    """aclose returns only once the socket is closed (no unclosed-transport warning later) and may be called twice."""
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    line = RedisLine(redis_url)
    assert await line.execute("PING") == b"PONG"
    assert open_fds() == before + 1
    await line.aclose()
    assert open_fds() == before
    await line.aclose()
    with pytest.raises(ConnectionError, match="closed"):
        await line.execute("PING")


# --- URLs: auth, db, unix socket, TLS ------------------------------------------------------


async def test_auth_with_password_and_acl_user_and_select_db(tmp_path, prefix):
    """The URL's password (or ACL user) authenticates and its db is selected; a wrong password fails promptly."""
    port = free_port()
    with _redis_server(tmp_path, port, "--port", str(port), "--requirepass", "s3cret"):
        admin = RedisLine(f"redis://:s3cret@127.0.0.1:{port}/0")
        db3 = RedisLine(f"redis://:s3cret@127.0.0.1:{port}/3")
        alice = RedisLine(f"redis://alice:alicepw@127.0.0.1:{port}/3")
        lines = [admin, db3, alice]
        try:
            assert await db3.execute("SET", f"{prefix}k", "in-db-3") == b"OK"
            assert await admin.execute("GET", f"{prefix}k") is None
            assert await admin.execute("ACL", "SETUSER", "alice", "on", ">alicepw", "~*", "+@all") == b"OK"
            assert await alice.execute("ACL", "WHOAMI") == b"alice"
            assert await alice.execute("GET", f"{prefix}k") == b"in-db-3"

            for url in (f"redis://:wrong@127.0.0.1:{port}/0", f"redis://alice:wrong@127.0.0.1:{port}/3"):
                wrong = RedisLine(url)
                lines.append(wrong)
                with pytest.raises(AuthenticationError, match="authentication"):
                    await asyncio.wait_for(wrong.execute("PING"), 2)
        finally:
            for line in lines:
                await line.aclose()


async def test_unix_socket_url(prefix):
    """A unix:// URL connects over the socket and applies the query's db and client_name."""
    server = RedisServer(appendonly=False).start()
    line = RedisLine(server.url.replace("db=0", "db=2&client_name=jitgate-line"))
    try:
        assert server.url.startswith("unix://")
        assert await line.execute("SET", f"{prefix}k", "v") == b"OK"
        info = await line.execute("CLIENT", "INFO")
        assert b" db=2 " in info and b"addr=/" in info and b" name=jitgate-line " in info
    finally:
        await line.aclose()
        server.stop()


async def test_tls_with_trusted_ca_and_untrusted_fails(tmp_path):
    """rediss:// with ssl_ca_certs works; without that CA the certificate is refused (ConnectionError, no hang)."""
    _write_certs(tmp_path)
    port = free_port()
    with _redis_server(tmp_path, port, *_tls_args(tmp_path, port, "no")):
        trusted = RedisLine(f"rediss://127.0.0.1:{port}?ssl_ca_certs={tmp_path / 'ca.pem'}")
        untrusted = RedisLine(f"rediss://127.0.0.1:{port}")
        unverified = RedisLine(f"rediss://127.0.0.1:{port}?ssl_cert_reqs=none")
        try:
            assert await trusted.execute("PING") == b"PONG"
            with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await asyncio.wait_for(untrusted.execute("PING"), 3)
            assert await unverified.execute("PING") == b"PONG"  # Explicitly asked for: ssl_cert_reqs=none.
        finally:
            for line in (trusted, untrusted, unverified):
                await line.aclose()


async def test_tls_client_certificate(tmp_path):
    """ssl_certfile/ssl_keyfile present a client certificate to a server that requires one; without, it refuses."""
    _write_certs(tmp_path)
    port = free_port()
    with _redis_server(tmp_path, port, *_tls_args(tmp_path, port, "yes")):
        base = f"rediss://127.0.0.1:{port}?ssl_ca_certs={tmp_path / 'ca.pem'}"
        with_cert = RedisLine(f"{base}&ssl_certfile={tmp_path / 'client.pem'}&ssl_keyfile={tmp_path / 'client.key'}")
        without = RedisLine(base)
        try:
            assert await with_cert.execute("PING") == b"PONG"
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(without.execute("PING"), 3)
        finally:
            await with_cert.aclose()
            await without.aclose()


def test_unsupported_url_option_is_refused():
    """Fail closed: a URL option RedisLine cannot honour (OCSP checks, say) stops construction; it is not dropped."""
    with pytest.raises(ConfigError, match="ssl_validate_ocsp"):
        RedisLine("rediss://127.0.0.1:6380?ssl_validate_ocsp=true")
    with pytest.raises(ConfigError, match="ssl_ca_certs"):
        RedisLine("redis://127.0.0.1:6379?ssl_ca_certs=/etc/ssl/ca.pem")  # TLS settings on a plain URL.
    RedisLine("redis://127.0.0.1:6379/0?socket_timeout=5&health_check_interval=10")  # redis-py pool tuning: ignored.
