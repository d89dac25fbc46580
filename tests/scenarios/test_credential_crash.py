"""A broker process killed with SIGKILL between creating a PostgreSQL role and recording the
collection (issue 17, item 5): nothing it issued outlives it."""

from __future__ import annotations

import asyncio
import base64
import os
import time

import httpx
import orjson
import redis.asyncio as aioredis

from broker.clock import ManualClock
from broker.credentials import Credentials, load_plugins
from broker.directory import Directory
from broker.identity import make_assertion
from broker.redisline import RedisLine
from broker.store import Store
from tests.broker.test_credentials_postgresql import SCHEMA, SECRET_ENV, TARGET, write_targets
from tests.support.harness import FIXTURES, ISSUER, write_agents
from tests.support.postgres import create_database, drop_database
from tests.support.process import BrokerProcess, jitgate_env

PROPOSAL = {"action": "read", "target": TARGET, "justification": "count orders", "duration_s": 300}


def _auth(keys, agent="deploy-bot") -> dict:
    return {"Authorization": "Bearer " + make_assertion(keys[agent], agent_id=agent, audience=ISSUER)}


async def test_kill_9_between_issue_and_record_leaves_no_role(tmp_path, redis_url, prefix, redis):
    """Issue 17, item 5 "after a crash between issuing and recording": the role created by a
    broker killed with SIGKILL before it recorded the collection is revoked (the grant is still
    approved, and a later collection gets a new role)."""
    db = await create_database(SCHEMA)
    try:
        keys = write_agents(tmp_path / "agents.yaml")
        targets = tmp_path / "targets.yaml"
        write_targets(targets, db)
        kek = base64.urlsafe_b64encode(os.urandom(32)).decode()
        env = jitgate_env(tmp_path, prefix, kek, redis_url, JITGATE_TARGETS_FILE=str(targets),
                          **{SECRET_ENV: db.url, "JITGATE_TEST_PAUSE_AFTER_ISSUE_S": "60"})
        broker = BrokerProcess(env).start()
        try:
            async with httpx.AsyncClient(timeout=90) as http:
                rid = (await http.post(broker.url + "/v1/escalations", json=PROPOSAL, headers=_auth(keys))).json()["id"]
                collecting = asyncio.create_task(http.post(f"{broker.url}/v1/escalations/{rid}/token",
                                                           headers=_auth(keys)))
                deadline = time.monotonic() + 30
                while not await db.roles():
                    assert time.monotonic() < deadline, broker.output()
                    await asyncio.sleep(0.1)
                broker.proc.kill()  # SIGKILL: the role exists, the collection is not recorded
                broker.proc.wait()
                try:
                    await collecting
                except httpx.HTTPError:
                    pass
        finally:
            broker.stop()
        [role] = await db.roles()
        line = RedisLine(redis_url)
        client = aioredis.from_url(redis_url)
        try:
            store = Store(client, line, prefix)
            assert (await store.load(rid)).status == "approved"
            directory = Directory.load(FIXTURES / "approvers.yaml", targets)
            clock = ManualClock()
            creds = Credentials(store, load_plugins(directory.targets, {SECRET_ENV: db.url}), clock=clock)
            await creds.reconcile()
            assert await db.roles() == [role]  # within the collection's grace it might still be recorded
            clock.advance(60)
            await creds.reconcile()
            assert await db.roles() == []
            revoked = [orjson.loads(f[b"event"]) for _, f in await client.xrange(store.audit_stream)]
            assert any(e["type"] == "credential.revoked" and e["data"]["handle"] == role for e in revoked)
        finally:
            await line.aclose()
            await client.aclose()
    finally:
        await drop_database(db)
