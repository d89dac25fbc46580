"""Issue 15: "when files are hot-reloaded" has one home, the scheduler's reload job
(``Scheduler._reload_job`` → ``Broker.maybe_reload``, every 2 s on every replica). The Teams
desk never reloads anything itself, so this checks that a Teams click acts on the approvers
file as edited, with no other traffic to trigger a reload."""

from __future__ import annotations

import asyncio
import time

from broker.model import PENDING

from .conftest import APPROVERS, card_action


async def test_a_teams_click_sees_an_edited_approvers_file(rig, tmp_path):
    """Issue 15: "the Teams desk never calls it, so Teams clicks act on a stale approvers file" — after the
    approvers file is edited (bob leaves sre, dave joins it), the scheduled reload picks it up without any
    request, and a Teams click by bob is refused while dave's counts."""
    rid, card_id = await rig.propose_posted()
    directory = rig.h.broker.directory
    assert "sre" in directory.approver("bob").groups and "sre" not in directory.approver("dave").groups

    edited = (APPROVERS.replace("{id: bob, groups: [sre]", "{id: bob, groups: [platform]")
              .replace("{id: dave, groups: [platform]", "{id: dave, groups: [platform, sre]"))
    assert edited != APPROVERS
    (tmp_path / "approvers.yaml").write_text(edited)

    deadline = time.monotonic() + 8  # the job runs every 2 s; bounded so a missing job fails, not hangs
    while "sre" in directory.approver("bob").groups and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # no request reaches the broker meanwhile: only the scheduler can reload
    assert "sre" not in directory.approver("bob").groups, "the approvers file was not reloaded"

    refused = await rig.send(card_action(rid, reply_to_id=card_id, user="bob"))
    assert refused.json()["statusCode"] == 403, refused.json()
    assert "only members of 'sre'" in refused.json()["value"]["message"]
    req = await rig.h.life.get(rid)
    assert req.status == PENDING and req.approvals == []

    counted = await rig.send(card_action(rid, reply_to_id=card_id, user="dave"))
    assert counted.json()["statusCode"] == 200, counted.json()
    assert [a["approver"] for a in (await rig.h.life.get(rid)).approvals] == ["dave"]
