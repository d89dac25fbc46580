"""PostgreSQL credentials: a temporary LOGIN role per grant (asyncpg).

Issued through jitgate's own admin role (``admin_url_env`` names the environment variable
holding its URL): ``CREATE ROLE`` with a random password (sent as a SCRAM-SHA-256 verifier,
so the password itself never reaches the server or its statement log), ``VALID UNTIL`` the
grant's end and a ``CONNECTION LIMIT``, then the privileges the target's mapping gives the
granted action. Revocation takes the login away first (``NOLOGIN``), terminates the role's
sessions, hands what it owns to the admin role (``REASSIGN OWNED``), drops its privileges
(``DROP OWNED``) and drops the role. docs/credentials.md lists the least privilege the admin
role needs.

targets.yaml::

    credential:
      plugin: postgresql
      admin_url_env: JITGATE_CREDENTIAL_ORDERS_DB   # postgresql://jitgate_admin:...@db:5432/orders
      connect_host: db.internal                     # what agents connect to (default: the admin URL's)
      connection_limit: 2
      actions:
        read: {select_schemas: [public], select_tables: [billing.invoices]}
        migrate: {member_of: [orders_migrator]}
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from urllib.parse import quote, urlsplit

from ..errors import ConfigError
from .port import Grant, IssueFailed, Issued, RevokeFailed

_KEYS = frozenset({"plugin", "admin_url_env", "connect_host", "connect_port", "database", "connection_limit",
                   "role_prefix", "actions", "timeout_s"})
_ACTION_KEYS = frozenset({"select_schemas", "select_tables", "member_of"})
_IDENT = re.compile(r"^[a-z_][a-z0-9_$]{0,62}$")
_TABLE = re.compile(r"^[a-z_][a-z0-9_$]{0,62}\.[a-z_][a-z0-9_$]{0,62}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9_]{1,20}_$")
LIST_LIMIT = 10_000


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, quoted (names here are also checked against a strict pattern)."""
    return '"' + name.replace('"', '""') + '"'


def scram_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677): sent in
    ``PASSWORD '...'`` it is stored as is, so the password never leaves jitgate."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def _names(value: object, pattern: re.Pattern, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and pattern.match(v) for v in value):
        raise ConfigError(f"{where}: must be a list of lower-case PostgreSQL names ({pattern.pattern})")
    return tuple(value)


class PostgresPlugin:
    """One target database."""

    name = "postgresql"

    def __init__(self, target_id: str, config: dict, secrets_: dict) -> None:
        where = f"target {target_id}: credential"
        unknown = set(config) - _KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        env_name = config.get("admin_url_env")
        if not isinstance(env_name, str) or not env_name.startswith("JITGATE_CREDENTIAL_"):
            raise ConfigError(f"{where}: admin_url_env must name an environment variable JITGATE_CREDENTIAL_* "
                              "holding the admin role's URL (never the URL itself in the file)")
        url = secrets_.get(env_name)
        if not url:
            raise ConfigError(f"{where}: {env_name} is not set (the URL of jitgate's admin role in that database)")
        self.admin_url = url
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigError(f"{where}: {env_name} must be a postgresql:// URL")
        self.host = str(config.get("connect_host") or parts.hostname or "127.0.0.1")
        self.port = int(config.get("connect_port") or parts.port or 5432)
        self.database = str(config.get("database") or parts.path.lstrip("/") or "postgres")
        self.connection_limit = int(config.get("connection_limit", 2))
        if not 1 <= self.connection_limit <= 100:
            raise ConfigError(f"{where}: connection_limit must be 1..100")
        self.prefix = str(config.get("role_prefix", "jitgate_"))
        if not _PREFIX.match(self.prefix):
            raise ConfigError(f"{where}: role_prefix must be lower-case letters, digits and _, ending in _")
        self.timeout_s = float(config.get("timeout_s", 5))
        actions = config.get("actions")
        if not isinstance(actions, dict) or not actions:
            raise ConfigError(f"{where}: actions must map each granted action to its privileges")
        self.actions: dict[str, dict[str, tuple[str, ...]]] = {}
        for action, privs in actions.items():
            aw = f"{where}.actions.{action}"
            if not isinstance(privs, dict) or set(privs) - _ACTION_KEYS or not privs:
                raise ConfigError(f"{aw}: must be a mapping of {sorted(_ACTION_KEYS)}")
            self.actions[str(action)] = {
                "select_schemas": _names(privs.get("select_schemas"), _IDENT, f"{aw}.select_schemas"),
                "select_tables": _names(privs.get("select_tables"), _TABLE, f"{aw}.select_tables"),
                "member_of": _names(privs.get("member_of"), _IDENT, f"{aw}.member_of"),
            }

    def handle_for(self, grant: Grant) -> str:
        # The request id as is (letters and digits): the reconciler names the request of a role
        # it finds. Client libraries pass user names verbatim; only SQL folds unquoted names.
        return f"{self.prefix}{grant.request_id}_{secrets.token_hex(3)}"

    def mapped(self, action: str) -> bool:
        return action in self.actions

    async def _connect(self):
        import asyncpg  # noqa: PLC0415 - loaded only when a PostgreSQL target is configured

        return await asyncpg.connect(self.admin_url, timeout=self.timeout_s, command_timeout=self.timeout_s)

    async def issue(self, handle: str, grant: Grant) -> Issued:
        privs = self.actions[grant.action]
        password = secrets.token_urlsafe(24)
        until = time.strftime("%Y-%m-%dT%H:%M:%S+00", time.gmtime(grant.expires_at))
        role = quote_ident(handle)
        statements = [
            f"CREATE ROLE {role} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            f"CONNECTION LIMIT {self.connection_limit} VALID UNTIL '{until}' PASSWORD '{scram_verifier(password)}'",
            # The admin role is a member of each role it makes: that is what lets a non-superuser
            # end its sessions (pg_terminate_backend) and REASSIGN/DROP OWNED it at revocation.
            f"GRANT {role} TO CURRENT_USER",
            f"GRANT CONNECT ON DATABASE {quote_ident(self.database)} TO {role}",
        ]
        for schema in privs["select_schemas"]:
            statements.append(f"GRANT USAGE ON SCHEMA {quote_ident(schema)} TO {role}")
            statements.append(f"GRANT SELECT ON ALL TABLES IN SCHEMA {quote_ident(schema)} TO {role}")
        for table in privs["select_tables"]:
            schema, name = table.split(".")
            statements.append(f"GRANT USAGE ON SCHEMA {quote_ident(schema)} TO {role}")
            statements.append(f"GRANT SELECT ON TABLE {quote_ident(schema)}.{quote_ident(name)} TO {role}")
        for group in privs["member_of"]:
            statements.append(f"GRANT {quote_ident(group)} TO {role}")
        try:
            conn = await self._connect()
            try:
                async with conn.transaction():  # all or nothing: no half-privileged role
                    for sql in statements:
                        await conn.execute(sql)
            finally:
                await conn.close(timeout=self.timeout_s)
        except (OSError, asyncio.TimeoutError) as e:
            raise IssueFailed(f"PostgreSQL at {self.host}:{self.port} is unreachable ({e.__class__.__name__})") from e
        except Exception as e:  # noqa: BLE001 - asyncpg's errors: the server refused
            raise IssueFailed(f"PostgreSQL refused to create the role ({e.__class__.__name__}: {e})") from e
        dsn = (f"postgresql://{quote(handle)}:{quote(password, safe='')}@{self.host}:{self.port}/"
               f"{quote(self.database)}")
        secret = {"username": handle, "password": password, "host": self.host, "port": self.port,
                  "database": self.database, "dsn": dsn}
        env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGDATABASE": self.database, "PGUSER": handle,
               "PGPASSWORD": password, "DATABASE_URL": dsn}
        return Issued(self.name, handle, grant.expires_at, secret, env)

    async def revoke(self, handle: str, ref: str | None = None) -> bool:
        role = quote_ident(handle)
        try:
            conn = await self._connect()
            try:
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", handle)
                if not exists:
                    return False
                # No new session from here on, then end the ones that exist.
                await conn.execute(f"ALTER ROLE {role} NOLOGIN")
                await conn.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", handle)
                async with conn.transaction():
                    await conn.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
                    await conn.execute(f"DROP OWNED BY {role}")
                    await conn.execute(f"DROP ROLE {role}")
                return True
            finally:
                await conn.close(timeout=self.timeout_s)
        except (OSError, asyncio.TimeoutError) as e:
            raise RevokeFailed(f"PostgreSQL at {self.host}:{self.port} is unreachable ({e.__class__.__name__})") from e
        except Exception as e:  # noqa: BLE001
            raise RevokeFailed(f"PostgreSQL refused to drop role {handle} ({e.__class__.__name__}: {e})") from e

    async def list_issued(self) -> list[str]:
        pattern = self.prefix.replace("_", r"\_") + "%"
        conn = await self._connect()
        try:
            rows = await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY rolname LIMIT $2",
                                    pattern, LIST_LIMIT)
        finally:
            await conn.close(timeout=self.timeout_s)
        return [r["rolname"] for r in rows]

    async def close(self) -> None:
        return None


def plugin_from_config(target_id: str, config: dict, secrets_: dict, context=None) -> PostgresPlugin:
    """The ``jitgate.credentials`` entry point ``postgresql``."""
    return PostgresPlugin(target_id, config, secrets_)
