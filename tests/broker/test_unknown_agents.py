"""Issue 14.15: an error must not tell a caller whether an agent id is registered. Through the
running broker's HTTP API (harness), and the verifier's timing directly."""

from __future__ import annotations

import statistics
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from broker.errors import Unauthenticated
from broker.identity import BAD_ASSERTION, make_assertion
from tests.support.harness import ISSUER


def _bearer(key, agent_id: str, now: float, **kw) -> dict:
    return {"Authorization": "Bearer " + make_assertion(key, agent_id=agent_id, audience=ISSUER, now=now, **kw)}


async def _answer(harness, method: str, path: str, headers: dict) -> tuple[int, dict, str | None]:
    r = await harness.client.request(method, path, headers=headers, json={"action": "read", "target": "x",
                                                                          "justification": "j", "duration_s": 60})
    body = r.json()
    body.pop("instance", None)
    return r.status_code, body, r.headers.get("www-authenticate")


async def test_unknown_agent_is_indistinguishable_from_a_bad_signature(harness):
    """Issue 14.15 "make an unknown agent indistinguishable from a bad signature (same status, code, detail)": an
    unregistered id, a registered id signed by another key, with the other algorithm, or with another kid, get the
    same answer on every agent and resource-server route."""
    now = harness.clock.now()
    stranger_ed, stranger_ec = ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())
    cases = {
        "unknown id (EdDSA)": _bearer(stranger_ed, "no-such-agent", now),
        "unknown id (ES256)": _bearer(stranger_ec, "no-such-agent", now),
        "registered id, other key": _bearer(stranger_ed, "deploy-bot", now),
        "registered id, other algorithm": _bearer(stranger_ec, "deploy-bot", now),
        "registered id, other kid": _bearer(harness.keys["deploy-bot"], "deploy-bot", now, kid="not-its-kid"),
        "resource server id as an agent": _bearer(stranger_ec, "payments-api", now),
    }
    routes = [("POST", "/v1/escalations"), ("GET", "/v1/escalations/req0000000000000000000001"),
              ("POST", "/v1/escalations/req0000000000000000000001/token"), ("POST", "/v1/introspect")]
    for method, path in routes:
        answers = {name: await _answer(harness, method, path, headers) for name, headers in cases.items()}
        distinct = {repr(a) for a in answers.values()}
        assert len(distinct) == 1, (path, answers)
        status, body, challenge = next(iter(answers.values()))
        assert status == 401 and body["type"].endswith("/unauthenticated") and challenge
        assert body["detail"] == (BAD_ASSERTION if path != "/v1/introspect" else body["detail"])
        assert "unknown agent" not in body["detail"] and "no-such-agent" not in body["detail"]
    assert await harness.broker.store.scan_requests() == []


async def test_an_unknown_agent_costs_a_signature_check_too(harness):
    """Issue 14.15 "ideally similar timing too — verify a dummy signature for unknown agents": refusing an unknown id
    takes about as long as refusing a registered id's bad signature (medians of interleaved runs within a factor 2)."""
    verifier = harness.broker.verifier
    now = harness.clock.now()
    other = ed25519.Ed25519PrivateKey.generate()
    unknown, bad = [], []
    for n in range(300):
        for agent_id, into in (("no-such-agent", unknown), ("deploy-bot", bad)):
            header = "Bearer " + make_assertion(other, agent_id=agent_id, audience=ISSUER, now=now, jti=f"t{n}{agent_id}")
            started = time.perf_counter()
            with pytest.raises(Unauthenticated):
                await verifier.verify_agent(header)
            into.append(time.perf_counter() - started)
    ratio = statistics.median(unknown) / statistics.median(bad)
    assert 0.5 < ratio < 2.0, ratio
