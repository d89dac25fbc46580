"""Issue 24.3: an agent removed from the agents file loses what it holds, even when the
removal happened while no broker was running to notice it."""

from __future__ import annotations

import orjson
import yaml


async def test_grants_of_agents_removed_while_stopped_end_at_start_up(harness):
    """Issue 24.3 "a removed agent's active grants are revoked (with audit entries)": an agent removed from the
    agents file while the broker was down has its active grant revoked and its pending request withdrawn at
    start-up; the other agents' requests are untouched."""
    active = (await harness.propose("reader-bot", action="read", target="staging/payments-api", duration_s=300)).json()["id"]
    assert (await harness.collect(active, "reader-bot")).status_code == 200
    pending = (await harness.propose("reader-bot")).json()["id"]
    kept = (await harness.propose("deploy-bot")).json()["id"]
    assert (await harness.life.get(pending)).status == "pending"

    await harness.stop()
    path = harness.settings.agents_file
    doc = yaml.safe_load(path.read_text())
    doc["agents"] = [a for a in doc["agents"] if a["id"] != "reader-bot"]
    path.write_text(yaml.safe_dump(doc))
    await harness.start()

    assert (await harness.life.get(active)).status == "revoked"
    assert (await harness.life.get(pending)).status == "cancelled"
    assert (await harness.life.get(kept)).status == "pending"
    s = harness.broker.store
    events = [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]
    (batch,) = [e for e in events if (e.get("actor") or {}).get("by") == "registry"]
    assert batch["type"] == "registry.closed"  # one entry for the batch, naming each request
    closing = {r["request_id"]: (r["previous"], r["status"]) for r in batch["data"]["requests"]}
    assert closing == {active: ("active", "revoked"), pending: ("pending", "cancelled")}
    r = await harness.client.get(f"/v1/escalations/{kept}", headers=harness.auth("deploy-bot"))
    assert r.status_code == 200
