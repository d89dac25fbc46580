"""Issue 14.3: nobody who owns an agent along a delegation chain may approve the chain's request,
and the approvers' message says who is excluded and why. Signed clicks against the running app
(Slack stand-in); the Teams card and the console page render the same shared sentence."""

from __future__ import annotations

import json

import pytest

from bot.console.views import ConsoleViews
from bot.render import excluded_line
from bot.slack.blocks import APPROVE
from bot.teams.cards import proposal_card
from broker.identity import add_agent, generate_key, load_private_key, make_delegation
from tests.bot.slack.conftest import running
from tests.support.harness import FIXTURES, ISSUER

DELEGATION_POLICY = """
@id("team-delegation") @approvals("0")
permit(principal, action == Jitgate::Action::"delegate", resource);
"""


@pytest.fixture
def chain_setup(tmp_path):
    """p-orch (owner bob, may delegate) and p-worker (owner dave), and policies that let agents delegate."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "test.cedar").write_text((FIXTURES / "policies" / "test.cedar").read_text() + DELEGATION_POLICY)
    keys = {}
    for agent_id, owner, can_delegate in (("p-orch", "bob", True), ("p-worker", "dave", False)):
        pem, jwk = generate_key("P-256")
        keys[agent_id] = load_private_key(pem)
        add_agent(tmp_path / "agents.yaml", id=agent_id, owner=owner, team="platform", public_jwk=jwk,
                  can_delegate=can_delegate)
    return policies, keys


async def test_an_owner_along_the_chain_may_not_approve_and_the_message_says_so(tmp_path, redis_url, prefix, redis,
                                                                                fake_slack, chain_setup):
    """Issue 14.3 "nobody who owns any agent in the chain may approve, and the approvers' message says who is excluded
    and why": p-orch (bob's) delegated restart to p-worker (dave's); bob's approval of the worker's prod restart is
    refused and changes nothing, the message names bob and dave as excluded, and alice's approval grants it."""
    policies, keys = chain_setup
    async with running(tmp_path, redis_url, prefix, fake_slack, policy_dir=policies) as slack:
        slack.h.keys.update(keys)
        chain = [make_delegation(keys["p-orch"], delegator="p-orch", delegate="p-worker", audience=ISSUER,
                                 actions=["restart"], targets=["prod/*"], now=slack.h.clock.now())]
        rid = await slack.propose("p-worker", action="restart", target="prod/payments-api", delegation=chain)
        req = await slack.life.get(rid)
        assert req.status == "pending" and req.delegation_chain[0]["delegator_owner"] == "bob"

        ref = await slack.message_ref(rid)
        shown = slack.message_text(ref)
        assert "Excluded from deciding: dave, owner of p-worker (the requesting agent); " \
               "bob, owner of p-orch (delegated along the chain)" in shown

        await slack.click("U0BOB", APPROVE, rid)
        answer = (await slack.ephemerals("U0BOB"))[0]
        assert "bob owns p-orch in this request's delegation chain" in answer
        req = await slack.life.get(rid)
        assert req.status == "pending" and req.approvals == []
        assert req not in await slack.life.pending_for(slack.h.approver("bob"))

        await slack.click("U0ALICE", APPROVE, rid)
        req = await slack.status(rid, "approved")
        assert req.approvers == ["alice"]

        # The same sentence on the other desks (bot/render.py is shared).
        line = excluded_line(req)
        assert line and json.dumps(line)[1:-1] in json.dumps(proposal_card(req, max_duration_s=3600))
        views = ConsoleViews(slack.h.settings)
        page = str(views.env.get_template("macros.html").module.proposal(req))
        assert "Excluded" in page and "bob, owner of p-orch" in page
