"""The resulting action (issue 18, item 6): ``POST /v1/escalations/{id}/complete`` takes an
optional, bounded outcome, recorded on the request and in ``grant.completed``; token use is
aggregated per token at introspection, with one ``token.used`` entry per token per resource
server."""

from __future__ import annotations

import orjson
import pytest

from broker import audit
from broker.openapi import openapi_document
from tests.support.harness import ISSUER

OUTCOME = {"status": "failure", "summary": "rollback applied; 5xx back to 0.1%\nsee the dashboard",
           "evidence": ["https://grafana.example.com/d/payments?from=now-1h", "https://git.example.com/pr/7"]}


async def _entries(h, kind: str) -> list[dict]:
    s = h.broker.store
    events = [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]
    return [e for e in events if e["type"] == kind]


async def _active(h) -> tuple[str, str]:
    rid = (await h.propose(action="read", target="staging/payments-api", duration_s=300)).json()["id"]
    r = await h.collect(rid)
    assert r.status_code == 200, r.text
    return rid, r.json()["access_token"]


async def _complete(h, rid: str, body=None, *, content=None, headers=None):
    hdrs = {**h.auth("deploy-bot"), **(headers or {})}
    if content is not None:
        return await h.client.post(f"/v1/escalations/{rid}/complete", content=content, headers=hdrs)
    return await h.client.post(f"/v1/escalations/{rid}/complete", json=body, headers=hdrs)


async def test_an_outcome_is_recorded_on_the_request_and_in_grant_completed(harness):
    """Issue 18.6: the outcome is in the API JSON and the grant.completed entry; the audit log
    still verifies after it."""
    h = harness
    rid, _ = await _active(h)
    r = await _complete(h, rid, {"outcome": OUTCOME})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed" and r.json()["outcome"] == OUTCOME
    assert (await h.status(rid)).json()["outcome"] == OUTCOME
    [done] = [e for e in await _entries(h, "grant.completed") if e["request_id"] == rid]
    assert done["data"]["outcome"] == OUTCOME
    log = h.broker.lifecycle.audit
    await log.seal(force_checkpoint=True)
    s = h.broker.store
    assert (await audit.verify(s.redis, s.audit_stream, s.audit_head, log.key)).ok


@pytest.mark.parametrize("body", [None, {}, {"outcome": None}])
async def test_no_outcome_completes_as_before(harness, body):
    """An empty body (or no outcome in it) completes as today, with no outcome recorded."""
    h = harness
    rid, _ = await _active(h)
    r = await (h.complete(rid) if body is None else _complete(h, rid, body))
    assert r.status_code == 200 and r.json()["status"] == "completed" and "outcome" not in r.json()
    [done] = [e for e in await _entries(h, "grant.completed") if e["request_id"] == rid]
    assert "outcome" not in done["data"]


async def test_only_status_is_required(harness):
    """A bare status is a whole outcome."""
    h = harness
    rid, _ = await _active(h)
    r = await _complete(h, rid, {"outcome": {"status": "success"}})
    assert r.status_code == 200 and r.json()["outcome"] == {"status": "success"}


BAD = [
    ({"outcome": {"status": "done"}}, "status"),
    ({"outcome": {}}, "status"),
    ({"outcome": "success"}, "object"),
    ({"outcome": {"status": "success", "summary": "x" * 501}}, "500"),
    ({"outcome": {"status": "success", "summary": 5}}, "string"),
    ({"outcome": {"status": "success", "summary": "bell\x07"}}, "control"),
    ({"outcome": {"status": "success", "evidence": ["https://e.example/" + str(i) for i in range(11)]}}, "10"),
    ({"outcome": {"status": "success", "evidence": ["http://plain.example/x"]}}, "https"),
    ({"outcome": {"status": "success", "evidence": ["https://e.example/" + "a" * 2040]}}, "2048"),
    ({"outcome": {"status": "success", "evidence": ["javascript:alert(1)"]}}, "https"),
    ({"outcome": {"status": "success", "evidence": "https://e.example"}}, "list"),
    ({"outcome": {"status": "success", "evidence": [7]}}, "https"),
    ({"outcome": {"status": "success", "extra": 1}}, "unknown"),
    ({"outcome": {"status": "success"}, "note": "x"}, "unknown"),
    ([{"status": "success"}], "object"),
]


@pytest.mark.parametrize("body,word", BAD)
async def test_a_bad_outcome_is_refused_and_changes_nothing(harness, body, word):
    """Issue 18.6: bad input is a 400 problem+json naming the problem; the grant stays active,
    its token too, and no audit entry is written."""
    h = harness
    rid, token = await _active(h)
    before = len(await _entries(h, "grant.completed"))
    r = await _complete(h, rid, body)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    assert word in r.json()["detail"]
    assert (await h.status(rid)).json()["status"] == "active"
    assert (await h.introspect(token)).json()["active"] is True
    assert len(await _entries(h, "grant.completed")) == before


@pytest.mark.parametrize("content,ctype", [(b"{not json", "application/json"),
                                           (b'{"outcome": {"status": "success"}}', "text/plain")])
async def test_a_body_that_is_not_json_is_refused(harness, content, ctype):
    """Not JSON, or not sent as JSON: 400, nothing changed."""
    h = harness
    rid, _ = await _active(h)
    r = await _complete(h, rid, content=content, headers={"content-type": ctype})
    assert r.status_code == 400 and (await h.status(rid)).json()["status"] == "active"


async def test_an_oversized_body_is_refused(harness):
    """The body is capped like every agent body (413), nothing changed."""
    h = harness
    rid, _ = await _active(h)
    big = orjson.dumps({"outcome": {"status": "success", "summary": "x" * (h.settings.max_body_bytes + 10)}})
    r = await _complete(h, rid, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and (await h.status(rid)).json()["status"] == "active"


async def test_another_agent_cannot_complete_with_an_outcome(harness):
    """Only the requesting agent completes (404 for anyone else, as before), outcome or not."""
    h = harness
    rid, _ = await _active(h)
    r = await h.client.post(f"/v1/escalations/{rid}/complete", json={"outcome": {"status": "success"}},
                            headers=h.auth("reader-bot"))
    assert r.status_code == 404 and (await h.status(rid)).json()["status"] == "active"


async def test_token_use_is_aggregated_and_first_use_audited_once(harness):
    """Issue 18.6: each active introspection counts in the token's use hash (first use, count,
    last use, per resource server); only the first use by a resource server writes token.used;
    grant.completed carries the aggregate."""
    h = harness
    rid, token = await _active(h)
    for _ in range(3):
        h.clock.advance(5)
        assert (await h.introspect(token)).json()["active"] is True
    jti = (await h.life.get(rid)).grant_jti
    use = await h.broker.store.token_use(rid, jti)
    assert use["count"] == 3 and use["last_server"] == "payments-api"
    assert use["servers"]["payments-api"]["count"] == 3
    assert use["first_use"] < use["last_use"]
    [used] = [e for e in await _entries(h, "token.used") if e["request_id"] == rid]
    assert used["actor"] == {"resource_server": "payments-api"} and used["data"]["jti"] == jti
    assert (await _complete(h, rid, {"outcome": {"status": "success"}})).status_code == 200
    [done] = [e for e in await _entries(h, "grant.completed") if e["request_id"] == rid]
    assert done["data"]["token_use"]["count"] == 3
    assert done["data"]["token_use"]["servers"]["payments-api"]["first_use"] == use["first_use"]
    # An inactive answer is not a use.
    assert (await h.introspect(token)).json() == {"active": False}
    assert (await h.broker.store.token_use(rid, jti))["count"] == 3


async def test_a_grant_never_used_completes_with_a_zero_count(harness):
    """A collected token never introspected: the completion entry says so (count 0)."""
    h = harness
    rid, _ = await _active(h)
    assert (await h.complete(rid)).status_code == 200
    [done] = [e for e in await _entries(h, "grant.completed") if e["request_id"] == rid]
    assert done["data"]["token_use"] == {"count": 0}


async def test_the_credential_issued_is_in_the_collection_entry(harness):
    """Each collection's audit entry names the token issued (jti, audience, expiry); a plugin's
    credential is added to the same entry (tests/broker/test_credentials_*.py)."""
    h = harness
    rid, _ = await _active(h)
    [collected] = [e for e in await _entries(h, "token.collected") if e["request_id"] == rid]
    assert collected["data"]["jti"] == (await h.life.get(rid)).grant_jti
    assert collected["data"]["audience"] == "staging/payments-api"


def test_the_openapi_document_describes_the_outcome_body():
    """The OpenAPI document describes the optional body, its bounds and the Outcome schema."""
    doc = openapi_document(ISSUER)
    op = doc["paths"]["/v1/escalations/{id}/complete"]["post"]
    assert op["requestBody"]["required"] is False
    outcome = doc["components"]["schemas"]["Outcome"]
    assert outcome["properties"]["status"]["enum"] == ["success", "failure"]
    assert outcome["properties"]["summary"]["maxLength"] == 500
    assert outcome["properties"]["evidence"]["maxItems"] == 10
    assert outcome["properties"]["evidence"]["items"]["maxLength"] == 2048
    esc = doc["components"]["schemas"]["Escalation"]["properties"]
    assert "policy_set_hash" in esc and "outcome" in esc


async def test_a_first_use_the_log_cannot_record_is_a_503_and_recorded_at_the_next_use(harness):
    """Fail closed (issue 18.6): when the token.used entry cannot be written the introspection
    answers 503 (never an active answer the log does not hold) and the first-use mark is undone,
    so the next introspection writes the entry."""
    h = harness
    rid, token = await _active(h)
    s = h.broker.store
    await h.broker.scheduler.stop()
    rows = await s.redis.xrange(s.audit_stream)
    await s.redis.rename(s.audit_stream, s.audit_stream + ":kept")
    await s.redis.set(s.audit_stream, "not a stream")  # every XADD now fails
    try:
        r = await h.introspect(token)
        assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
    finally:
        await s.redis.delete(s.audit_stream)
        await s.redis.rename(s.audit_stream + ":kept", s.audit_stream)
    assert len(await s.redis.xrange(s.audit_stream)) == len(rows)
    assert (await h.introspect(token)).json()["active"] is True
    assert [e["request_id"] for e in await _entries(h, "token.used")] == [rid]
