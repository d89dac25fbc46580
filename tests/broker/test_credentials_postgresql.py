"""Real PostgreSQL credentials per grant (issue 17, items 1, 2, 5 and 6), against the real server."""

from __future__ import annotations

import dataclasses

import asyncpg
import orjson
import pytest
import yaml

from broker.clock import ManualClock
from broker.credentials.postgresql import PostgresPlugin, scram_verifier
from broker.credentials.port import Grant
from broker.embedded_redis import free_port
from tests.support.harness import FIXTURES, Harness, make_settings, write_agents
from tests.support.postgres import create_database, drop_database, with_database

SCHEMA = """
CREATE TABLE public.orders (id int PRIMARY KEY, total int);
INSERT INTO public.orders VALUES (1, 100), (2, 250);
CREATE SCHEMA secret;
CREATE TABLE secret.payroll (who text, amount int);
INSERT INTO secret.payroll VALUES ('alice', 1);
CREATE SCHEMA app;
"""
TARGET = "staging/orders-db"
SECRET_ENV = "JITGATE_CREDENTIAL_ORDERS_DB"


@pytest.fixture
async def db():
    database = await create_database(SCHEMA)
    yield database
    await drop_database(database)


def write_targets(path, db, **extra) -> None:
    doc = yaml.safe_load((FIXTURES / "targets.yaml").read_text())
    cred = {"plugin": "postgresql", "admin_url_env": SECRET_ENV, "role_prefix": db.prefix, "connection_limit": 2,
            "actions": {"read": {"select_schemas": ["public"]}, "migrate": {"member_of": [f"g{db.prefix}migrator"]}},
            **extra}
    doc["targets"].append({"id": TARGET, "env": "staging", "credential": cred})
    path.write_text(yaml.safe_dump(doc))


@pytest.fixture
async def pg_harness(tmp_path, redis_url, prefix, redis, db):
    targets = tmp_path / "targets.yaml"
    write_targets(targets, db)
    settings = make_settings(tmp_path, redis_url, prefix, targets_file=targets,
                             credential_secrets={SECRET_ENV: db.url}, credential_settle_s=3600.0)
    keys = write_agents(settings.agents_file)
    h = Harness(settings, keys, ManualClock())
    await h.start()
    yield h
    await h.stop()


async def read_grant(h: Harness) -> tuple[str, dict]:
    r = await h.propose(action="read", target=TARGET, duration_s=300)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert r.json()["status"] == "approved"
    t = await h.collect(rid)
    assert t.status_code == 200, t.text
    return rid, t.json()


async def audit_events(h: Harness) -> list[dict]:
    rows = await h.broker.redis.xrange(h.broker.store.audit_stream)
    return [orjson.loads(f[b"event"]) for _, f in rows]


async def test_read_grant_logs_in_and_can_select_only_what_was_granted(pg_harness, db):
    """Issue 17, item 2: the credential logs in and does exactly what was granted (SELECT on
    the named schema) and nothing else (no writes, no other schema, no DDL)."""
    h = pg_harness
    rid, body = await read_grant(h)
    cred = body["credential"]
    assert cred["type"] == "postgresql" and cred["username"].startswith(db.prefix)
    assert cred["env"]["PGUSER"] == cred["username"]
    conn = await asyncpg.connect(cred["dsn"])
    try:
        assert await conn.fetchval("SELECT sum(total) FROM public.orders") == 350
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO public.orders VALUES (3, 1)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM secret.payroll")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE public.mine (x int)")
    finally:
        await conn.close()


async def test_the_audit_and_the_record_name_a_fingerprint_never_the_password(pg_harness, db):
    """Issue 17, item 1: issuance is audited with a fingerprint; the request record names what
    was issued; the secret is in neither."""
    h = pg_harness
    rid, body = await read_grant(h)
    cred = body["credential"]
    collected = [e for e in await audit_events(h) if e["type"] == "token.collected" and e.get("request_id") == rid]
    assert collected[0]["data"]["credential"]["handle"] == cred["username"]
    assert collected[0]["data"]["credential"]["fingerprint"].startswith("sha256:")
    raw = b"".join(f[b"event"] for _, f in await h.broker.redis.xrange(h.broker.store.audit_stream))
    assert cred["password"].encode() not in raw
    stored = await h.broker.redis.hgetall(h.broker.store.req_key(rid))
    assert cred["password"].encode() not in b"".join(stored.values())
    status = (await h.status(rid)).json()
    assert status["grant"]["credential"]["handle"] == cred["username"]


async def test_completion_revokes_the_login_and_ends_its_sessions(pg_harness, db):
    """Issue 17, item 2: after completion the credential cannot log in and its sessions are gone."""
    h = pg_harness
    rid, body = await read_grant(h)
    cred = body["credential"]
    held = await asyncpg.connect(cred["dsn"])
    try:
        assert (await h.complete(rid)).json()["status"] == "completed"
        assert await h.broker.credentials.settle() == 1
        assert await db.roles() == []
        assert await db.sessions_of(cred["username"]) == 0
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await held.fetchval("SELECT 1")
    finally:
        held.terminate()
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(cred["dsn"])
    revoked = [e for e in await audit_events(h) if e["type"] == "credential.revoked"]
    assert revoked[0]["request_id"] == rid and revoked[0]["data"]["handle"] == cred["username"]


async def test_expiry_revokes_the_login(pg_harness, db):
    """Issue 17, item 2: after the grant expires the role is dropped."""
    h = pg_harness
    rid, body = await read_grant(h)
    h.clock.advance(301)
    await h.broker.scheduler.sweep()
    assert (await h.status(rid)).json()["status"] == "expired"
    assert await h.broker.credentials.settle() == 1
    assert await db.roles() == []


async def test_a_live_grant_keeps_its_credential(pg_harness, db):
    """Issue 17, item 1: settling leaves the credential of an active grant alone."""
    h = pg_harness
    rid, body = await read_grant(h)
    assert await h.broker.credentials.settle() == 0
    assert await db.roles() == [body["credential"]["username"]]


async def test_target_down_at_collection_is_a_503_and_the_grant_stays_collectable(tmp_path, redis_url, prefix, redis, db):
    """Issue 17, item 6: a target down at collection gives a 503 problem with Retry-After, no
    token, an audit entry saying why, and the grant can still be collected."""
    targets = tmp_path / "targets.yaml"
    write_targets(targets, db)
    dead = with_database(f"postgresql://postgres@127.0.0.1:{free_port()}/x", db.name)
    settings = make_settings(tmp_path, redis_url, prefix, targets_file=targets,
                             credential_secrets={SECRET_ENV: dead}, credential_settle_s=3600.0)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    try:
        r = await h.propose(action="read", target=TARGET, duration_s=300)
        rid = r.json()["id"]
        t = await h.collect(rid)
        assert t.status_code == 503
        assert t.headers["content-type"] == "application/problem+json"
        assert t.json()["type"].endswith("/credential-unavailable")
        assert int(t.headers["Retry-After"]) > 0
        assert "access_token" not in t.text
        assert (await h.status(rid)).json()["status"] == "approved"
        why = [e for e in await audit_events(h) if e["type"] == "credential.unavailable"]
        assert why and why[0]["request_id"] == rid
        # The target is back: the same grant is collected.
        await h.stop()
        h.settings = dataclasses.replace(settings, credential_secrets={SECRET_ENV: db.url})
        await h.start()
        t = await h.collect(rid)
        assert t.status_code == 200 and t.json()["credential"]["username"].startswith(db.prefix)
    finally:
        await h.stop()


async def test_a_failed_revocation_is_retried_counted_shown_and_survives_a_restart(pg_harness, db):
    """Issue 17, item 6: a revocation that fails is retried with back-off, counted in /metrics,
    shown on the desks as revocation pending, and not forgotten across a restart."""
    h = pg_harness
    rid, body = await read_grant(h)
    role = body["credential"]["username"]
    plugin = h.broker.credentials.bindings[TARGET].plugin
    good = plugin.admin_url
    plugin.admin_url = with_database(f"postgresql://postgres@127.0.0.1:{free_port()}/x", db.name)
    await h.complete(rid)
    assert await h.broker.credentials.settle() == 0
    assert await h.broker.credentials.pending() == 1
    assert await h.broker.credentials.settle() == 0  # backing off: not tried again yet
    metrics = h.broker.metrics.render().decode()
    assert 'jitgate_credential_failures_total{op="revoke",plugin="postgresql"} 1.0' in metrics
    await h.broker.outbox.drain()
    shown = [s for s in h.notifier.sent if s[0] == "security" and s[1] == rid]
    assert shown and "revocation pending" in shown[0][2].lower()
    assert any(e["type"] == "credential.revocation_failed" for e in await audit_events(h))
    assert await db.roles() == [role]
    # A restart with the target reachable again: the pending revocation is still there and goes through.
    await h.restart()
    assert h.broker.credentials.bindings[TARGET].plugin.admin_url == good
    assert await h.broker.credentials.pending() == 1
    h.clock.advance(2)
    assert await h.broker.credentials.settle() == 1
    assert await db.roles() == []
    assert await h.broker.credentials.pending() == 0


async def test_the_reconciler_revokes_a_prefixed_role_nobody_recorded(pg_harness, db):
    """Issue 17, item 5: a role under jitgate's prefix with no grant behind it (someone else
    made it) is revoked by the reconciler, and the finding is audited."""
    h = pg_harness
    rid, body = await read_grant(h)
    conn = await db.connect()
    try:
        await conn.execute(f'CREATE ROLE "{db.prefix}handmade" LOGIN PASSWORD \'{scram_verifier("x")}\'')
    finally:
        await conn.close()
    findings = await h.broker.credentials.reconcile()
    assert [f["handle"] for f in findings] == [f"{db.prefix}handmade"]
    assert await db.roles() == [body["credential"]["username"]]  # the live grant's role stays
    orphans = [e for e in await audit_events(h) if e["type"] == "credential.orphan_revoked"]
    assert orphans[0]["data"]["handle"] == f"{db.prefix}handmade"


async def test_the_reconciler_alerts_security_for_a_role_of_an_ended_grant(pg_harness, db):
    """Issue 17, item 5: a role whose record was lost (its grant ended) is revoked and the
    security channel is told."""
    h = pg_harness
    rid, body = await read_grant(h)
    await h.broker.redis.delete(h.broker.credentials.issued_key)  # the record is lost
    await h.complete(rid)
    findings = await h.broker.credentials.reconcile()
    assert findings[0]["request_id"] == rid
    assert await db.roles() == []
    await h.broker.outbox.drain()
    assert any(s[0] == "security" and s[1] == rid and "Reconciler" in s[2] for s in h.notifier.sent)


async def test_migrate_grants_the_named_group_role_and_revocation_reassigns_what_it_made(db):
    """Issue 17, item 2: ``migrate`` gives membership of a named group role; revocation hands
    what the role created to the admin role and drops it."""
    group = f"g{db.prefix}migrator"
    conn = await db.connect()
    try:
        await conn.execute(f'CREATE ROLE "{group}" NOLOGIN')
        await conn.execute(f'GRANT USAGE, CREATE ON SCHEMA app TO "{group}"')
    finally:
        await conn.close()
    plugin = PostgresPlugin(TARGET, {"plugin": "postgresql", "admin_url_env": SECRET_ENV, "role_prefix": db.prefix,
                                     "actions": {"migrate": {"member_of": [group]}}}, {SECRET_ENV: db.url})
    import time

    grant = Grant("Req1", "deploy-bot", "migrate", TARGET, int(time.time()) + 300)
    handle = plugin.handle_for(grant)
    issued = await plugin.issue(handle, grant)
    agent = await asyncpg.connect(issued.secret["dsn"])
    try:
        await agent.execute("CREATE TABLE app.t (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await agent.fetch("SELECT * FROM secret.payroll")
    finally:
        await agent.close()
    assert await plugin.revoke(handle) is True
    assert await plugin.revoke(handle) is False  # idempotent
    conn = await db.connect()
    try:
        owner = await conn.fetchval("SELECT tableowner FROM pg_tables WHERE schemaname = 'app' AND tablename = 't'")
        assert owner == "postgres"
    finally:
        await conn.close()
    assert await db.roles() == []


async def test_the_role_carries_the_grants_end_and_a_connection_limit(db):
    """Issue 17, item 2: VALID UNTIL is the grant's end (the server refuses the password after
    it, even if jitgate never revoked) and CONNECTION LIMIT is the configured one. (The test
    server trusts every local login, so the expiry is read from the catalog, not tried.)"""
    plugin = PostgresPlugin(TARGET, {"plugin": "postgresql", "admin_url_env": SECRET_ENV, "role_prefix": db.prefix,
                                     "connection_limit": 3,
                                     "actions": {"read": {"select_tables": ["public.orders"]}}}, {SECRET_ENV: db.url})
    import time

    end = int(time.time()) + 120
    grant = Grant("Req2", "deploy-bot", "read", TARGET, end)
    handle = plugin.handle_for(grant)
    await plugin.issue(handle, grant)
    try:
        conn = await db.connect()
        try:
            row = await conn.fetchrow("SELECT rolvaliduntil, rolconnlimit, rolcanlogin, rolsuper, rolcreaterole "
                                      "FROM pg_roles WHERE rolname = $1", handle)
            pw = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", handle)
        finally:
            await conn.close()
        assert int(row["rolvaliduntil"].timestamp()) == end
        assert row["rolconnlimit"] == 3 and row["rolcanlogin"] and not row["rolsuper"] and not row["rolcreaterole"]
        assert pw.startswith("SCRAM-SHA-256$")
    finally:
        await plugin.revoke(handle)


async def test_the_documented_least_privilege_admin_role_is_enough(db):
    """Issue 17, item 7: jitgate's admin role needs no superuser: with exactly the privileges
    docs/credentials.md lists it issues read and migrate credentials and revokes them
    (sessions ended, what the role made reassigned, the role dropped)."""
    admin, group = f"g{db.prefix}admin", f"g{db.prefix}migrator"
    conn = await db.connect()
    try:
        version = await conn.fetchval("SHOW server_version_num")
        await conn.execute(f'CREATE ROLE "{group}" NOLOGIN')
        await conn.execute(f'GRANT USAGE, CREATE ON SCHEMA app TO "{group}"')
        # docs/credentials.md, "Least privilege for jitgate's admin role (PostgreSQL)".
        await conn.execute(f'CREATE ROLE "{admin}" LOGIN CREATEROLE')
        if int(version) >= 160000:
            await conn.execute(f'ALTER ROLE "{admin}" SET createrole_self_grant = \'set, inherit\'')
        await conn.execute(f'GRANT CONNECT ON DATABASE "{db.name}" TO "{admin}" WITH GRANT OPTION')
        await conn.execute(f'GRANT USAGE ON SCHEMA public TO "{admin}" WITH GRANT OPTION')
        await conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{admin}" WITH GRANT OPTION')
        await conn.execute(f'GRANT "{group}" TO "{admin}" WITH ADMIN OPTION')
        if int(version) >= 160000:
            await conn.execute(f'REVOKE INHERIT OPTION, SET OPTION FOR "{group}" FROM "{admin}"')
    finally:
        await conn.close()
    admin_url = db.url.replace("postgres@", f"{admin}@", 1)
    plugin = PostgresPlugin(TARGET, {"plugin": "postgresql", "admin_url_env": SECRET_ENV, "role_prefix": db.prefix,
                                     "actions": {"read": {"select_schemas": ["public"]},
                                                 "migrate": {"member_of": [group]}}}, {SECRET_ENV: admin_url})
    import time

    end = int(time.time()) + 300
    read = Grant("ReqR", "deploy-bot", "read", TARGET, end)
    migrate = Grant("ReqM", "deploy-bot", "migrate", TARGET, end)
    hr, hm = plugin.handle_for(read), plugin.handle_for(migrate)
    r, m = await plugin.issue(hr, read), await plugin.issue(hm, migrate)
    reader = await asyncpg.connect(r.secret["dsn"])
    migrator = await asyncpg.connect(m.secret["dsn"])
    try:
        assert await reader.fetchval("SELECT count(*) FROM public.orders") == 2
        await migrator.execute("CREATE TABLE app.made (x int)")
        assert sorted(await plugin.list_issued()) == sorted([hr, hm])
        assert await plugin.revoke(hr) and await plugin.revoke(hm)
        for c in (reader, migrator):
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
                await c.fetchval("SELECT 1")
    finally:
        reader.terminate()
        migrator.terminate()
    assert await db.roles() == []
    conn = await db.connect()
    try:
        assert await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'made'") == admin
        await conn.execute("DROP TABLE app.made")
    finally:
        await conn.close()
