"""Issue 16, item 5 in Teams: the bot's ``revoke agent|owner|target <name> <reason>`` / ``revoke all <reason>``
(security group) confirmed with ``revoke confirm CODE``; a suspended approver's click is refused. Signed
activities against the Bot Connector stand-in."""

from __future__ import annotations

import re

from broker.model import DENIED, PENDING, REVOKED

from .conftest import APPROVERS, card_action, make_rig
from .test_commands import ask


def _code(text: str) -> str:
    m = re.search(r"revoke confirm ([A-Z2-7]{10})", text)
    assert m, text
    return m[1]


async def test_teams_kill_switch_asks_then_the_same_person_confirms(rig):
    """Issue 16.5 "the same for the security group in … Teams, with a confirmation and a reason": carol's
    `revoke target prod/payments-api …` changes nothing and answers a code; bob cannot use it; carol's
    `revoke confirm CODE` denies the pending request on that target, and its card says why."""
    rid, card_id = await rig.propose_posted()
    asked = await ask(rig, "revoke target prod/payments-api freeze for INC-8", user="carol")
    assert "would revoke 0 grant(s) and deny 1 pending request(s)" in asked
    code = _code(asked)
    assert (await rig.h.life.get(rid)).status == PENDING
    assert "no such confirmation code for you" in await ask(rig, f"revoke confirm {code}", user="bob")
    assert (await rig.h.life.get(rid)).status == PENDING
    done = await ask(rig, f"revoke confirm {code}", user="carol")
    assert "1 pending request(s) denied" in done
    req = await rig.h.life.get(rid)
    assert req.status == DENIED and req.denial["channel"] == "teams" and req.denial["by"] == "carol"
    assert "freeze for INC-8" in "\n".join(
        n["text"] for c in rig.fake.updates(card_id) for n in _runs(c.card))


def _runs(card):
    from .test_cards import nodes

    return nodes(card, "TextRun")


async def test_teams_kill_switch_revokes_an_active_grant_and_refuses_others(rig):
    """Only the security group gets a code; the kill switch revokes an active grant (inactive at introspection)."""
    r = await rig.h.propose("reader-bot", action="read", target="staging/payments-api", duration_s=300)
    rid = r.json()["id"]
    token = (await rig.h.collect(rid, "reader-bot")).json()["access_token"]
    assert "You may not do that" in await ask(rig, "revoke agent reader-bot stolen key", user="bob")
    code = _code(await ask(rig, "revoke agent reader-bot stolen key", user="carol"))
    assert "1 grant(s) revoked" in await ask(rig, f"revoke confirm {code}", user="carol")
    assert (await rig.h.life.get(rid)).status == REVOKED
    assert (await rig.h.introspect(token)).json() == {"active": False}


async def test_suspended_approver_cannot_approve_in_teams(tmp_path, redis_url, prefix, redis, fake_bf, fake_login):
    """Issue 16.5 "A suspended person cannot approve": bob, marked suspended: true, clicks Approve and gets a 403;
    no approval is counted."""
    r = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login)
    try:
        path = r.h.settings.approvers_file
        path.write_text(APPROVERS.replace("{id: bob, groups: [sre],", "{id: bob, groups: [sre], suspended: true,"))
        r.h.broker.maybe_reload()
        assert r.h.broker.directory.approver("bob").suspended
        await r.install()
        rid, card_id = await r.propose_posted()
        got = await r.send(card_action(rid, reply_to_id=card_id, user="bob"))
        assert got.json()["statusCode"] == 403
        assert (await r.h.life.get(rid)).approvals == []
    finally:
        await r.h.stop()
