"""A database of its own on the real PostgreSQL (``JITGATE_TEST_PG_URL``, else the server at
127.0.0.1:5432 with trust auth; ``.ci/run`` starts one when none answers)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("JITGATE_TEST_PG_URL") or DEFAULT_URL


def with_database(url: str, database: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + database, p.query, p.fragment))


@dataclass
class TestDatabase:
    """A fresh database (``name``) and a role prefix private to one test (roles are cluster-wide)."""

    name: str
    url: str  # the admin (superuser) URL of the database
    prefix: str

    async def connect(self, **kw) -> asyncpg.Connection:
        return await asyncpg.connect(self.url, **kw)

    async def roles(self) -> list[str]:
        conn = await self.connect()
        try:
            rows = await conn.fetch("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", self.prefix)
        finally:
            await conn.close()
        return sorted(r["rolname"] for r in rows)

    async def sessions_of(self, role: str) -> int:
        conn = await self.connect()
        try:
            return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role)
        finally:
            await conn.close()


async def create_database(schema_sql: str = "") -> TestDatabase:
    tag = secrets.token_hex(4)
    name = f"jgtest_{tag}"
    admin = await asyncpg.connect(server_url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    db = TestDatabase(name, with_database(server_url(), name), f"jgt{tag}_")
    if schema_sql:
        conn = await db.connect()
        try:
            await conn.execute(schema_sql)
        finally:
            await conn.close()
    return db


async def drop_database(db: TestDatabase) -> None:
    admin = await asyncpg.connect(server_url())
    try:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db.name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db.name}"')
        # The grants' roles, and the group roles a test made ("g" + prefix).
        for row in await admin.fetch("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) "
                                     "OR starts_with(rolname, 'g' || $1)", db.prefix):
            await admin.execute(f'DROP ROLE IF EXISTS "{row["rolname"]}"')
    finally:
        await admin.close()
