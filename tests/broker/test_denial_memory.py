"""Issue 19, item 2: after a person denies, the same agent (or an agent of its delegation
chain; with JITGATE_DENIAL_MEMORY_SCOPE=owner any agent of its owner) proposing the same action
on the same target within the cool-down is denied at once, citing the earlier denial, its
approver and reason, and the approvers are not asked again."""

from __future__ import annotations

import asyncio

import orjson

from broker.clock import ManualClock
from broker.identity import add_agent, generate_key, load_private_key
from tests.support.harness import Harness, make_settings, write_agents


async def _harness(tmp_path, redis_url, prefix, **settings) -> Harness:
    tmp_path.mkdir(exist_ok=True)
    s = make_settings(tmp_path, redis_url, prefix, **settings)
    keys = write_agents(s.agents_file)
    pem, jwk = generate_key("Ed25519")
    add_agent(s.agents_file, id="deploy-bot-2", owner="alice", team="platform", public_jwk=jwk)
    keys["deploy-bot-2"] = load_private_key(pem)
    return await Harness(s, keys, ManualClock()).start()


def _posted(h: Harness) -> list[str]:
    return [rid for kind, rid, _ in h.notifier.sent if kind == "post"]


async def _settle() -> None:
    await asyncio.sleep(0.3)  # the outbox consumer delivers what was queued


async def test_the_same_proposal_after_a_denial_is_denied_at_once_citing_it(tmp_path, redis_url, prefix, redis):
    """Requirement (issue 19, item 2): denial memory; the desks are not bothered."""
    h = await _harness(tmp_path, redis_url, prefix, denial_cooldown_s=600)
    try:
        first = (await h.propose()).json()["id"]
        await h.life.deny(first, h.approver("bob"), channel="slack", reason="no deploys during the sale")
        await _settle()
        posted = _posted(h)
        h.clock.advance(180)
        r = await h.propose(justification="really, roll it out now")
        assert r.status_code == 201
        body = r.json()
        assert body["status"] == "denied"
        reason = body["denial"]["reason"]
        assert "bob denied deploy on prod/payments-api 3 min ago" in reason
        assert first in reason and "no deploys during the sale" in reason
        assert body["denial"]["by"] == "denial-memory"
        await _settle()
        assert _posted(h) == posted  # nobody was asked again
        # The audit log keeps what the policy said and why the request was denied anyway.
        entries = [orjson.loads(f[b"e"]) if b"e" in f else {k.decode(): v.decode() for k, v in f.items()}
                   for _, f in await redis.xrange(h.broker.store.audit_stream)]
        mine = [e for e in entries if body["id"] in orjson.dumps(e).decode()]
        text = orjson.dumps(mine).decode()
        assert "require_approval" in text and "denial-memory" in text and first in text
        # Another action on the target, another owner's agent: asked as usual.
        assert (await h.propose(action="rollback")).json()["status"] == "pending"
        assert (await h.propose("ops-bot")).json()["status"] == "pending"
        # The same owner's other agent: asked as usual with the default scope ("agent").
        assert (await h.propose("deploy-bot-2")).json()["status"] == "pending"
        # After the cool-down the agent may ask people again.
        h.clock.advance(421)
        assert (await h.propose()).json()["status"] == "pending"
    finally:
        await h.stop()


async def test_owner_scope_covers_every_agent_of_the_owner(tmp_path, redis_url, prefix):
    """Requirement (issue 19, item 2): configurably, any agent of the same owner."""
    h = await _harness(tmp_path, redis_url, prefix, denial_memory_scope="owner")
    try:
        first = (await h.propose()).json()["id"]
        await h.life.deny(first, h.approver("bob"), channel="cli", reason="not today")
        r = (await h.propose("deploy-bot-2")).json()
        assert r["status"] == "denied" and first in r["denial"]["reason"]
        assert (await h.propose("ops-bot")).json()["status"] == "pending"  # bob's agent, not alice's
    finally:
        await h.stop()


async def test_only_peoples_denials_are_remembered_and_zero_turns_it_off(tmp_path, redis_url, prefix):
    """A withdrawal or an expiry is not a denial; with a cool-down of 0 nothing is remembered."""
    h = await _harness(tmp_path, redis_url, prefix, denial_cooldown_s=0)
    try:
        first = (await h.propose()).json()["id"]
        await h.life.deny(first, h.approver("bob"), channel="cli", reason="not today")
        assert (await h.propose()).json()["status"] == "pending"
    finally:
        await h.stop()
    h = await _harness(tmp_path / "w", redis_url, prefix + "w:")
    try:
        rid = (await h.propose()).json()["id"]
        assert (await h.client.delete(f"/v1/escalations/{rid}", headers=h.auth("deploy-bot"))).status_code == 200
        assert (await h.propose()).json()["status"] == "pending"
    finally:
        await h.stop()
