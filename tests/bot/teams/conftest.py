"""A broker with the Teams desk, wired to local Bot Framework stand-ins.

Everything on our side is real: the broker on real Redis (test prefix), the desk built by
``desk_from_settings`` with botbuilder's authentication and jitgate's MSAL credentials
factory. Only the far side of the wire is faked (tests/support/fake_botframework.py): the
channel's OpenID metadata + JWKS, the Bot Connector, and the Entra login authority (TLS,
trusted through ``REQUESTS_CA_BUNDLE``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest

from broker.clock import ManualClock
from broker.config import Secret
from tests.support.fake_botframework import APP_ID, APP_PASSWORD, ISSUER, TENANT, FakeBotFramework, FakeLogin
from tests.support.harness import Harness, make_settings, write_agents

APPROVALS = "19:approvals@thread.tacv2"
TEAM = "19:team-general@thread.tacv2"  # a team's id is its General channel's id
OTHER_TENANT = "99999999-9999-9999-9999-999999999999"

# The fixture approvers (tests/fixtures/approvers.yaml) plus Teams bindings, in a file of
# this package's own so the shared fixture stays untouched.
APPROVERS = """\
approvers:
  - {id: alice, groups: [sre, on-call], slack: U0ALICE, teams: aad-alice}
  - {id: bob, groups: [sre], slack: U0BOB, teams: aad-bob}
  - {id: carol, groups: [security], teams: aad-carol}
  - {id: dave, groups: [platform], teams: aad-dave}
  - {id: erin, groups: [sre], teams: aad-erin}
  - {id: frank, groups: [on-call], teams: aad-frank}
"""
SERVICE: dict = {}  # the Bot Connector stand-in's URL, set with the session's stand-in
USERS = {name: (f"aad-{name}", f"29:{name}-teams-id") for name in ("alice", "bob", "carol", "dave", "erin", "frank", "mallory")}


@pytest.fixture(scope="session")
def fake_login(tmp_path_factory):
    login = FakeLogin(tmp_path_factory.mktemp("fake-login"))
    yield login
    login.stop()


@pytest.fixture(scope="session")
def fake_bf_session(fake_login):
    bf = FakeBotFramework(fake_login)
    SERVICE["url"] = bf.service_url
    yield bf
    bf.stop()


@pytest.fixture
def fake_bf(fake_bf_session, monkeypatch, fake_login):
    """The Bot Framework stand-in, its records cleared; MSAL trusts the login stand-in's CA."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake_login.ca_path))
    fake_bf_session.reset()
    yield fake_bf_session
    fake_bf_session.reset()


def teams_settings(tmp_path, redis_url, prefix, fake_bf, fake_login, **overrides):
    approvers = tmp_path / "approvers.yaml"
    approvers.write_text(APPROVERS)
    values = dict(
        approvers_file=approvers,
        microsoft_app_id=APP_ID,
        microsoft_app_password=Secret(APP_PASSWORD),
        microsoft_app_tenant_id=TENANT,
        microsoft_app_type="SingleTenant",
        teams_approvals_conversation=APPROVALS,
        teams_security_conversation="",
        teams_openid_metadata_url=fake_bf.metadata_url,
        teams_token_issuer=ISSUER,
        teams_login_url=fake_login.authority,
    )
    values.update(overrides)
    return make_settings(tmp_path, redis_url, prefix, **values)


@dataclass(repr=False)  # the harness's repr is the whole broker: pytest would print it on a failure
class TeamsRig:
    """The harness, the desk and the stand-in, with helpers to send signed activities."""

    h: Harness
    fake: FakeBotFramework

    @property
    def desk(self):
        return self.h.broker.desks[0]

    async def send(self, activity: dict, *, token: str | None = "default", headers: dict | None = None):
        """POST an activity to /api/messages with a Bot Connector token (``token=None``: none)."""
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if token == "default":
            token = self.fake.token()
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        return await self.h.client.post("/api/messages", json=activity, headers=hdrs)

    async def settle(self) -> None:
        """Wait for background activity handling and the outbox."""
        await self.desk.idle()
        await self.h.broker.outbox.drain()
        await self.desk.idle()

    async def install(self, conversation: str = APPROVALS, **kw) -> None:
        """The bot is added to the approvals channel's team."""
        r = await self.send(conversation_update(conversation, members_added=["bot"], **kw))
        assert r.status_code == 202, r.text
        await self.settle()

    async def propose_posted(self, **body) -> tuple[str, str]:
        """Propose, wait for the card; returns (request id, the card's activity id)."""
        r = await self.h.propose(**body)
        assert r.status_code in (200, 201), r.text
        rid = r.json()["id"]
        await self.settle()
        req = await self.h.life.get(rid)
        refs = [m for m in req.messages if m["transport"] == "teams"]
        assert refs, f"no Teams card for {rid}: {req.messages}"
        return rid, refs[0]["ref"]


def base_activity(kind: str, *, user: str = "bob", conversation: str = APPROVALS, tenant: str | None = TENANT,
                  service_url: str | None = None, channel_id: str = "msteams", conversation_type: str = "channel",
                  **extra) -> dict:
    aad, uid = USERS.get(user, (f"aad-{user}", f"29:{user}"))
    team_id = TEAM if conversation_type == "channel" else None
    a = {
        "type": kind,
        "id": "act-" + secrets.token_hex(4),
        "timestamp": "2026-01-01T00:00:00.000Z",
        "channelId": channel_id,
        "serviceUrl": service_url or SERVICE["url"],
        "from": {"id": uid, "name": user.capitalize(), "aadObjectId": aad},
        "recipient": {"id": f"28:{APP_ID}", "name": "jitgate"},
        "conversation": {"id": conversation, "conversationType": conversation_type, "tenantId": tenant,
                         "isGroup": conversation_type != "personal"},
        "channelData": {"tenant": {"id": tenant}} if tenant else {},
    }
    if team_id:
        a["channelData"]["team"] = {"id": team_id, "name": "Platform"}
        a["channelData"]["channel"] = {"id": conversation.split(";")[0]}
    a.update(extra)
    return a


def conversation_update(conversation: str = APPROVALS, *, members_added=(), members_removed=(), event: str | None = None,
                        channel_name: str | None = None, **kw) -> dict:
    def member(m):
        if m == "bot":
            return {"id": f"28:{APP_ID}"}
        aad, uid = USERS[m]
        return {"id": uid, "aadObjectId": aad}

    a = base_activity("conversationUpdate", **kw, conversation=conversation)
    if members_added:
        a["membersAdded"] = [member(m) for m in members_added]
    if members_removed:
        a["membersRemoved"] = [member(m) for m in members_removed]
    if event:
        a["channelData"]["eventType"] = event
    if channel_name:
        a["channelData"]["channel"]["name"] = channel_name
    return a


def card_action(rid, verb: str = "approve", *, reply_to_id: str | None, user: str = "bob",
                conversation: str = APPROVALS, data: dict | None = None, **kw) -> dict:
    """An ``adaptiveCard/action`` invoke, as Teams sends it when someone clicks."""
    payload = {"request_id": rid} if data is None else data
    a = base_activity("invoke", user=user, conversation=conversation, name="adaptiveCard/action",
                      value={"action": {"type": "Action.Execute", "verb": verb, "data": payload}, "trigger": "manual"},
                      **kw)
    if reply_to_id is not None:
        a["replyToId"] = reply_to_id
    return a


def message(text: str, *, user: str = "bob", **kw) -> dict:
    return base_activity("message", user=user, text=text, **kw)


@pytest.fixture
async def rig(tmp_path, redis_url, prefix, redis, fake_bf, fake_login):
    """A broker with the Teams desk, installed in the approvals channel."""
    r = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login)
    await r.install()
    yield r
    await r.h.stop()


async def make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login, **overrides) -> TeamsRig:
    from bot.teams import desk_from_settings

    settings = teams_settings(tmp_path, redis_url, prefix, fake_bf, fake_login, **overrides)
    keys = write_agents(settings.agents_file)
    desk = desk_from_settings(settings)
    h = Harness(settings, keys, ManualClock(), desks=[desk])
    await h.start()
    return TeamsRig(h, fake_bf)
