"""Issue 14.2: one person counts once across every desk. A person the approvers file names
without a Slack id, who is also in a Slack user group bound through ``slack_usergroups``, is
recognised in Slack as themself (by the e-mail Slack confirms), never minted as a second
``slack:U…`` approver; a configuration where they could be both refuses to start. Signed clicks
against the running app; the Slack stand-in answers users.info and usergroups.users.list."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bot.slack import desk_from_settings
from bot.slack.blocks import APPROVE
from broker.app import build
from broker.clock import ManualClock
from broker.errors import ConfigError, NotApprover
from broker.identity import add_agent, generate_key, load_private_key
from tests.bot.slack.conftest import APPROVERS, running, slack_settings
from tests.support.harness import write_agents

IVAN = "  - id: ivan\n    groups: [sre]\n    teams: 6f2c0000-0000-0000-0000-00000000beef\n    email: ivan@example.com\n"
BINDING = "  - id: sre-in-slack\n    groups: [sre]\n    slack_usergroups: [S0SRE]\n"
MEMBER = {"team_id": "T0TEST", "is_email_confirmed": True}


@pytest.fixture
def approvers_file(tmp_path):
    path = tmp_path / "approvers.yaml"
    path.write_text(APPROVERS.read_text() + IVAN + BINDING)
    return path


@pytest.fixture
def slack_users(fake_slack):
    """ivan's Slack account (U0IVAN, no 'slack:' in the file) and a stranger to the file, both in S0SRE."""
    fake_slack.usergroups.update(S0SRE=["U0IVAN", "U0GRACE", "U0NOMAIL"])
    fake_slack.users["U0IVAN"] = {"id": "U0IVAN", **MEMBER, "profile": {"email": "ivan@example.com"}}
    fake_slack.users["U0GRACE"] = {"id": "U0GRACE", **MEMBER, "profile": {"email": "grace@example.com"}}
    fake_slack.users["U0NOMAIL"] = {"id": "U0NOMAIL", "team_id": "T0TEST", "profile": {"email": "nomail@example.com"}}
    return fake_slack


async def test_one_person_in_the_console_and_a_slack_user_group_counts_once(tmp_path, redis_url, prefix, redis,
                                                                             slack_users, approvers_file):
    """Issue 14.2 "a two-approval request was granted by one human": ivan approves in the console, then clicks
    Approve in Slack as U0IVAN (in the bound user group, no slack: id in the file); he is recognised as ivan, the
    second click changes nothing, and a second person is still needed."""
    async with running(tmp_path, redis_url, prefix, slack_users, approvers_file=approvers_file,
                       email_binding=True) as slack:
        rid = await slack.propose()  # prod-deploy: 2 approvals from sre
        await slack.life.approve(rid, slack.h.approver("ivan"), channel="console", platform_user="ivan")
        await slack.click("U0IVAN", APPROVE, rid)
        await slack.ephemerals("U0IVAN")
        await slack.settle()
        req = await slack.life.get(rid)
        assert req.status == "pending" and req.approvers == ["ivan"]
        await slack.click("U0GRACE", APPROVE, rid)  # someone the file does not name: a second person
        req = await slack.status(rid, "approved")
        assert req.approvers == ["ivan", "slack:U0GRACE"]


async def test_an_owner_cannot_approve_their_own_agent_through_a_slack_user_group(tmp_path, redis_url, prefix, redis,
                                                                                  slack_users, approvers_file):
    """Issue 14.2 "the same aliasing lets an agent's owner approve their own agent through Slack": ivan owns ivan-bot;
    his Slack click (through the user group) is refused as the owner's and changes nothing."""
    pem, jwk = generate_key("P-256")
    add_agent(tmp_path / "agents.yaml", id="ivan-bot", owner="ivan", team="platform", public_jwk=jwk)
    async with running(tmp_path, redis_url, prefix, slack_users, approvers_file=approvers_file,
                       email_binding=True) as slack:
        slack.h.keys["ivan-bot"] = load_private_key(pem)
        rid = await slack.propose("ivan-bot", action="restart", target="prod/payments-api")
        await slack.click("U0IVAN", APPROVE, rid)
        assert "ivan owns agent ivan-bot" in (await slack.ephemerals("U0IVAN"))[0]
        req = await slack.life.get(rid)
        assert req.status == "pending" and req.approvals == []


async def test_a_member_slack_cannot_tell_apart_gets_no_new_identity(tmp_path, redis_url, prefix, redis, slack_users,
                                                                     approvers_file):
    """Issue 14.2 "resolve group-bound Slack users to the file's people before minting a new identity": a user group
    member whose e-mail Slack does not confirm might be ivan or gina, so they are refused rather than minted."""
    async with running(tmp_path, redis_url, prefix, slack_users, approvers_file=approvers_file,
                       email_binding=True) as slack:
        rid = await slack.propose()
        await slack.click("U0NOMAIL", APPROVE, rid)
        assert "cannot tell whether you are also someone" in (await slack.ephemerals("U0NOMAIL"))[0]
        assert (await slack.life.get(rid)).approvals == []


async def test_a_configuration_where_a_person_could_be_both_refuses_to_start(tmp_path, redis_url, prefix, redis,
                                                                             slack_users, approvers_file):
    """Issue 14.2 "refuse at start-up a configuration where a person could be both": user groups bound, ivan without
    a slack: id, and no e-mail binding to recognise him: the broker refuses to start, naming ivan and the fix."""
    settings = slack_settings(tmp_path, redis_url, prefix, slack_users, approvers_file=approvers_file)
    write_agents(settings.agents_file)
    client = aioredis.from_url(redis_url)
    try:
        with pytest.raises(ConfigError, match="approver '(gina|ivan)' has no 'slack:' id while Slack user groups are bound.*JITGATE_EMAIL_BINDING=1"):
            await build(settings, redis=client, clock=ManualClock(), desks=[desk_from_settings(settings)])
    finally:
        await client.aclose()


async def test_a_person_named_after_acting_through_a_user_group_still_counts_once(tmp_path, redis_url, prefix, redis,
                                                                                  slack_users):
    """Issue 14.2 "the owner rule and 'one person counts once' must hold across aliases": U0IVAN approves as
    slack:U0IVAN (bound only through the user group); then the file names him ivan (slack: U0IVAN) and he approves
    the same request in the console: still one approval. And ivan may not approve an agent owned by slack:U0IVAN."""
    shared = APPROVERS.read_text().replace("  - id: gina\n    groups: [sre]\n    email: gina@example.com\n", "")
    path = tmp_path / "approvers.yaml"
    path.write_text(shared + BINDING)
    pem, jwk = generate_key("P-256")
    add_agent(tmp_path / "agents.yaml", id="ivans-bot", owner="slack:U0IVAN", team="platform", public_jwk=jwk)
    async with running(tmp_path, redis_url, prefix, slack_users, approvers_file=path) as slack:
        slack.h.keys["ivans-bot"] = load_private_key(pem)
        rid = await slack.propose()  # prod-deploy: 2 approvals from sre
        owned = await slack.propose("ivans-bot", action="restart", target="prod/payments-api")
        await slack.click("U0IVAN", APPROVE, rid)
        await slack.ephemerals("U0IVAN")
        assert (await slack.life.get(rid)).approvers == ["slack:U0IVAN"]

        path.write_text(shared + "  - id: ivan\n    groups: [sre]\n    slack: U0IVAN\n" + BINDING)
        await slack.h.broker.scheduler._reload_job()  # the reload job, as if its 2 s had passed
        ivan = slack.h.approver("ivan")
        assert ivan is not None and ivan.slack == "U0IVAN"
        await slack.life.approve(rid, ivan, channel="console", platform_user="ivan")
        req = await slack.life.get(rid)
        assert req.status == "pending" and req.approvers == ["slack:U0IVAN"]
        assert rid not in [r.id for r in await slack.life.pending_for(ivan)]
        with pytest.raises(NotApprover, match="owns agent ivans-bot"):
            await slack.life.approve(owned, ivan, channel="console", platform_user="ivan")
