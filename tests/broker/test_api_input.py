"""Bad input gets a clear 4xx problem+json, never a 500 and never a partial state change."""

from __future__ import annotations

import pytest

PROBLEM = "application/problem+json"


async def _no_requests(harness) -> bool:
    """No request hash was created under the test prefix."""
    return await harness.broker.store.scan_requests() == []


def _is_problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["type"].startswith("https://") and body["detail"]
    return body


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"target": "prod/x", "justification": "j", "duration_s": 60}, "'action' is required"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": 60, "colour": "red"}, "unknown field"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": "60"}, "duration_s"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": 0}, "duration_s"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": True}, "duration_s"),
        ({"action": "deploy", "target": "prod/x", "justification": "", "duration_s": 60}, "justification"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": 60, "confidence": 1.5}, "confidence"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": 60, "confidence": "high"}, "confidence"),
        ({"action": "de ploy", "target": "prod/x", "justification": "j", "duration_s": 60}, "action"),
        ({"action": "deploy", "target": "prod/\nx", "justification": "j", "duration_s": 60}, "control characters"),
        ({"action": "deploy", "target": "x" * 201, "justification": "j", "duration_s": 60}, "longer than"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": 60, "evidence": {"a": 1}}, "'evidence' must be a list"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": 60,
          "evidence": [{"kind": "log", "title": "t"}]}, "needs a 'url' or an 'excerpt'"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": 60,
          "evidence": [{"kind": "log", "title": "t", "url": "javascript:alert(1)"}]}, "http(s) URL"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": 60,
          "evidence": [{"kind": "log", "title": "t", "excerpt": "x" * 2001}]}, "longer than"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": 60,
          "evidence": [{"kind": "log", "title": "t", "excerpt": "e"}] * 21}, "at most 20"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": 60,
          "evidence": [{"kind": "log", "title": "t", "excerpt": "e", "secret": 1}]}, "unknown field"),
        ({"action": "deploy", "target": "prod/x", "justification": "j", "duration_s": 60, "delegation": ["x"]}, "delegation"),
        ([1, 2, 3], "JSON object"),
    ],
)
async def test_invalid_proposal_is_400(harness, body, needle):
    """Each malformed proposal is refused with a 400 naming the problem, and nothing is stored."""
    r = await harness.client.post("/v1/escalations", json=body, headers=harness.auth("deploy-bot"))
    problem = _is_problem(r, 400)
    assert needle in problem["detail"]
    assert await _no_requests(harness)


async def test_malformed_json_is_400(harness):
    """A body that is not JSON is a 400 with the parser's position."""
    r = await harness.client.post("/v1/escalations", content=b'{"action": ', headers={**harness.auth("deploy-bot"), "content-type": "application/json"})
    assert "not valid JSON" in _is_problem(r, 400)["detail"]


async def test_wrong_content_type_is_400(harness):
    """A proposal must be sent as application/json."""
    r = await harness.client.post("/v1/escalations", content=b"action=deploy", headers={**harness.auth("deploy-bot"), "content-type": "text/plain"})
    _is_problem(r, 400)


async def test_oversized_body_is_413(harness):
    """Bodies over the limit (64 KiB) are refused before parsing."""
    big = b'{"justification": "' + b"a" * 70000 + b'"}'
    r = await harness.client.post("/v1/escalations", content=big, headers={**harness.auth("deploy-bot"), "content-type": "application/json"})
    _is_problem(r, 413)
    assert await _no_requests(harness)


@pytest.mark.parametrize("rid", ["abc", "x" * 65, "bad-id-with-dash!", "..%2f..%2fetc"])
async def test_bad_ids_are_4xx(harness, rid):
    """Malformed escalation ids get a 400 or 404, never a lookup error."""
    r = await harness.client.get(f"/v1/escalations/{rid}", headers=harness.auth("deploy-bot"))
    assert r.status_code in (400, 404)
    assert r.headers["content-type"].startswith(PROBLEM)


async def test_unknown_id_is_404(harness):
    """A well-formed id that does not exist is a 404 problem."""
    r = await harness.client.get("/v1/escalations/AAAAAAAAAAAAAAAAAAAAAA", headers=harness.auth("deploy-bot"))
    _is_problem(r, 404)


@pytest.mark.parametrize("wait", ["-1", "61", "soon", "nan"])
async def test_bad_wait_is_400(harness, wait):
    """wait must be a number of seconds between 0 and 60."""
    rid = (await harness.propose()).json()["id"]
    r = await harness.client.get(f"/v1/escalations/{rid}?wait={wait}", headers=harness.auth("deploy-bot"))
    _is_problem(r, 400)


async def test_missing_assertion_is_401(harness):
    """DESIGN agent identity: every agent call carries a bearer assertion; none is a 401 problem."""
    r = await harness.client.post("/v1/escalations", json={})
    _is_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_replayed_assertion_is_401(harness):
    """DESIGN agent identity: a replayed jti is refused with 401."""
    headers = harness.auth("deploy-bot")
    first = await harness.client.get("/v1/escalations/AAAAAAAAAAAAAAAAAAAAAA", headers=headers)
    assert first.status_code == 404
    second = await harness.client.get("/v1/escalations/AAAAAAAAAAAAAAAAAAAAAA", headers=headers)
    assert "replayed" in _is_problem(second, 401)["detail"]


async def test_wrong_audience_is_401(harness):
    """DESIGN agent identity: aud must be the broker's issuer URL."""
    from broker.identity import make_assertion

    token = make_assertion(harness.keys["deploy-bot"], agent_id="deploy-bot", audience="https://other.example", now=harness.clock.now())
    r = await harness.client.get("/v1/escalations/AAAAAAAAAAAAAAAAAAAAAA", headers={"Authorization": f"Bearer {token}"})
    _is_problem(r, 401)


async def test_agent_cannot_introspect(harness):
    """Introspection is for registered resource servers only (RFC 7662 §2.1 requires caller authentication)."""
    r = await harness.client.post("/v1/introspect", data={"token": "x"}, headers=harness.auth("deploy-bot"))
    _is_problem(r, 401)


async def test_introspect_garbage_token_is_inactive(harness):
    """RFC 7662 §2.2: an invalid token answers exactly {"active": false}."""
    r = await harness.introspect("not-a-token")
    assert r.status_code == 200 and r.json() == {"active": False}


async def test_revoke_unknown_token_is_200(harness):
    """RFC 7009 §2.2: the server responds 200 for invalid tokens."""
    r = await harness.client.post("/v1/revoke", data={"token": "garbage"}, headers=harness.auth("payments-api"))
    assert r.status_code == 200


async def test_unknown_route_and_method_are_problems(harness):
    """Unknown paths and methods answer problem+json too."""
    _is_problem(await harness.client.get("/v1/nothing"), 404)
    r = await harness.client.put("/v1/escalations", headers=harness.auth("deploy-bot"))
    _is_problem(r, 405)


async def test_idempotency_key_too_long_is_400(harness):
    """An oversized Idempotency-Key is refused, not stored."""
    r = await harness.propose(headers={"Idempotency-Key": "k" * 201})
    _is_problem(r, 400)
    assert await _no_requests(harness)
