"""Issue 15 on the console: who may decide and the grant cap are the core's (tests/bot/agreement.py)."""

from __future__ import annotations

import re

from broker.clock import ManualClock
from broker.model import APPROVED
from bot.console import ConsoleDesk
from bot.render import fmt_duration
from tests.bot import agreement
from tests.support.harness import Harness, make_settings, write_agents

from .conftest import Console


async def test_console_agrees_with_the_core_on_who_may_decide_and_the_cap(tmp_path, redis_url, prefix, redis):
    """Issue 15 "a test per desk shows the desks agree on it": the decide buttons appear for exactly who the core says
    may still decide, the owner is told why not in the core's words, the Approve button offers the core's cap in
    every desk's wording (render.fmt_duration), and pressing it grants exactly that cap."""
    settings = make_settings(tmp_path, redis_url, prefix, approvers_file=agreement.approvers_file(tmp_path))
    desk = ConsoleDesk(settings, chain_cache_s=0)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock(), desks=[desk])
    await h.start()
    console = Console(h, desk)
    try:
        rid = await agreement.setup(h)
        who, cap, _ = await agreement.expected(h, rid)

        pages = {}
        for a in h.broker.directory.approvers:
            pages[a.id] = (await (await console.signed_in(a.id)).page()).text
        assert {name for name, page in pages.items() if f'id="approve-{rid}"' in page} == who
        assert "alice owns agent deploy-bot and may not approve its requests" in pages["alice"]
        (label,) = re.findall(rf'id="approve-{rid}">([^<]*)<', pages["erin"])
        assert label == f"Approve for {fmt_duration(cap)}"

        erin = await console.signed_in("erin")
        r = await erin.act(rid, "approve")
        assert r.status_code in (200, 303), r.text
        req = await h.life.get(rid)
        assert req.status == APPROVED and req.approved_duration_s == cap
    finally:
        await console.close()
        await h.stop()
