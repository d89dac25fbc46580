"""A collection after the broker's deadline (issue 14 item 4) reaches the agent as an
outcome it can reason about (:class:`Expired`), not as a generic conflict."""

from __future__ import annotations

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from broker.client import Client, Conflict, Expired

PROBLEM = "application/problem+json"


def _broker_answering(status: int, problem: dict) -> httpx.MockTransport:
    """The far side of the wire: the token endpoint answering one problem document."""
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/escalations/r1/token"
        return httpx.Response(status, json=problem, headers={"content-type": PROBLEM})
    return httpx.MockTransport(handle)


def _client(transport: httpx.MockTransport) -> Client:
    key = ec.generate_private_key(ec.SECP256R1())
    return Client("http://broker.test", "reader-bot", key, audience="http://broker.test", transport=transport, retries=0)


async def test_a_collection_past_the_deadline_raises_expired():
    """The broker's 409 deadline-passed means the request expired then and there: Expired, with its id."""
    problem = {"type": "https://jitgate.dev/problems/deadline-passed", "title": "The deadline has passed",
               "status": 409, "detail": "the token was not collected in time; the request expired"}
    client = _client(_broker_answering(409, problem))
    with pytest.raises(Expired) as caught:
        await client.collect("r1")
    assert caught.value.request_id == "r1" and caught.value.status == "expired"
    assert "not collected in time" in caught.value.reason
    await client.aclose()


async def test_other_conflicts_stay_conflicts():
    """A token already collected is still a Conflict: only the deadline is an outcome."""
    problem = {"type": "https://jitgate.dev/problems/conflict", "title": "Conflict", "status": 409,
               "detail": "the token was already collected"}
    client = _client(_broker_answering(409, problem))
    with pytest.raises(Conflict):
        await client.collect("r1")
    await client.aclose()


async def test_a_collection_the_policies_refuse_raises_denied_naming_them():
    """Issue 16, item 1: the broker's 403 policy-denied at collection (the policies, deciding
    again, no longer permit the grant) is a Denied outcome by policy, with the policy ids."""
    from broker.client import Denied

    problem = {"type": "https://jitgate.dev/problems/policy-denied", "title": "Denied by policy", "status": 403,
               "detail": "the policies no longer permit this (collect): denied by policy incident-freeze",
               "policies": ["incident-freeze"], "stage": "collect"}
    client = _client(_broker_answering(403, problem))
    with pytest.raises(Denied) as caught:
        await client.collect("r1")
    assert caught.value.policy_ids == ["incident-freeze"] and caught.value.by == "policy"
    assert caught.value.request_id == "r1" and "incident-freeze" in caught.value.reason
    await client.aclose()
