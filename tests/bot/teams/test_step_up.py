"""Step-up from Teams (issue 19, item 6): Approve on a step-up request records nothing and
answers with a card for that person alone carrying a single-use console link."""

from __future__ import annotations

import re

from tests.broker.test_step_up import step_up_policies

from .conftest import card_action, make_rig
from .test_decisions import texts

LINK = re.compile(r"https://jitgate\.test/console/step-up\?token=[A-Za-z0-9_-]+")


async def test_a_plain_approve_on_a_step_up_request_records_nothing_and_answers_with_a_link(
        tmp_path, redis_url, prefix, redis, fake_bf, fake_login):
    """Issue 19.6: the Teams Approve and Approve-for-less buttons answer with a link; nothing is recorded."""
    rig = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login, policy_dir=step_up_policies(tmp_path),
                         console=True)
    try:
        await rig.install()
        rid, card_id = await rig.propose_posted()
        version = (await rig.h.life.get(rid)).version
        r = await rig.send(card_action(rid, reply_to_id=card_id, user="bob"))
        body = r.json()
        assert body["statusCode"] == 200
        shown = texts(body["value"])
        assert "security key" in shown and LINK.search(shown)
        r = await rig.send(card_action(rid, "approve_for", reply_to_id=card_id, user="bob",
                                       data={"request_id": rid, "duration_s": "300"}))
        assert LINK.search(texts(r.json()["value"]))
        await rig.settle()
        req = await rig.h.life.get(rid)
        assert req.version == version and req.approvals == [] and req.status == "pending"
    finally:
        await rig.h.stop()
