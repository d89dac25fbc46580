"""Delegation chains: verified link by link, decided by Cedar per link, shown on the
request, and carried into the token's RFC 8693 ``act`` claim."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from broker.client import DelegationRefused, Denied
from broker.jose import make_assertion, make_delegation
from broker.model import ReservedAction
from tests.client.conftest import ISSUER

READ = dict(action="read", target="staging/payments-api", justification="index the config", duration=300)


def link(live, delegator: str, delegate: str, *, key=None, actions=("read",), targets=("staging/*",), **kw) -> str:
    kw.setdefault("audience", ISSUER)
    return make_delegation(key or live.keys[delegator], delegator=delegator, delegate=delegate,
                           actions=list(actions), targets=list(targets), **kw)


async def refused(live, agent: str, chain: list[str], **proposal) -> str:
    """The detail of the 400 the broker answers for this chain; nothing is stored."""
    with pytest.raises(DelegationRefused) as caught:
        await live.client(agent).escalate(**{**READ, **proposal}, delegation=chain)
    assert caught.value.status == 400 and caught.value.code == "invalid-delegation"
    assert await live.request_ids() == []
    return caught.value.detail


async def test_two_hop_chain_yields_nested_act(live):
    """orchestrator -> planner -> worker: granted, the chain is on the request, and the token's act nests
    current actor outermost, prior actors inside (RFC 8693 section 4.1)."""
    chain = [link(live, "orchestrator", "planner", actions=["read", "restart"], targets=["staging/*", "prod/*"],
                  reason="nightly config audit"),
             link(live, "planner", "worker", targets=["staging/payments-api"])]
    client = live.client("worker")
    grant = await client.escalate(**READ, delegation=chain)
    esc = grant.escalation
    assert [(d["delegator"], d["delegate"]) for d in esc.delegation_chain] == [("orchestrator", "planner"), ("planner", "worker")]
    assert esc.delegation_chain[0]["reason"] == "nightly config audit"
    assert "team-delegation" in esc.decision["policies"] and "staging-read" in esc.decision["policies"]
    token = await client.collect(grant)
    claims = jwt.decode(token.access_token, options={"verify_signature": False})
    assert claims["sub"] == "worker"
    assert claims["act"] == {"sub": "worker", "act": {"sub": "planner", "act": {"sub": "orchestrator"}}}
    # The delegate decision's @max_duration("120") is the strictest limit. The grant's end is
    # fixed when it is granted and iat is the collection's second, which may be the next one.
    assert 119 <= claims["exp"] - claims["iat"] <= 120


async def test_grant_never_outlives_the_delegation(live):
    """A link expiring sooner than the approved duration cuts the token's lifetime to it."""
    client = live.client("worker")
    grant = await client.escalate(**READ, delegation=[link(live, "orchestrator", "worker", ttl_s=45)])
    claims = jwt.decode((await client.collect(grant)).access_token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= 45


async def test_widened_scope_is_refused_naming_the_link(live):
    """A link may only narrow: link 2 adding an action or a target the first link did not give is refused."""
    wider_action = [link(live, "orchestrator", "planner", actions=["read"]),
                    link(live, "planner", "worker", actions=["read", "restart"])]
    detail = await refused(live, "worker", wider_action)
    assert detail.startswith("delegation link 2 (planner -> worker): widens the actions: 'restart'")
    wider_target = [link(live, "orchestrator", "planner", targets=["staging/payments-api"]),
                    link(live, "planner", "worker", targets=["staging/*"])]
    assert "link 2 (planner -> worker): widens the targets: 'staging/*'" in await refused(live, "worker", wider_target)


async def test_request_outside_the_last_link_is_refused(live):
    """The request's action and target must be within what was delegated."""
    chain = [link(live, "orchestrator", "worker", targets=["staging/*"])]
    detail = await refused(live, "worker", chain, action="restart", target="prod/payments-api")
    assert "link 1 (orchestrator -> worker): the action 'restart' is outside the delegated actions" in detail


async def test_forged_signature_is_refused(live):
    """A link signed by a key other than the delegator's registered one is refused, naming the link."""
    forger = ec.generate_private_key(ec.SECP256R1())
    chain = [link(live, "orchestrator", "planner"), link(live, "planner", "worker", key=forger)]
    detail = await refused(live, "worker", chain)
    assert detail == "delegation link 2 (planner -> worker): signature does not verify against 'planner''s registered key"


async def test_unregistered_delegator_is_refused(live):
    """Every delegator must be a registered agent; issue 14.15: refused in the words of a bad signature, so a chain
    does not tell whether an id is registered."""
    ghost = ec.generate_private_key(ec.SECP256R1())
    detail = await refused(live, "worker", [link(live, "ghost-bot", "worker", key=ghost)])
    assert detail == "delegation link 1 (ghost-bot -> worker): signature does not verify against 'ghost-bot''s registered key"


async def test_delegator_without_can_delegate_is_refused(live):
    """A registered agent may delegate only when the agents file says can_delegate: true."""
    detail = await refused(live, "worker", [link(live, "no-rights", "worker")])
    assert "link 1 (no-rights -> worker): agent 'no-rights' may not delegate" in detail


async def test_cycle_is_refused(live):
    """No agent may appear twice in a chain."""
    chain = [link(live, "orchestrator", "planner"), link(live, "planner", "helper"),
             link(live, "helper", "planner")]
    detail = await refused(live, "planner", chain)
    assert detail == "delegation link 3 (helper -> planner): cycle, 'planner' already appears earlier in the chain"


async def test_expired_link_is_refused(live):
    """A link past its exp is refused, naming the link and when it expired."""
    chain = [link(live, "orchestrator", "planner"),
             link(live, "planner", "worker", now=time.time() - 600, ttl_s=300)]
    assert "delegation link 2 (planner -> worker): expired at " in await refused(live, "worker", chain)


async def test_too_deep_chain_is_refused(live):
    """More links than JITGATE_DELEGATION_MAX_DEPTH (3 here) are refused before any signature work."""
    chain = [link(live, "orchestrator", "planner"), link(live, "planner", "helper"),
             link(live, "helper", "ops-lead"), link(live, "ops-lead", "worker")]
    assert await refused(live, "worker", chain) == "delegation link 4: the chain is deeper than the 3 links allowed"


async def test_broken_linkage_and_wrong_requester_are_refused(live):
    """Each delegator must be the previous delegate, and the last delegate the requesting agent."""
    gap = [link(live, "orchestrator", "planner"), link(live, "helper", "worker")]
    assert "link 2 (helper -> worker): delegator 'helper' is not the delegate of link 1 ('planner')" in \
        await refused(live, "worker", gap)
    other = [link(live, "orchestrator", "planner")]
    assert "delegates to 'planner', not to the requesting agent 'worker'" in await refused(live, "worker", other)


async def test_link_for_another_broker_is_refused(live):
    """A delegation's aud must be this broker's issuer."""
    chain = [link(live, "orchestrator", "worker", audience="https://other-broker.example")]
    assert "audience is not this broker" in await refused(live, "worker", chain)


@pytest.mark.parametrize("audience", [[ISSUER, "https://other-broker.example"], [ISSUER]])
async def test_link_with_an_audience_list_is_refused(live, audience):
    """RFC 7523bis section 3: the broker's issuer is the link's sole audience, a string (issue 14.6:
    a list holding the issuer plus other audiences was accepted)."""
    chain = [link(live, "orchestrator", "worker", audience=audience)]
    assert "audience is not this broker (aud must be its issuer alone, a string)" in await refused(live, "worker", chain)


async def test_cedar_denial_of_a_link_denies_the_request(live):
    """Cedar decides each link (action delegate, the sub-agent as resource): a forbidden link denies, naming it."""
    with pytest.raises(Denied) as caught:
        await live.client("quarantined-bot").escalate(**READ, delegation=[link(live, "orchestrator", "quarantined-bot")])
    assert caught.value.reason.startswith("delegation link 1 (orchestrator -> quarantined-bot) is not permitted")
    assert caught.value.policy_ids == ["no-delegation-to-quarantine"]
    cross_team = [link(live, "ops-lead", "worker")]  # ops -> platform: no permit matches
    with pytest.raises(Denied, match="link 1 \\(ops-lead -> worker\\) is not permitted"):
        await live.client("worker").escalate(**READ, delegation=cross_team)


async def test_client_signs_delegations_for_its_sub_agent(live):
    """client.delegate() signs a link with the agent's key and the broker's issuer as audience."""
    chain = [await live.client("orchestrator").delegate("worker", actions=["read"], targets=["staging/*"], reason="audit")]
    grant = await live.client("worker").escalate(**READ, delegation=chain)
    assert grant.escalation.delegation_chain[0]["reason"] == "audit"


@pytest.mark.parametrize("via", ["api", "break-glass"])
async def test_the_internal_delegate_action_cannot_be_requested(live, via):
    """Issue 14.7: "Actions the policies use internally are refused at the API with a clear error" - a
    proposal for `delegate` on another agent was auto-granted by the team-delegation permit, minting a
    token with aud=<that agent>. It is a 400 problem+json naming the action, and nothing is stored."""
    before = await live.request_ids()
    if via == "api":
        body = {"action": "delegate", "target": "worker", "justification": "x", "duration_s": 60}
        headers = {"Authorization": "Bearer " + make_assertion(live.keys["planner"], agent_id="planner", audience=ISSUER)}
        async with httpx.AsyncClient(base_url=live.url) as http:
            r = await http.post("/v1/escalations", json=body, headers=headers)
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/reserved-action") and "'delegate'" in r.json()["detail"]
    else:
        with pytest.raises(ReservedAction, match="'delegate' is an action the broker uses internally"):
            await live.broker.breakglass.preview(live.approver("alice"), subject="planner", action="delegate",
                                                 target="worker", duration_s=60, reason="outage")
    assert await live.request_ids() == before
