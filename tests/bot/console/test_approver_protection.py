"""Issue 19, items 3, 5 and 7 on the console: the link to a denial and the agent's history on
the request page, the approvers' load page, and the reinstatement of a suspended agent."""

from __future__ import annotations

from bot.console import ConsoleDesk
from broker.clock import ManualClock
from tests.bot.console.conftest import Console
from tests.support.harness import Harness, make_settings, write_agents


async def _console(tmp_path, redis_url, prefix, **settings) -> Console:
    values = dict(alternate_path_window_s=1800, alternate_path_alert_after=2, dedupe=True)
    values.update(settings)
    s = make_settings(tmp_path, redis_url, prefix, **values)
    desk = ConsoleDesk(s, chain_cache_s=0)
    h = Harness(s, write_agents(s.agents_file), ManualClock(), desks=[desk])
    await h.start()
    return Console(h, desk)


async def test_the_request_page_shows_the_link_and_the_history(tmp_path, redis_url, prefix):
    """Requirement (issue 19, items 3 and 5): the console shows the link to the denial and the
    agent's recent history next to the proposal."""
    c = await _console(tmp_path, redis_url, prefix)
    try:
        bob = await c.signed_in("bob")
        first = (await c.h.propose(action="restart")).json()["id"]
        r = await bob.act(first, "deny", reason="not during the sale")
        assert r.status_code in (200, 303)
        c.h.clock.advance(120)
        rollback = (await c.h.propose(action="rollback")).json()
        page = (await bob.page(f"/console/requests/{rollback['id']}")).text
        assert "linked-banner" in page and "Related to a request bob denied 2 min before this proposal" in page
        assert "not during the sale" in page
        assert "Agent history" in page and "24 h before this proposal: 1 request, 0 granted, 1 denied; then 0 active grants, 0 other requests" in page
        assert f"denied by bob: restart on prod/payments-api: not during the sale ({first})" in page
    finally:
        await c.close()
        await c.h.stop()


async def test_the_load_page_and_reinstating_a_suspended_agent(tmp_path, redis_url, prefix):
    """Requirement (issue 19, items 3 and 7): the console shows the approvers' load (waiting per
    group, decisions and time to decision, what the protections absorbed), and only a security
    member reinstates an agent suspended for alternate paths."""
    c = await _console(tmp_path, redis_url, prefix, alternate_path_suspend=True)
    try:
        bob, carol = await c.signed_in("bob"), await c.signed_in("carol")
        first = (await c.h.propose(action="restart")).json()["id"]
        c.h.clock.advance(90)
        await bob.act(first, "deny", reason="no")
        assert (await c.h.propose(action="restart")).json()["status"] == "denied"  # memory; linked (1)
        assert (await c.h.propose(action="rollback")).json()["status"] == "pending"  # linked (2): suspended
        assert (await c.h.propose(action="rollback")).status_code == 403
        page = (await bob.page("/console/load")).text
        assert 'id="absorbed-denial_memory">1<' in page
        assert '<td class="decided">1</td>' in page and "1 min 30 s" in page
        assert "deploy-bot" in page and "reinstate-deploy-bot" not in page  # bob is not security
        r = await bob.post("/console/load/reinstate", {"agent": "deploy-bot"})
        assert r.status_code == 403
        assert (await c.h.propose(action="rollback")).status_code == 403
        assert "reinstate-deploy-bot" in (await carol.page("/console/load")).text
        r = await carol.post("/console/load/reinstate", {"agent": "deploy-bot"})
        assert r.status_code == 303
        assert (await c.h.propose(action="rollback")).status_code == 201
        assert 'id="suspended-none"' in (await carol.page("/console/load")).text
    finally:
        await c.close()
        await c.h.stop()


async def test_the_refused_agent_scenario_on_the_console(tmp_path, redis_url, prefix):
    """Requirement (issue 19, "Done when") on the console: denied there, the identical re-ask is
    denied citing it, the rollback waits linked to the denial, 25 retries add nothing to the
    approvers' list, and security hears once."""
    c = await _console(tmp_path, redis_url, prefix, alternate_path_alert_after=3, denial_cooldown_s=1800,
                       agent_proposals_per_min=10, target_proposals_per_min=30, max_open_per_agent=10)
    try:
        bob = await c.signed_in("bob")
        first = (await c.h.propose(action="restart")).json()["id"]
        await bob.act(first, "deny", reason="prod restarts wait for the freeze to end")
        again = (await c.h.propose(action="restart")).json()
        assert again["status"] == "denied" and first in again["denial"]["reason"]
        rollback = (await c.h.propose(action="rollback")).json()
        assert rollback["status"] == "pending" and rollback["linked_to"]["by"] == "bob"
        for _ in range(25):
            c.h.clock.advance(0.3)
            r = await c.h.propose(action="restart")
            assert r.status_code == 429 or r.json()["status"] == "denied"
        page = (await bob.page()).text
        pending = page[page.index('<section id="pending"'):page.index('<section id="grants"')]
        assert 'Pending requests <span class="count">1</span>' in pending  # nothing new to decide
        assert f'id="req-{rollback["id"]}"' in pending
        detail = (await bob.page(f"/console/requests/{rollback['id']}")).text
        assert "Related to a request bob denied" in detail and "prod restarts wait for the freeze to end" in detail
        await c.h.broker.outbox.drain()
        alerts = [t for kind, _, t in c.h.notifier.sent if kind == "security"]
        assert len(alerts) == 1 and "deploy-bot" in alerts[0]
    finally:
        await c.close()
        await c.h.stop()
