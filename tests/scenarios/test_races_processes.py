"""Races across two real broker processes sharing one Redis, driven the way the red team
did (issue 14): correctly signed Slack clicks and modal submissions, sent at the same
moment to two replicas, with the Slack Web API stand-in recording what the desks said."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections import defaultdict
from pathlib import Path

import httpx
import jwt
import orjson
import pytest

from broker.identity import make_assertion
from broker.model import Request
from tests.bot.slack import slackreq
from tests.broker.test_races import check_approval_audit
from support.fake_slack import FakeSlack
from tests.support.harness import ISSUER, write_agents
from tests.support.process import BrokerProcess, jitgate_env

SLACK_APPROVERS = Path(__file__).resolve().parents[1] / "bot" / "slack" / "fixtures" / "approvers.yaml"
PAIRS = 100  # racing approval pairs (about 20 s here)
BATCH = 4  # pairs in flight at once
CONFIRMATIONS = 6  # break-glass confirmations submitted at once
MAX_ACTIVE = 2
MAX_PER_DAY = 3

PROPOSAL = {
    "action": "deploy", "target": "prod/payments-api", "justification": "fix INC-42", "duration_s": 600,
    "confidence": 0.9, "evidence": [{"kind": "ticket", "title": "INC-42", "url": "https://t.example/INC-42"}],
}


def _auth(keys, agent: str = "deploy-bot") -> dict:
    return {"Authorization": "Bearer " + make_assertion(keys[agent], agent_id=agent, audience=ISSUER)}


@pytest.fixture
async def replicas(tmp_path, redis_url, prefix, redis):
    """Two ``jitgate serve`` processes with the Slack desk (HTTP mode) on one Redis, the Slack stand-in, and the agents' keys."""
    fake = await FakeSlack(bot_token=slackreq.BOT_TOKEN, app_token=slackreq.APP_TOKEN).start()
    keys = write_agents(tmp_path / "agents.yaml")
    env = jitgate_env(
        tmp_path, prefix, base64.urlsafe_b64encode(os.urandom(32)).decode(), redis_url,
        JITGATE_APPROVERS_FILE=str(SLACK_APPROVERS), SLACK_BOT_TOKEN=slackreq.BOT_TOKEN,
        SLACK_SIGNING_SECRET=slackreq.SIGNING_SECRET, SLACK_APPROVALS_CHANNEL="#approvals",
        SLACK_SECURITY_CHANNEL="#security", SLACK_API_URL=fake.api_url,
        JITGATE_BREAKGLASS_MAX_ACTIVE=str(MAX_ACTIVE), JITGATE_BREAKGLASS_MAX_PER_DAY=str(MAX_PER_DAY),
    )
    a, b = BrokerProcess(env), BrokerProcess(env)
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            yield fake, keys, (a, b), http
    finally:
        # Stopped off the event loop: the Slack stand-in lives on this loop and must see the
        # brokers' connections close (a blocked loop left one unclosed, a ResourceWarning).
        await asyncio.gather(asyncio.to_thread(a.stop), asyncio.to_thread(b.stop))
        await fake.stop()


async def _load(redis, prefix: str, rid: str) -> Request:
    return Request.from_redis(await redis.hgetall(f"{prefix}{{req:{rid}}}"))


async def _until(what: str, check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _audit(redis, prefix: str) -> dict[str, list[dict]]:
    by_request: dict[str, list[dict]] = defaultdict(list)
    for _, f in await redis.xrange(f"{prefix}audit"):
        ev = orjson.loads(f[b"event"])
        if ev.get("request_id"):
            by_request[ev["request_id"]].append(ev)
    return by_request


def _signed_click(user: str, rid: str, ref: tuple[str, str], duration: int | None) -> tuple[str, dict]:
    channel, ts = ref
    if duration is None:
        payload = slackreq.block_actions(user, "jit_approve", value=rid, channel=channel, ts=ts)
    else:
        payload = slackreq.block_actions(user, "jit_approve_for", selected=f"{rid}:{duration}", channel=channel, ts=ts)
    body = slackreq.form_payload(payload)
    return body, slackreq.signed(body)


async def test_racing_slack_approvals_across_two_processes_keep_every_cap(replicas, redis, prefix):
    """Issue 14 item 0: the last two approvals clicked at once on two replicas (over 100 pairs): "the token
    never outlives the smallest cap and every audit entry names the right people and counts"."""
    fake, keys, (a, b), http = replicas
    started = time.monotonic()
    expected: dict[str, tuple[dict, int]] = {}

    async def one_pair(i: int) -> None:
        # A task of its own per pair (another dataset): the same task again would join the
        # pending request (dedupe, issue 19) instead of making a new one.
        r = await http.post(a.url + "/v1/escalations", json={**PROPOSAL, "dataset": f"pair-{i}"}, headers=_auth(keys))
        assert r.status_code == 201, r.text
        rid = r.json()["id"]

        async def posted():
            refs = [m for m in (await _load(redis, prefix, rid)).messages if m["transport"] == "slack"]
            return (refs[0]["destination"], refs[0]["ref"]) if refs else None
        ref = await _until(f"the Slack message of {rid}", posted)
        # One approver caps the grant, the other does not (or caps it the same: a larger cap
        # than one already recorded is refused as before, which would make the outcome depend
        # on who came first); which one, and which replica each click reaches, varies.
        small = 30 + i % 7
        caps = {"bob": small, "erin": None if i % 3 else small} if i % 2 else {"bob": None, "erin": small}
        users = {"bob": "U0BOB", "erin": "U0ERIN"}
        clicks = [_signed_click(users[who], rid, ref, caps[who]) for who in ("bob", "erin")]
        first, second = (a, b) if i % 4 < 2 else (b, a)
        answers = await asyncio.gather(*(http.post(p.url + "/slack/events", content=body, headers=headers)
                                         for p, (body, headers) in zip((first, second), clicks)))
        assert [x.status_code for x in answers] == [200, 200]

        async def approved():
            req = await _load(redis, prefix, rid)
            return req if req.status == "approved" else None
        try:
            req = await _until(f"{rid} approved", approved)
        except AssertionError:
            said = [c.args.get("text") for c in fake.of("chat.postEphemeral", ok=None)]
            raise AssertionError(f"{rid} was not approved; the clickers were told {said[-4:]}; "
                                 f"{(await _load(redis, prefix, rid)).approvals}\n{a.output()[-3000:]}") from None
        smallest = min(c for c in caps.values() if c)
        assert sorted(req.approvers) == ["bob", "erin"] and req.approved_duration_s == smallest, (i, req.approvals)
        tok = await http.post(f"{(a, b)[i % 2].url}/v1/escalations/{rid}/token", headers=_auth(keys))
        assert tok.status_code == 200, tok.text
        claims = jwt.decode(tok.json()["access_token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] <= smallest and claims["exp"] <= req.grant_end
        expected[rid] = (caps, smallest)

    for start in range(0, PAIRS, BATCH):
        await asyncio.gather(*(one_pair(i) for i in range(start, min(start + BATCH, PAIRS))))
    assert time.monotonic() - started < 90
    audit = await _audit(redis, prefix)
    for rid, (caps, smallest) in expected.items():
        check_approval_audit(audit[rid], caps, smallest)
    assert len(expected) == PAIRS


async def _confirm_all(fake: FakeSlack, processes, http, user: str, count: int) -> list[str]:
    """``/jit breakglass`` ``count`` times as ``user`` (one modal each), then press every Confirm at
    once, spread over ``processes``; returns what the engineer was told after each."""
    views = []
    for n in range(count):
        before = len(fake.of("views.open"))
        body = slackreq.slash(user, f"breakglass ops-bot rollback prod/payments-api 20m race {n} --incident INC-14",
                              response_url=fake.response_url(user))
        assert (await http.post(processes[n % len(processes)].url + "/slack/events", content=body,
                                headers=slackreq.signed(body))).status_code == 200
        views.append((await fake.wait_for(lambda: fake.of("views.open")[before:], what="the confirmation modal"))[0])
    told_before = len([c for c in fake.of("chat.postEphemeral") if c.args.get("user") == user])
    submissions = []
    for n, call in enumerate(views):
        view = call.args["view"]
        payload = slackreq.modal_submission(user, callback_id=view["callback_id"], view_id=call.response["view"]["id"],
                                            private_metadata=view["private_metadata"], external_id=view["external_id"])
        body = slackreq.form_payload(payload)
        submissions.append((processes[n % len(processes)], body, slackreq.signed(body)))
    answers = await asyncio.gather(*(http.post(p.url + "/slack/events", content=body, headers=headers)
                                     for p, body, headers in submissions))
    assert all(r.status_code == 200 for r in answers)
    told = await fake.wait_for(lambda: (lambda t: t if len(t) >= told_before + count else None)(
        [c.args["text"] for c in fake.of("chat.postEphemeral") if c.args.get("user") == user]), what="every answer")
    return told[told_before:]


async def _break_glass_of(redis, prefix: str, engineer: str) -> list[Request]:
    out = []
    async for key in redis.scan_iter(match=f"{prefix}{{req:*}}", count=500):
        h = await redis.hgetall(key)
        if h.get(b"engineer") == engineer.encode():
            out.append(Request.from_redis(h))
    return out


async def _assert_limits_hold(redis, prefix: str, engineer: str, *, open_: int, today: int) -> None:
    grants = await _break_glass_of(redis, prefix, engineer)
    open_ids = sorted(r.id for r in grants if r.status in ("approved", "active"))
    assert len(open_ids) == open_ and len(grants) == today, [(r.id, r.status) for r in grants]
    assert sorted(x.decode() for x in await redis.zrange(f"{prefix}bg:active:{engineer}", 0, -1)) == open_ids
    assert await redis.zcard(f"{prefix}bg:day:{engineer}") == today


async def test_racing_break_glass_confirmations_through_one_and_two_processes(replicas, redis, prefix):
    """Issue 14 item 1: "N concurrent confirmations, through one process and through two, never exceed
    JITGATE_BREAKGLASS_MAX_ACTIVE or the daily limit, and the counts equal the grants really active"."""
    fake, keys, (a, b), http = replicas
    # One process: frank confirms six at once.
    told = await _confirm_all(fake, [a], http, "U0FRANK", CONFIRMATIONS)
    assert sum("2 active" in t for t in told) == CONFIRMATIONS - MAX_ACTIVE, told
    await _assert_limits_hold(redis, prefix, "frank", open_=MAX_ACTIVE, today=MAX_ACTIVE)
    # Two processes: alice confirms six at once, three on each replica.
    told = await _confirm_all(fake, [a, b], http, "U0ALICE", CONFIRMATIONS)
    assert sum("2 active" in t for t in told) == CONFIRMATIONS - MAX_ACTIVE, told
    await _assert_limits_hold(redis, prefix, "alice", open_=MAX_ACTIVE, today=MAX_ACTIVE)
    # The agent finishes both tasks: the slots free, but only one more is left today.
    for r in await _break_glass_of(redis, prefix, "alice"):
        assert (await http.post(f"{a.url}/v1/escalations/{r.id}/complete", headers=_auth(keys, "ops-bot"))).status_code == 200
    told = await _confirm_all(fake, [a, b], http, "U0ALICE", CONFIRMATIONS)
    assert sum("24 hours" in t for t in told) == CONFIRMATIONS - 1, told
    await _assert_limits_hold(redis, prefix, "alice", open_=1, today=MAX_PER_DAY)
