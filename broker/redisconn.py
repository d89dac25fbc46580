"""Where Redis is: a plain URL (``redis://``, ``rediss://``, ``unix://``) or Redis Sentinel.

A Sentinel URL names the sentinels and the service, and every connection follows a fail-over:

    redis+sentinel://[[user]:password@]host:26379[,host2:26379...]/service[/db][?sentinel_password=...]
    rediss+sentinel://...   (TLS to the master; the sentinels are asked in clear unless
                             ``sentinel_ssl=true``)

The user and password are the master's (ACL), as for plain URLs; ``sentinel_username`` and
``sentinel_password`` authenticate to the sentinels when they require it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import ConnectionError, RedisError

from .errors import ConfigError

SCHEMES = ("redis+sentinel", "rediss+sentinel")
_SENTINEL_OPTIONS = {"sentinel_password", "sentinel_username", "sentinel_ssl"}


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    sentinel_tls: bool = False

    def sentinel_kwargs(self) -> dict:
        kw: dict = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
        if self.sentinel_password is not None:
            kw["password"] = self.sentinel_password
        if self.sentinel_username is not None:
            kw["username"] = self.sentinel_username
        if self.sentinel_tls:
            kw["ssl"] = True
        return kw

    def master_kwargs(self) -> dict:
        kw: dict = {"db": self.db}
        if self.password is not None:
            kw["password"] = self.password
        if self.username is not None:
            kw["username"] = self.username
        if self.tls:
            kw["ssl"] = True
        return kw


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def parse_sentinel(url: str) -> SentinelUrl:
    """The parts of a Sentinel URL; ConfigError (naming what is wrong, never the password)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(f"not a Sentinel URL (the scheme must be one of {', '.join(SCHEMES)})")
    netloc = parts.netloc
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, sep, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if sep else None
    sentinels = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), "26379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"REDIS_URL: a sentinel must be host:port, not {item.strip()!r}")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ConfigError("REDIS_URL: a Sentinel URL names the service after the sentinels: .../mymaster[/db]")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ConfigError(f"REDIS_URL: the database must be a number, not {path[1]!r}")
        db = int(path[1])
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - _SENTINEL_OPTIONS
    if unknown:  # fail closed: an option nobody honours is an error, not a no-op
        raise ConfigError(f"REDIS_URL: Sentinel URL option not supported: {', '.join(sorted(unknown))}")
    return SentinelUrl(
        sentinels=tuple(sentinels), service=unquote(path[0]), db=db, username=username, password=password,
        tls=parts.scheme.lower().startswith("rediss"),
        sentinel_username=query.get("sentinel_username"), sentinel_password=query.get("sentinel_password"),
        sentinel_tls=query.get("sentinel_ssl", "").lower() in {"1", "true", "yes"},
    )


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A pool of connections to the current master that waits for a free connection (as the
    plain pool does) and asks the sentinels for the master at every new connection."""


class _SentinelRedis(aioredis.Redis):
    """The master's client; closing it closes the connections to the sentinels too."""

    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.sentinel.sentinels if self.sentinel else ():
            await client.aclose()


def sentinel_manager(target: SentinelUrl) -> Sentinel:
    return Sentinel(list(target.sentinels), sentinel_kwargs=target.sentinel_kwargs(), **target.master_kwargs())


def connect(url: str, max_connections: int = 256) -> aioredis.Redis:
    """A Redis client whose pool *waits* for a free connection (up to 10 s) instead of failing
    (redis-py's default pool raises past its limit, which turned load into 503s); for a Sentinel
    URL, the master of the moment, followed across fail-overs."""
    if is_sentinel(url):
        target = parse_sentinel(url)
        manager = sentinel_manager(target)
        client = manager.master_for(target.service, redis_class=_SentinelRedis,
                                    connection_pool_class=_BlockingSentinelPool,
                                    max_connections=max_connections, timeout=10)
        client.sentinel = manager
        return client
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=10)
    return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its connections


async def master_address(target: SentinelUrl) -> tuple[str, int]:
    """Ask the sentinels, in order, where the master is now; ConnectionError if none knows."""
    errors = []
    for host, port in target.sentinels:
        client = aioredis.Redis(host=host, port=port, **target.sentinel_kwargs())
        try:
            addr = await client.sentinel_get_master_addr_by_name(target.service)
            if addr:
                return str(addr[0].decode() if isinstance(addr[0], bytes) else addr[0]), int(addr[1])
            errors.append(f"{host}:{port} does not know {target.service!r}")
        except RedisError as e:
            errors.append(f"{host}:{port} {e.__class__.__name__}")
        finally:
            await client.aclose()
    raise ConnectionError(f"no sentinel named the master of {target.service!r}: {'; '.join(errors)}")
