"""Requirement 5 (proactive posting): conversation references learnt from installation and
conversation events, proposals routed to the policy's channel or the approvals
conversation, held (never lost) when no conversation is known, and Teams' 429s honoured."""

from __future__ import annotations

import asyncio
import email.utils
import shutil
import time

import pytest
from botbuilder.schema import Activity

from broker.model import PENDING
from bot.teams.outbound import Throttled, retry_after_s
from tests.support.harness import FIXTURES

from .conftest import APPROVALS, TEAM, conversation_update, make_rig

PROD_ACCESS = "19:prod-access@thread.tacv2"


async def _wait_posted(rig, rid: str, timeout: float = 15.0) -> str:
    for _ in range(int(timeout / 0.05)):
        req = await rig.h.life.get(rid)
        refs = [m for m in req.messages if m["transport"] == "teams"]
        if refs:
            return refs[0]["ref"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {rid} was never posted to Teams")


@pytest.fixture
async def bare(tmp_path, redis_url, prefix, redis, fake_bf, fake_login):
    """A broker with the Teams desk that has not been installed anywhere yet."""
    r = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login)
    yield r
    await r.h.stop()


async def test_proposal_before_installation_waits_and_is_posted_on_install(bare, caplog):
    """Requirement 5: with no conversation reference the broker says so (at start, in /readyz) and
    the request is not lost: it is posted as soon as the bot is installed."""
    said = [r.getMessage() for r in caplog.get_records("setup") if r.name == "jitgate.teams"]
    assert any("no conversation reference for TEAMS_APPROVALS_CONVERSATION" in m for m in said), said
    rid = (await bare.h.propose()).json()["id"]
    await bare.settle()
    assert bare.fake.posts() == []
    assert (await bare.h.life.get(rid)).status == PENDING
    ready = (await bare.h.client.get("/readyz")).json()
    assert ready["status"] == "ready"  # Redis is up; Teams' gap is a detail, so Teams traffic keeps coming
    assert ready["components"]["teams"] == "not ready"  # states only: the details are logged
    teams = await bare.desk.readiness()
    assert teams["ready"] is False and teams["held_proposals"] == 1
    assert "TEAMS_APPROVALS_CONVERSATION" in teams["detail"]

    await bare.install()
    card_id = await _wait_posted(bare, rid)
    assert [c for c in bare.fake.posts(APPROVALS) if c.card and c.card.get("refresh")][0].card["refresh"]["action"][
        "data"] == {"request_id": rid}
    assert card_id
    assert (await bare.h.client.get("/readyz")).json()["components"]["teams"] == "ok"
    teams = await bare.desk.readiness()
    assert teams["ready"] is True and teams["held_proposals"] == 0 and "Platform" in teams["approvals_conversation"]


async def test_install_greets_once_and_learns_the_conversation(bare):
    """Installing stores the conversation reference (service URL, tenant, team) and says hello once."""
    await bare.install()
    await bare.install()
    ref = await bare.desk.conversations.get(APPROVALS)
    assert ref.service_url == bare.fake.service_url and ref.team_id == TEAM and ref.kind == "channel"
    greetings = [c for c in bare.fake.posts(APPROVALS) if "jitgate is installed here" in str(c.card)]
    assert len(greetings) == 1 and APPROVALS in str(greetings[0].card)


async def test_bot_removed_forgets_the_conversation(rig):
    """When the bot is removed, proposals are held again rather than sent into the void."""
    r = await rig.send(conversation_update(APPROVALS, members_removed=["bot"]))
    assert r.status_code == 202
    await rig.settle()
    assert await rig.desk.conversations.get(APPROVALS) is None
    rid = (await rig.h.propose()).json()["id"]
    await rig.settle()
    assert await rig.desk.conversations.held() == [rid]


@pytest.fixture
async def channel_rig(tmp_path, redis_url, prefix, redis, fake_bf, fake_login):
    """Policies with ``@channel("#prod-access")`` for scaling prod; the team has that channel."""
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(FIXTURES / "policies" / "test.cedar", policies / "test.cedar")
    (policies / "channel.cedar").write_text(
        '@id("prod-scale") @approvals("1") @approver_group("sre") @channel("#prod-access")\n'
        'permit(principal, action == Jitgate::Action::"scale", resource in Jitgate::Env::"prod");\n')
    fake_bf.channels[TEAM] = [{"id": TEAM, "name": None}, {"id": PROD_ACCESS, "name": "prod-access"}]
    r = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login, policy_dir=policies)
    await r.install()
    yield r
    await r.h.stop()


async def test_policy_channel_is_resolved_from_the_team_channels(channel_rig):
    """Requirement 5: a policy's @channel names a team channel; the bot learnt its id on install."""
    general = await channel_rig.desk.conversations.get(TEAM)
    assert general is not None and general.name == "General"
    rid, card_id = await channel_rig.propose_posted(action="scale")
    posted = channel_rig.fake.posts(PROD_ACCESS)
    assert len(posted) == 1 and posted[0].card["refresh"]["action"]["data"]["request_id"] == rid
    req = await channel_rig.h.life.get(rid)
    assert req.messages[-1]["destination"] == PROD_ACCESS


async def test_renamed_channel_follows_and_unknown_channel_falls_back(channel_rig):
    """A renamed channel is found by its new name; an unknown @channel falls back to
    TEAMS_APPROVALS_CONVERSATION rather than losing the request."""
    r = await channel_rig.send(conversation_update(TEAM, event="channelRenamed", channel_name="prod-old"))
    assert r.status_code == 202
    act = conversation_update(TEAM, event="channelRenamed")
    act["channelData"]["channel"] = {"id": PROD_ACCESS, "name": "prod-access-archive"}
    await channel_rig.send(act)
    await channel_rig.settle()
    assert (await channel_rig.desk.conversations.get(PROD_ACCESS)).name == "prod-access-archive"
    rid, _ = await channel_rig.propose_posted(action="scale")
    req = await channel_rig.h.life.get(rid)
    assert req.messages[-1]["destination"] == APPROVALS


async def test_429_with_retry_after_is_honoured(rig):
    """Teams rate limits: a 429 is retried after Retry-After, and the card still arrives once."""
    rig.fake.fail_next(429, Retry_After="1")
    rid, card_id = await rig.propose_posted()
    throttled = [c for c in rig.fake.rejected if c.status == 429]
    cards_posted = [c for c in rig.fake.posts(APPROVALS) if c.card and c.card.get("refresh")]
    assert len(throttled) == 1 and len(cards_posted) == 1
    assert cards_posted[0].at - throttled[0].at >= 0.95
    assert rig.desk.outbound.throttled == 1


async def test_429_beyond_the_budget_is_not_waited_out(rig):
    """Every retry has a budget: a Retry-After longer than it fails fast (and the outbox retries later)."""
    rig.fake.fail_next(429, Retry_After="3600")
    rid, card_id = await rig.propose_posted()  # the outbox's retry posted it
    assert (await rig.h.life.get(rid)).status == PENDING
    rig.fake.fail_next(503, times=10, Retry_After="0")
    with pytest.raises(Throttled):
        await rig.desk.outbound.post(rig.fake.service_url, APPROVALS, Activity(type="message", text="x"))
    assert len([c for c in rig.fake.rejected if c.status == 503]) == rig.desk.outbound.max_attempts
    rig.fake.plans.clear()


def test_retry_after_is_read_as_seconds_or_an_http_date():
    """Retry-After may be delta-seconds or an HTTP date (RFC 9110); anything else falls back to the backoff."""
    assert retry_after_s({"Retry-After": "7"}, default=0.5) == 7.0
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_s({"Retry-After": soon}, default=0.5) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert retry_after_s({"Retry-After": past}, default=0.5) == 0.0
    assert retry_after_s({"Retry-After": "soon-ish"}, default=0.5) == 0.5
    assert retry_after_s({}, default=2.0) == 2.0 and retry_after_s(None, default=1.0) == 1.0


async def test_failed_post_is_held_and_flushed_later(bare):
    """Requirement 5: a proposal Teams refused is held and posted by the desk's next flush."""
    rid = (await bare.h.propose()).json()["id"]
    await bare.settle()
    assert await bare.desk.conversations.held() == [rid]
    bare.fake.fail_next(429, Retry_After="3600", when=lambda c: bool(c.card and c.card.get("refresh")))
    await bare.install()  # the held proposal is flushed at once, and refused
    for _ in range(100):
        if bare.fake.rejected:
            break
        await asyncio.sleep(0.05)
    assert [c.status for c in bare.fake.rejected] == [429]
    await bare.desk.flush_held()  # the next pass (this one, or one the channel listing triggered) posts it
    await _wait_posted(bare, rid)
    assert await bare.desk.conversations.held() == []
    assert len([c for c in bare.fake.posts(APPROVALS) if c.card and c.card.get("refresh")]) == 1


async def test_approvals_conversation_may_be_a_channel_name(tmp_path, redis_url, prefix, redis, fake_bf, fake_login):
    """TEAMS_APPROVALS_CONVERSATION=#name resolves to the channel once the bot learnt the team's channels."""
    fake_bf.channels[TEAM] = [{"id": TEAM, "name": None}, {"id": PROD_ACCESS, "name": "JIT-Approvals"}]
    r = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login, teams_approvals_conversation="#jit-approvals")
    try:
        await r.install(TEAM)
        rid, _ = await r.propose_posted()
        assert (await r.h.life.get(rid)).messages[-1]["destination"] == PROD_ACCESS
    finally:
        await r.h.stop()


async def test_a_group_chat_may_be_the_approvals_conversation(tmp_path, redis_url, prefix, redis, fake_bf, fake_login):
    """Requirement 5: installed in a group chat, the bot stores that chat's reference and posts proposals there."""
    chat = "19:a1b2c3@thread.v2"
    r = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login, teams_approvals_conversation=chat)
    try:
        await r.install(chat, conversation_type="groupChat")
        ref = await r.desk.conversations.get(chat)
        assert ref.kind == "groupChat" and ref.team_id is None and ref.service_url == fake_bf.service_url
        rid, card_id = await r.propose_posted()
        assert (await r.h.life.get(rid)).messages[-1]["destination"] == chat
        assert [c for c in fake_bf.posts(chat) if c.card and c.card.get("refresh")]
    finally:
        await r.h.stop()
