"""The agent's owner hears of an outcome in their 1:1 chat with the bot, as on Slack: the chat
is opened proactively (``POST /v3/conversations``) when the bot does not know it, each event
is said once however often the outbox delivers it, and a failure is retried by the outbox
without losing or duplicating anything."""

from __future__ import annotations

import asyncio
import logging

from broker.model import APPROVED, DENIED, EXPIRED, REVOKED
from broker.notify import Kind, MessageRef, Notice

from .conftest import APPROVALS, TENANT, card_action, message
from .test_decisions import texts

ALICE_NEW_CHAT = "a:1personal-aad-alice"  # the stand-in's id for a chat opened with alice's object id


def owner_posts(rig, conversation: str = ALICE_NEW_CHAT) -> list[str]:
    """The texts of the messages the bot sent into ``conversation``."""
    return [texts(c.card) for c in rig.fake.posts(conversation)]


async def approve_both(rig, rid: str, card_id: str) -> None:
    for user in ("bob", "erin"):
        r = await rig.send(card_action(rid, reply_to_id=card_id, user=user))
        assert r.json()["statusCode"] == 200, r.json()
    await rig.settle()


async def test_owner_is_told_of_the_approval_in_a_new_personal_chat_once(rig):
    """The owner (alice, bound by Entra object id, never seen by the bot) gets one message in a 1:1 chat the
    bot opens; a repeated delivery of the same outcome opens nothing and says nothing again."""
    rid, card_id = await rig.propose_posted()
    await approve_both(rig, rid, card_id)
    assert (await rig.h.life.get(rid)).status == APPROVED

    (created,) = rig.fake.created()
    body = created.body
    assert body["isGroup"] is False and body["channelData"]["tenant"]["id"] == TENANT == body["tenantID"]
    assert [m["id"] for m in body["members"]] == ["aad-alice"]  # no 29: id seen for her: her object id
    assert body["bot"]["id"] == f"28:{rig.fake.app_id}"
    (told,) = owner_posts(rig)
    assert "deploy-bot's request to deploy on prod/payments-api was approved by bob, erin for 10 min." in told
    assert f"Request {rid}; its card is in " in told

    req = await rig.h.life.get(rid)
    refs = [MessageRef.from_dict(m) for m in req.messages if m["transport"] == "teams"]
    await rig.desk.notifier.update(Notice(Kind.APPROVED, req, refs=tuple(refs)))
    await rig.desk.notifier.update(Notice(Kind.APPROVED, req, refs=tuple(refs)))
    assert len(rig.fake.created()) == 1 and len(owner_posts(rig)) == 1
    # Nobody but the owner was messaged privately; the approvers' partial approval is no outcome.
    assert [c.path for c in rig.fake.posts() if "personal" in c.path] == [f"/svc/v3/conversations/{ALICE_NEW_CHAT}/activities"]


async def test_denial_reaches_the_chat_the_bot_knows_with_the_reason(rig):
    """An owner who already talks to the bot is told in that chat (nothing opened), with the denier and reason."""
    chat = "a:alice-own-chat"
    r = await rig.send(message("help", user="alice", conversation=chat, conversation_type="personal"))
    assert r.status_code == 202
    await rig.settle()
    rid, card_id = await rig.propose_posted()
    r = await rig.send(card_action(rid, "deny", reply_to_id=card_id, user="bob",
                                   data={"request_id": rid, "reason": "change freeze until Monday"}))
    assert r.json()["statusCode"] == 200
    await rig.settle()
    assert (await rig.h.life.get(rid)).status == DENIED
    assert rig.fake.created() == []
    (told,) = owner_posts(rig, chat)
    assert "was denied by bob: change freeze until Monday" in told


async def test_pending_request_expires_at_its_deadline_and_everyone_hears(rig):
    """Requirement 6 (expiry at the deadline): nobody decided, so the card says expired, the thread says it is
    denied by default, and the owner is told."""
    rid, card_id = await rig.propose_posted()
    rig.h.clock.advance(rig.h.settings.request_ttl_s + 1)
    for _ in range(200):
        if (await rig.h.life.get(rid)).status == EXPIRED:
            break
        await asyncio.sleep(0.05)
    assert (await rig.h.life.get(rid)).status == EXPIRED
    await rig.settle()
    last = rig.fake.updates(card_id)[-1].card
    assert "Expired" in texts(last) and "refresh" not in last and "actions" not in last
    assert any("denied by default" in texts(c.card) for c in rig.fake.replies(APPROVALS, card_id))
    (told,) = owner_posts(rig)
    assert "deploy-bot's request to deploy on prod/payments-api expired" in told


async def test_owner_hears_of_a_revocation_by_someone_else_but_not_of_their_own(rig):
    """Slack's rules: the owner hears who revoked their agent's grant, not of a revocation they made themselves."""
    rid, card_id = await rig.propose_posted()
    await approve_both(rig, rid, card_id)
    assert (await rig.h.collect(rid)).status_code == 200
    await rig.h.life.revoke(rid, by="erin", channel="teams", reason="wrong target after all")
    await rig.settle()
    assert (await rig.h.life.get(rid)).status == REVOKED
    told = owner_posts(rig)
    assert len(told) == 2 and "was revoked by erin: wrong target after all" in told[1]

    rid2, card2 = await rig.propose_posted(justification="second try")
    await approve_both(rig, rid2, card2)
    await rig.h.life.revoke(rid2, by="alice", channel="teams", reason="my own call")
    await rig.settle()
    assert (await rig.h.life.get(rid2)).status == REVOKED
    told = owner_posts(rig)
    assert len(told) == 3 and "second try" not in told[2] and "approved" in told[2]  # the approval, not the revocation


async def test_a_failed_personal_chat_is_retried_by_the_outbox_without_duplicates(rig):
    """A passing Bot Connector failure while opening the chat fails the delivery; the outbox retries it: the owner
    is told exactly once and the thread replies are not repeated."""
    rig.fake.fail_next(500, when=lambda c: c.path == "/svc/v3/conversations")
    rid, card_id = await rig.propose_posted()
    await approve_both(rig, rid, card_id)
    assert [c.status for c in rig.fake.rejected] == [500]
    assert len(rig.fake.created()) == 1
    (told,) = owner_posts(rig)
    assert "was approved by bob, erin" in told
    replies = [texts(c.card) for c in rig.fake.replies(APPROVALS, card_id)]
    assert len([t for t in replies if t.startswith("Approved by bob, erin")]) == 1
    assert len([t for t in replies if "bob approved (1 of 2)" in t]) == 1
    assert (await rig.h.life.get(rid)).status == APPROVED


async def test_an_owner_teams_will_not_let_the_bot_reach_is_skipped_not_retried(rig, caplog):
    """When Teams refuses the chat (403: the app is installed neither for them nor in their teams) the outcome is
    logged as not told, not retried in a loop; the card and the request are unaffected."""
    rig.fake.fail_next(403, when=lambda c: c.path == "/svc/v3/conversations")
    rid, card_id = await rig.propose_posted()
    with caplog.at_level(logging.WARNING, logger="jitgate.teams"):
        await approve_both(rig, rid, card_id)
    assert [c.status for c in rig.fake.rejected] == [403]
    assert rig.fake.created() == [] and owner_posts(rig) == []
    assert any("the owner alice" in r.getMessage() and "HTTP 403" in r.getMessage() for r in caplog.records)
    assert "Approved by bob, erin" in texts(rig.fake.updates(card_id)[-1].card)
    assert (await rig.h.life.get(rid)).status == APPROVED
