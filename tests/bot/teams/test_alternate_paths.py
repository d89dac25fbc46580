"""Issue 19, items 3 and 5 through the Teams desk: the card posted for a proposal linked to a
denial says so first, with the agent's history, on the Bot Connector stand-in."""

from __future__ import annotations

from .conftest import APPROVALS, make_rig


def _texts(node) -> str:
    out: list[str] = []

    def walk(n):
        if isinstance(n, dict):
            if isinstance(n.get("text"), str):
                out.append(n["text"])
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(node)
    return "\n".join(out)


async def test_the_card_of_a_linked_proposal_names_the_denial_and_the_history(tmp_path, redis_url, prefix, fake_bf,
                                                                                fake_login):
    """Requirement (issue 19, items 3 and 5): the Teams card shows the link to bob's denial and
    the agent's recent history next to the proposal."""
    rig = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login, alternate_path_window_s=1800)
    try:
        await rig.install()
        first, _ = await rig.propose_posted(action="restart")
        await rig.h.life.deny(first, rig.h.approver("bob"), channel="teams", reason="freeze until Monday")
        rig.h.clock.advance(240)
        rid, _ = await rig.propose_posted(action="rollback")
        cards = [p.card for p in rig.fake.posts(APPROVALS) if p.card and p.card.get("refresh")
                 and p.card["refresh"]["action"]["data"] == {"request_id": rid}]
        assert len(cards) == 1
        text = _texts(cards[0])
        assert "Related to a request bob denied 4 min before this proposal: freeze until Monday" in text
        assert "24 h before this proposal: 1 request, 0 granted, 1 denied" in text
        assert f"denied by bob: restart on prod/payments-api: freeze until Monday ({first})" in text
    finally:
        await rig.h.stop()
