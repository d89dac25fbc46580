"""The target system's credential on the agent side (issue 17, item 1): the client library's
``Token.credential`` and ``jitgate agent token --export`` / ``--credential-file``, against a live
broker and the real PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import stat

import asyncpg
import pytest

from tests.broker.test_credentials_postgresql import SCHEMA, SECRET_ENV, TARGET, write_targets
from tests.client.conftest import serve, stop
from tests.client.test_cli import agent
from tests.support.postgres import create_database, drop_database

READ_DB = ["--action", "read", "--target", TARGET, "-j", "count orders", "--duration", "120"]


@pytest.fixture
async def db():
    database = await create_database(SCHEMA)
    yield database
    await drop_database(database)


@pytest.fixture
async def live_pg(live_settings, redis, db, tmp_path):
    targets = tmp_path / "targets.yaml"
    write_targets(targets, db)
    settings = dataclasses.replace(live_settings["settings"], targets_file=targets,
                                   credential_secrets={SECRET_ENV: db.url})
    s = await serve(settings, live_settings["keys"], live_settings["svid_key"])
    yield s
    await stop(s)


async def test_the_client_library_carries_the_credential(live_pg, db):
    """Token.credential holds the PostgreSQL login; its repr never shows the secret."""
    client = live_pg.client("reader-bot")
    grant = await client.escalate(action="read", target=TARGET, justification="count orders", duration=120)
    token = await client.collect(grant)
    assert token.credential["type"] == "postgresql"
    assert token.credential["password"] not in repr(token)
    conn = await asyncpg.connect(token.credential["dsn"])
    try:
        assert await conn.fetchval("SELECT count(*) FROM public.orders") == 2
    finally:
        await conn.close()
    assert token.credential_env["PGUSER"] == token.credential["username"]


async def test_token_export_and_credential_file(live_pg, db, tmp_path):
    """--export prints shell exports of the token and the credential; --credential-file writes
    the credential to a new mode-0600 file."""
    code, out, err = await agent(live_pg, tmp_path, "request", *READ_DB, "--wait", "10")
    rid = out.strip()
    assert code == 0
    cred_file = tmp_path / "pg.json"
    code, out, err = await agent(live_pg, tmp_path, "token", rid, "--export", "--credential-file", str(cred_file))
    assert code == 0, err
    exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.splitlines())
    assert exported["JITGATE_ACCESS_TOKEN"] and exported["PGUSER"].startswith(db.prefix)
    assert stat.S_IMODE(os.stat(cred_file).st_mode) == 0o600
    saved = json.loads(cred_file.read_text())
    assert saved["password"] == exported["PGPASSWORD"]
    conn = await asyncpg.connect(exported["DATABASE_URL"])
    try:
        assert await conn.fetchval("SELECT sum(total) FROM public.orders") == 350
    finally:
        await conn.close()
