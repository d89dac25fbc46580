"""End to end through Teams: an agent proposes, the card reaches the Bot Connector, two
approvers click Approve (signed Action.Execute invokes), the agent's long poll returns
approved, and expiry edits the card in place."""

from __future__ import annotations

import asyncio

from broker.model import APPROVED, EXPIRED

from .conftest import APPROVALS, card_action

CARD = "application/vnd.microsoft.card.adaptive"


def _texts(card: dict) -> str:
    """Every text in a card (TextBlocks and TextRuns), for assertions."""
    out = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") in ("TextBlock", "TextRun") and "text" in node:
                out.append(node["text"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(card)
    return "\n".join(out)


def _verbs(card: dict) -> list[str]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute":
                found.append(node.get("verb"))
            for k, v in node.items():
                if k != "refresh":
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(card)
    return found


async def test_propose_approve_twice_long_poll_and_expiry(rig):
    """Scenario: card posted → two signed Action.Execute approvals → long poll approved → expiry edits the card."""
    h, fake = rig.h, rig.fake
    rid, card_id = await rig.propose_posted()

    posts = fake.posts(APPROVALS)
    proposal = [p for p in posts if p.card and p.card.get("refresh")]
    assert len(proposal) == 1
    card = proposal[0].card
    assert card["version"] == "1.5" and card["type"] == "AdaptiveCard"
    assert card["refresh"]["action"]["verb"] == "refresh"
    assert card["refresh"]["action"]["data"] == {"request_id": rid}
    assert set(_verbs(card)) == {"approve", "approve_for", "deny"}
    assert "deploy on prod/payments-api" in _texts(card)
    # The outbound call carried a token MSAL got from the login authority for the app.
    assert proposal[0].headers["Authorization"].startswith("Bearer fake-access-token-")

    waiter = asyncio.create_task(h.status(rid, wait=10))
    await asyncio.sleep(0.05)

    r = await rig.send(card_action(rid, reply_to_id=card_id, user="bob"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["statusCode"] == 200 and body["type"] == CARD
    assert "1 of 2" in _texts(body["value"])
    # Bob already approved: his refreshed card has no buttons, and says why.
    assert _verbs(body["value"]) == []
    assert not waiter.done()

    await rig.settle()
    edits = fake.updates(card_id)
    assert edits and "1 of 2 so far: bob" in _texts(edits[-1].card)
    assert any("bob approved (1 of 2)" in _texts(c.card) for c in fake.replies(APPROVALS, card_id))

    r = await rig.send(card_action(rid, reply_to_id=card_id, user="erin"))
    assert r.status_code == 200 and r.json()["statusCode"] == 200
    assert "Approved by bob, erin" in _texts(r.json()["value"])

    polled = await asyncio.wait_for(waiter, 10)
    assert polled.json()["status"] == APPROVED
    assert [a["approver"] for a in polled.json()["approvals"]] == ["bob", "erin"]
    assert all(a["channel"] == "teams" for a in polled.json()["approvals"])

    await rig.settle()
    assert "Approved by bob, erin" in _texts(fake.updates(card_id)[-1].card)
    assert _verbs(fake.updates(card_id)[-1].card) == []

    # Not collected in time: the scheduler expires it and the card is edited again.
    h.clock.advance(h.settings.collect_ttl_s + 1)
    for _ in range(100):
        if (await h.life.get(rid)).status == EXPIRED:
            break
        await asyncio.sleep(0.05)
    assert (await h.life.get(rid)).status == EXPIRED
    await rig.settle()
    last = fake.updates(card_id)[-1].card
    assert "Expired" in _texts(last)
    assert "refresh" not in last
    assert any("not collected in time" in _texts(c.card) for c in fake.replies(APPROVALS, card_id))
