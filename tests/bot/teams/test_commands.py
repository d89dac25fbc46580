"""Requirement 7: bot commands list / status / revoke / posture / help, with the permissions
of Slack's /jit, answered in the thread (or chat) where they were typed."""

from __future__ import annotations

from broker.model import REVOKED

from .conftest import APPROVALS, message
from .test_cards import nodes


async def ask(rig, text: str, user: str = "bob", **kw) -> str:
    """Send a command as ``user``; return every text of the bot's answer."""
    act = message(text, user=user, **kw)
    r = await rig.send(act)
    assert r.status_code == 202, r.text
    await rig.settle()
    conv = kw.get("conversation", APPROVALS)
    answers = rig.fake.replies(conv, act["id"])
    assert len(answers) == 1, [c.path for c in rig.fake.calls]
    return "\n".join(n["text"] for n in nodes(answers[0].card, "TextRun"))


async def test_help_works_for_anyone_and_says_who_they_are(rig):
    """help needs no binding and tells people their Entra object id and the conversation id."""
    text = await ask(rig, "<at>jitgate</at> help", user="mallory")
    for expected in ("list", "status <id>", "revoke <id> [reason]", "posture [normal|elevated|incident]",
                     "aad-mallory", APPROVALS):
        assert expected in text


async def test_list_shows_what_waits_for_this_approver(rig):
    """list: the pending requests this approver may still decide."""
    rid, _ = await rig.propose_posted()
    assert rid in await ask(rig, "list", user="bob")
    await rig.h.approve(rid, "bob")
    assert "Nothing is waiting for you" in await ask(rig, "list", user="bob")
    assert rid in await ask(rig, "<at>jitgate</at>&nbsp;list", user="erin")
    assert "Nothing is waiting for you" in await ask(rig, "list", user="alice")  # alice owns deploy-bot


async def test_status_shows_the_request_card_read_only(rig):
    """status <id>: the request as a card, without buttons."""
    rid, _ = await rig.propose_posted()
    act = message(f"status {rid}", user="erin")
    await rig.send(act)
    await rig.settle()
    card = rig.fake.replies(APPROVALS, act["id"])[0].card
    assert "actions" not in card and "refresh" not in card
    assert any("deploy on prod/payments-api" in r["text"] for r in nodes(card, "TextRun"))
    assert "no escalation" in await ask(rig, "status 01JNOSUCHREQUEST0000000000", user="erin")


async def test_revoke_follows_the_lifecycle_permissions(rig):
    """revoke <id> [reason]: approvers of the request's group, its owner or security may; others not."""
    rid, _ = await rig.propose_posted()
    await rig.h.approve(rid, "bob")
    await rig.h.approve(rid, "erin")
    assert (await rig.h.collect(rid)).status_code == 200
    assert "You may not do that" in await ask(rig, f"revoke {rid} I am curious", user="dave")
    assert (await rig.h.life.get(rid)).status != REVOKED
    assert f"Revoked {rid}: looks wrong" in await ask(rig, f"revoke {rid} looks wrong", user="bob")
    req = await rig.h.life.get(rid)
    assert req.status == REVOKED and req.closed_by == "bob"


async def test_posture_shows_to_approvers_and_only_security_sets_it(rig):
    """posture: anyone bound may look; only the security group may change it."""
    assert "Risk posture is normal" in await ask(rig, "posture", user="bob")
    assert "You may not do that" in await ask(rig, "posture incident", user="bob")
    assert await rig.h.life.posture() == "normal"
    assert "now elevated" in await ask(rig, "posture elevated", user="carol")
    assert await rig.h.life.posture() == "elevated"


async def test_unbound_people_and_bad_usage_get_an_answer_not_an_action(rig):
    """Requirement 3: an unbound user is told so; a wrong argument gets the usage line."""
    assert "not bound" in await ask(rig, "posture incident", user="mallory")
    assert await rig.h.life.posture() == "normal"
    assert "Usage: posture" in await ask(rig, "posture panic", user="carol")
    assert "Unknown command" in await ask(rig, "approve everything", user="bob")


async def test_commands_work_in_the_personal_chat(rig):
    """A personal chat with the bot is a conversation like any other (and private)."""
    conv = "a:1personal-chat-with-bob"
    text = await ask(rig, "posture", user="bob", conversation=conv, conversation_type="personal")
    assert "Risk posture is normal" in text
    ref = await rig.desk.conversations.get(conv)
    assert ref is not None and ref.kind == "personal"
