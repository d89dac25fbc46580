"""The async client and its sync wrapper against a live broker over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import pytest

from broker.client import (
    Cancelled,
    Client,
    Conflict,
    Denied,
    Evidence,
    Expired,
    Grant,
    SyncClient,
    TimedOut,
    outcome,
)
from tests.client.conftest import serve, stop

READ = dict(action="read", target="staging/payments-api", justification="check config drift", duration=120)
RESTART = dict(action="restart", target="prod/payments-api", justification="OOM loop since 10:02", duration=120,
               evidence=[Evidence.log("pod events", "OOMKilled x14 in 10 min"),
                         Evidence.link("runbook", "Restart payments-api", "https://runbooks.example.com/payments")])


async def test_auto_granted_request_returns_a_grant_and_a_dpop_token(live):
    """Inside the pre-approved envelope, escalate returns at once and the token is DPoP-bound to the agent key."""
    client = live.client("reader-bot")
    grant = await client.escalate(**READ)
    assert isinstance(grant, Grant) and grant.status == "approved" and grant.policies == ("staging-read",)
    token = await client.collect(grant)
    assert token.token_type == "DPoP" and token.dpop_bound and 0 < token.expires_in <= 120
    assert token.access_token not in repr(token)
    claims = await live.broker.lifecycle.introspect(token.access_token)
    assert claims["active"] and claims["sub"] == "reader-bot" and claims["token_type"] == "DPoP"
    assert (await client.complete(grant)).status == "completed"


async def test_escalate_wakes_when_an_approver_decides(live):
    """A pending request returns the grant as soon as the approval lands (the long poll wakes, no polling delay)."""
    client = live.client("reader-bot")
    seen = []
    task = asyncio.create_task(client.escalate(**RESTART, wait=30, on_update=lambda e: seen.append(e.status)))
    rid = await live.pending()
    await asyncio.sleep(0.2)  # the client is inside its long poll now
    started = time.monotonic()
    await live.approve(rid, "bob")
    grant = await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 2
    assert grant.request_id == rid and grant.approvers == ("bob",) and seen == ["pending", "approved"]


async def test_denial_surfaces_reason_and_approver(live):
    """A person's denial raises Denied carrying the reason and who decided."""
    client = live.client("reader-bot")
    task = asyncio.create_task(client.escalate(**RESTART, wait=30))
    rid = await live.pending()
    await live.deny(rid, "change freeze until Monday")
    with pytest.raises(Denied) as caught:
        await asyncio.wait_for(task, 5)
    assert caught.value.reason == "change freeze until Monday" and caught.value.by == "bob"
    assert caught.value.request_id == rid and caught.value.policy_ids == []


async def test_policy_denial_surfaces_reason_and_policy_ids(live):
    """A policy deny raises Denied with the policy's reason and ids, without waiting."""
    client = live.client("reader-bot")
    with pytest.raises(Denied) as caught:
        await client.escalate(action="db.export", target="prod/payments-api", justification="copy", duration=60)
    assert caught.value.policy_ids == ["no-export"] and "no-export" in caught.value.reason
    assert caught.value.by == "policy"


async def test_request_that_nobody_decides_expires(live_settings, redis):
    """When the broker's request deadline passes, escalate raises Expired (not TimedOut)."""
    settings = dataclasses.replace(live_settings["settings"], request_ttl_s=0.3)
    live = await serve(settings, live_settings["keys"], live_settings["svid_key"])
    try:
        with pytest.raises(Expired) as caught:
            await live.client("reader-bot").escalate(**RESTART, wait=20)
        assert caught.value.status == "expired" and "deadline" in caught.value.reason
    finally:
        await stop(live)


async def test_waiting_has_a_deadline(live):
    """escalate gives up after its own deadline with TimedOut; the request stays pending for a later wait."""
    client = live.client("reader-bot")
    started = time.monotonic()
    with pytest.raises(TimedOut) as caught:
        await client.escalate(**RESTART, wait=0.5)
    assert 0.4 < time.monotonic() - started < 3
    rid = caught.value.request_id
    assert (await client.status(rid)).status == "pending"
    await live.approve(rid)
    assert outcome(await client.wait(rid, timeout=5)).approvers == ("bob",)


async def test_timeout_can_withdraw_the_request(live):
    """With cancel_on_timeout the pending request is withdrawn, so approvers are not asked in vain."""
    client = live.client("reader-bot")
    with pytest.raises(TimedOut) as caught:
        await client.escalate(**RESTART, wait=0.3, cancel_on_timeout=True)
    assert (await client.status(caught.value.request_id)).status == "cancelled"
    with pytest.raises(Cancelled):
        outcome(await client.status(caught.value.request_id))


class LoseFirstResponse(httpx.AsyncBaseTransport):
    """Delivers the first POST to the broker, then drops its answer as a flaky network would."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.posts: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/v1/escalations":
            self.posts.append(request.headers.get("idempotency-key"))
            if len(self.posts) == 1:
                await response.aclose()
                raise httpx.ReadError("connection reset", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_retry_after_a_lost_answer_creates_one_request(live):
    """A proposal whose answer was lost is retried with the same Idempotency-Key: one request exists, not two."""
    transport = LoseFirstResponse()
    client = live.client("reader-bot", transport=transport)
    esc = await client.propose(**RESTART)
    assert len(transport.posts) == 2 and transport.posts[0] == transport.posts[1] is not None
    assert await live.request_ids() == [esc.id]
    await transport.aclose()


class Unavailable(httpx.AsyncBaseTransport):
    """A load balancer in front of the broker that answers 503 (Retry-After: 0) to the first `failures` proposals."""

    def __init__(self, failures: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.failures = failures
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/escalations" and self.refused < self.failures:
            self.refused += 1
            return httpx.Response(503, headers={"Retry-After": "0"}, request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_refused_calls_are_retried_within_a_budget(live):
    """503s are retried (Retry-After honoured) and the proposal still lands once; past the budget the error surfaces."""
    from broker.client import ApiError  # noqa: PLC0415

    flaky = Unavailable(failures=2)
    esc = await live.client("reader-bot", transport=flaky, retries=2).propose(**RESTART)
    assert flaky.refused == 2 and await live.request_ids() == [esc.id]
    down = Unavailable(failures=10)
    with pytest.raises(ApiError) as caught:
        await live.client("reader-bot", transport=down, retries=2).propose(**RESTART)
    assert caught.value.status == 503 and down.refused == 3  # the first try and two retries
    await flaky.aclose()
    await down.aclose()


async def test_explicit_idempotency_key_finds_the_same_request(live):
    """A restarted agent that reuses its idempotency key resumes the request it already made."""
    first = await live.client("reader-bot").propose(**RESTART, idempotency_key="task-42")
    again = await live.client("reader-bot").propose(**RESTART, idempotency_key="task-42")
    assert first.id == again.id and await live.request_ids() == [first.id]


async def test_grant_block_completes_even_when_the_body_raises(live):
    """Leaving `async with client.grant()` by an exception still reports completion: the token is inactive at once."""
    client = live.client("reader-bot")
    with pytest.raises(RuntimeError, match="tool failed"):
        async with client.grant(**READ) as token:
            assert (await live.broker.lifecycle.introspect(token.access_token))["active"]
            raise RuntimeError("tool failed")
    req = await live.broker.lifecycle.get(token.request_id)
    assert req.status == "completed" and req.closed_by == "reader-bot"
    assert await live.broker.lifecycle.introspect(token.access_token) == {"active": False}


async def test_grant_block_completes_when_the_task_is_cancelled(live):
    """A cancelled agent task (a framework's timeout, Ctrl-C) still reports completion on its way out."""
    inside = asyncio.Event()
    seen = []

    async def work():
        async with live.client("reader-bot").grant(**READ) as token:
            seen.append(token)
            inside.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(work())
    await asyncio.wait_for(inside.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await live.broker.lifecycle.get(seen[0].request_id)).status == "completed"


async def test_grant_block_completes_on_normal_exit(live):
    """A normal exit from the block completes the grant too."""
    async with live.client("reader-bot").grant(**READ) as token:
        pass
    assert (await live.broker.lifecycle.get(token.request_id)).status == "completed"


async def test_token_is_collected_only_once(live):
    """A second collection is a Conflict that says the token was already issued."""
    client = live.client("reader-bot")
    grant = await client.escalate(**READ)
    await client.collect(grant)
    with pytest.raises(Conflict, match="already collected"):
        await client.collect(grant)


async def test_sync_client_escalates_and_completes(live):
    """The sync wrapper runs the same flow from plain threads, with its own event loop."""
    def flow():
        with SyncClient(live.url, "reader-bot", live.keys["reader-bot"]) as client:
            with client.grant(**READ) as token:
                return token.request_id

    rid = await asyncio.to_thread(flow)
    assert (await live.broker.lifecycle.get(rid)).status == "completed"


async def test_unreachable_broker_is_a_transport_error():
    """With nothing listening, the retry budget runs out and TransportError says so."""
    from broker.client import TransportError  # noqa: PLC0415
    from broker.jose import generate_key  # noqa: PLC0415

    client = Client("http://127.0.0.1:9", "a", generate_key("P-256")[0], audience="http://x", retries=1)
    with pytest.raises(TransportError):
        await client.status("abcdefgh12")
    await client.aclose()
