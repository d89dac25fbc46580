"""Issue 15 on the Teams desk: who may decide and the grant cap are the core's (tests/bot/agreement.py)."""

from __future__ import annotations

from broker.model import APPROVED
from tests.bot import agreement

from .conftest import APPROVALS, card_action, make_rig
from .test_cards import nodes
from .test_scenario import _texts


async def test_teams_agrees_with_the_core_on_who_may_decide_and_the_cap(tmp_path, redis_url, prefix, redis, fake_bf,
                                                                       fake_login):
    """Issue 15 "a test per desk shows the desks agree on it": the reminder @mentions exactly who the core says may
    still decide, each person's own card shows the buttons only to them, the owner's click is refused in the core's
    words, the offered durations are those below the core's cap, and a plain Approve grants exactly that cap."""
    rig = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login,
                         approvers_file=agreement.approvers_file(tmp_path))
    try:
        await rig.install()
        rid = await agreement.setup(rig.h)
        await rig.settle()
        req = await rig.h.life.get(rid)
        (card_id,) = [m["ref"] for m in req.messages if m["transport"] == "teams"]
        who, cap, shorter = await agreement.expected(rig.h, rid)

        await rig.h.life.deliver("remind", rid)
        reminder = rig.fake.replies(APPROVALS, card_id)[-1]
        assert {e["mentioned"]["name"] for e in reminder.card["msteams"]["entities"]} == who

        directory = rig.h.broker.directory
        offered_to = set()
        for a in directory.approvers:
            card = await rig.desk.card(req, viewer=a, viewer_known=True)
            if any(x.get("verb") == "approve" for x in nodes(card.get("actions", []), "Action.Execute")):
                offered_to.add(a.id)
        assert offered_to == who

        card = rig.fake.updates(card_id)[-1].card
        offered = [int(c["value"]) for s in nodes(card, "Input.ChoiceSet") for c in s["choices"]]
        assert offered == shorter

        refused = await rig.send(card_action(rid, reply_to_id=card_id, user="alice"))
        assert refused.json()["statusCode"] == 403 and "alice owns agent deploy-bot" in refused.json()["value"]["message"]
        approved = await rig.send(card_action(rid, reply_to_id=card_id, user="erin"))
        assert approved.json()["statusCode"] == 200, _texts(approved.json().get("value") or {})
        req = await rig.h.life.get(rid)
        assert req.status == APPROVED and req.approved_duration_s == cap
    finally:
        await rig.h.stop()
