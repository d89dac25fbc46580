"""Issue 21, item 8: schemathesis against a real ``jitgate serve``, bounded (about two minutes).

Every operation of the published OpenAPI document is fuzzed with cases generated from the
document itself, each signed with a fresh agent assertion (or a resource server's, for the
token endpoints): zero 5xx, every response conforms to the document (schema, content type,
status code), and a refusal is always problem+json.
"""

from __future__ import annotations

import base64
import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from broker.identity import make_assertion
from tests.support.harness import ISSUER, write_agents
from tests.support.process import BrokerProcess, jitgate_env

EXAMPLES = int(os.environ.get("JITGATE_FUZZ_EXAMPLES", "100"))  # per operation
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, status_code_conformance]
RESOURCE_SERVER_PATHS = ("/v1/introspect", "/v1/revoke", "/ssf/stream", "/ssf/status", "/ssf/subjects:add",
                         "/ssf/subjects:remove", "/ssf/verify", "/ssf/poll/{stream_id}")


@pytest.fixture(scope="module")
def served(tmp_path_factory, redis_url):
    import secrets

    tmp = tmp_path_factory.mktemp("fuzz")
    prefix = f"jgfuzz:{secrets.token_hex(6)}:"
    keys = write_agents(tmp / "agents.yaml")
    env = jitgate_env(tmp, prefix, base64.urlsafe_b64encode(os.urandom(32)).decode(), redis_url)
    with BrokerProcess(env) as proc:
        yield proc, keys
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)
    client.close()


def _operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_answers_within_its_document_and_never_a_5xx(served):
    proc, keys = served
    operations = _operations(proc.url)
    assert {op.path for op in operations} >= {"/v1/escalations", "/v1/escalations/{id}", "/v1/introspect"}
    seen: dict[str, set[int]] = {}
    with httpx.Client(timeout=30) as http:
        # Real ids for the path parameters too: one pending request of this agent.
        proposal = {"action": "deploy", "target": "prod/payments-api", "justification": "fuzz", "duration_s": 60}
        auth = {"Authorization": "Bearer " + make_assertion(keys["deploy-bot"], agent_id="deploy-bot", audience=ISSUER)}
        real_id = http.post(proc.url + "/v1/escalations", json=proposal, headers=auth).json()["id"]

        for op in operations:
            caller = "payments-api" if op.path in RESOURCE_SERVER_PATHS else "deploy-bot"

            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def check(case):
                if "id" in (case.path_parameters or {}) and len(seen.get(op.label, ())) % 3 == 0:
                    case.path_parameters["id"] = real_id
                token = make_assertion(keys[caller], agent_id=caller, audience=ISSUER)
                response = case.call(base_url=proc.url, headers={"Authorization": f"Bearer {token}"})
                seen.setdefault(op.label, set()).add(response.status_code)
                case.validate_response(response, checks=CHECKS)
                if response.status_code >= 400:
                    content_type = (response.headers.get("content-type") or [""])[0]
                    assert content_type.startswith("application/problem+json"), response.text

            check()
    print("fuzz: statuses per operation", {k: sorted(v) for k, v in seen.items()})
    assert all(code < 500 for codes in seen.values() for code in codes)
