"""Requirement 4: Universal Actions done right — deny with a reason, approve for less time,
repeated and late clicks, per-viewer refresh, and idempotent card updates with thread replies."""

from __future__ import annotations

from broker.model import APPROVED, DENIED, PENDING
from broker.notify import Kind, MessageRef, Notice

from .conftest import APPROVALS, card_action
from .test_cards import nodes


def texts(card: dict) -> str:
    return "\n".join(n["text"] for n in nodes(card, "TextRun"))


def verbs(card: dict) -> set[str]:
    return {a["verb"] for a in nodes(card.get("actions", []), "Action.Execute")}


async def test_deny_with_reason_reaches_agent_card_and_thread(rig):
    """Deny needs a reason; it ends the request, the agent sees it, the card and thread say so."""
    rid, card_id = await rig.propose_posted()
    r = await rig.send(card_action(rid, "deny", reply_to_id=card_id, user="bob", data={"request_id": rid, "reason": " "}))
    assert r.json()["statusCode"] == 400 and (await rig.h.life.get(rid)).status == PENDING
    r = await rig.send(card_action(rid, "deny", reply_to_id=card_id, user="bob",
                                   data={"request_id": rid, "reason": "change freeze until Monday"}))
    assert r.json()["statusCode"] == 200
    assert "Denied by bob: change freeze until Monday" in texts(r.json()["value"])
    status = (await rig.h.status(rid)).json()
    assert status["status"] == DENIED and status["denial"]["reason"] == "change freeze until Monday"
    await rig.settle()
    assert "Denied by bob" in texts(rig.fake.updates(card_id)[-1].card)
    assert any("Denied by bob: change freeze" in texts(c.card) for c in rig.fake.replies(APPROVALS, card_id))


async def test_approve_for_less_time_caps_the_grant(rig):
    """Approve for less time: the shortest approver's choice bounds the grant."""
    rid, card_id = await rig.propose_posted()
    bad = await rig.send(card_action(rid, "approve_for", reply_to_id=card_id, user="bob",
                                     data={"request_id": rid, "duration_s": "forever"}))
    assert bad.json()["statusCode"] == 400
    too_long = await rig.send(card_action(rid, "approve_for", reply_to_id=card_id, user="bob",
                                          data={"request_id": rid, "duration_s": "3600"}))
    assert too_long.json()["statusCode"] == 400 and (await rig.h.life.get(rid)).approvals == []
    r = await rig.send(card_action(rid, "approve_for", reply_to_id=card_id, user="bob",
                                   data={"request_id": rid, "duration_s": "300"}))
    assert r.json()["statusCode"] == 200
    await rig.send(card_action(rid, reply_to_id=card_id, user="erin"))
    req = await rig.h.life.get(rid)
    assert req.status == APPROVED and req.approved_duration_s == 300


async def test_repeat_and_late_clicks_change_nothing_and_say_why(rig):
    """A repeated approval is a no-op; a click after the request was decided shows the card as
    it is now with a "nothing changed" line (terminal states are final)."""
    rid, card_id = await rig.propose_posted()
    await rig.send(card_action(rid, reply_to_id=card_id, user="bob"))
    again = await rig.send(card_action(rid, reply_to_id=card_id, user="bob"))
    assert again.json()["statusCode"] == 200 and "You approved (1 of 2)" in texts(again.json()["value"])
    assert (await rig.h.life.get(rid)).approvers == ["bob"]
    await rig.send(card_action(rid, "deny", reply_to_id=card_id, user="erin", data={"request_id": rid, "reason": "no"}))
    late = await rig.send(card_action(rid, reply_to_id=card_id, user="alice"))  # alice is the owner anyway
    assert late.json()["statusCode"] == 403
    late = await rig.send(card_action(rid, reply_to_id=card_id, user="bob"))
    assert late.json()["statusCode"] == 200
    body = texts(late.json()["value"])
    assert "Denied by erin" in body
    assert (await rig.h.life.get(rid)).status == DENIED


async def test_refresh_shows_each_viewer_their_own_card(rig):
    """Card refresh: every viewer sees the current state; buttons only for those who may still decide."""
    rid, card_id = await rig.propose_posted()
    await rig.send(card_action(rid, reply_to_id=card_id, user="bob"))

    async def view(user):
        r = await rig.send(card_action(rid, "refresh", reply_to_id=card_id, user=user))
        assert r.status_code == 200 and r.json()["statusCode"] == 200
        return r.json()["value"]

    erin = await view("erin")
    assert verbs(erin) == {"approve", "approve_for", "deny"} and "1 of 2 so far: bob" in texts(erin)
    bob = await view("bob")
    assert verbs(bob) == set() and "You approved this request" in texts(bob)
    alice = await view("alice")
    assert verbs(alice) == set() and "owns agent deploy-bot" in texts(alice)
    stranger = await view("mallory")
    assert verbs(stranger) == set() and "not bound" in texts(stranger)
    assert (await rig.h.life.get(rid)).approvers == ["bob"]  # viewing changes nothing


async def test_refresh_lists_the_approvers_teams_ids(rig):
    """The card's refresh.userIds holds the Teams ids of those who may still decide (learnt from
    their activities), never the owner's."""
    for user in ("erin", "alice"):
        await rig.send(card_action("01JNOSUCHREQUEST0000000000", "refresh", reply_to_id="x", user=user))
    rid, card_id = await rig.propose_posted()
    ids = [c for c in rig.fake.posts(APPROVALS) if c.card and c.card.get("refresh")][0].card["refresh"]["userIds"]
    assert set(ids) == {"29:bob-teams-id", "29:erin-teams-id"}


async def test_repeated_delivery_edits_again_but_replies_once(rig):
    """At-least-once delivery: a repeated update re-renders the card but posts each thread reply once."""
    rid, card_id = await rig.propose_posted()
    await rig.send(card_action(rid, reply_to_id=card_id, user="bob"))
    await rig.settle()
    req = await rig.h.life.get(rid)
    refs = [MessageRef.from_dict(m) for m in req.messages if m["transport"] == "teams"]
    replies, edits = len(rig.fake.replies(APPROVALS, card_id)), len(rig.fake.updates(card_id))
    await rig.desk.notifier.update(Notice(Kind.APPROVAL, req, refs=tuple(refs)))
    await rig.desk.notifier.update(Notice(Kind.APPROVAL, req, refs=tuple(refs)))
    assert len(rig.fake.replies(APPROVALS, card_id)) == replies
    assert len(rig.fake.updates(card_id)) == edits + 2


async def test_collection_completion_and_revocation_edit_the_card_and_reply_in_its_thread(rig):
    """Requirement 4: every later state change (collected, completed, revoked) updates the posted card in place
    and adds a reply in its thread."""
    async def approved() -> tuple[str, str]:
        rid, card_id = await rig.propose_posted()
        for user in ("bob", "erin"):
            assert (await rig.send(card_action(rid, reply_to_id=card_id, user=user))).json()["statusCode"] == 200
        await rig.settle()
        return rid, card_id

    def last_card(card_id: str) -> str:
        return texts(rig.fake.updates(card_id)[-1].card)

    def thread(card_id: str) -> str:
        return "\n".join(texts(c.card) for c in rig.fake.replies(APPROVALS, card_id))

    rid, card_id = await approved()
    assert (await rig.h.collect(rid)).status_code == 200
    await rig.settle()
    assert "token collected, the grant ends at" in last_card(card_id)
    assert "deploy-bot collected its token; the grant ends at" in thread(card_id)
    assert (await rig.h.complete(rid)).status_code == 200
    await rig.settle()
    assert "Completed: the agent reported the task done" in last_card(card_id)
    assert "deploy-bot reported the task done; the grant has ended." in thread(card_id)
    # Each once, and the approval that completes the count only as "Approved by …" (as on Slack).
    assert [texts(c.card).split(" ")[0:2] for c in rig.fake.replies(APPROVALS, card_id)] == [
        ["bob", "approved"], ["Approved", "by"], ["deploy-bot", "collected"], ["deploy-bot", "reported"]]

    rid, card_id = await approved()
    assert (await rig.h.collect(rid)).status_code == 200
    await rig.h.life.revoke(rid, by="bob", channel="teams", reason="wrong target after all")
    await rig.settle()
    assert "Revoked by bob: wrong target after all" in last_card(card_id)
    assert "Revoked by bob: wrong target after all. The token no longer works." in thread(card_id)
