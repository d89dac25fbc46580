"""Requirement 2 (verified activities) and 3 (approver binding): what ``/api/messages``
refuses, and that a refused activity changes nothing."""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit

import pytest
from botbuilder.schema import Activity

from broker.config import Secret
from broker.model import PENDING
from tests.support.fake_botframework import rsa_key

from .conftest import APPROVALS, OTHER_TENANT, base_activity, card_action, conversation_update, make_rig


async def _unchanged(rig, rid: str, card_id: str) -> None:
    await rig.settle()
    req = await rig.h.life.get(rid)
    assert req.status == PENDING and req.approvals == []
    assert rig.fake.updates(card_id) == []


def _token(fake, case: str) -> str | None:
    other = rsa_key()
    return {
        "no token": None,
        "wrong issuer": lambda: fake.token(iss="https://api.botframework.com.evil.example"),
        "wrong audience": lambda: fake.token(aud="11111111-0000-0000-0000-000000000000"),
        "expired beyond skew": lambda: fake.token(exp_in=-(5 * 60 + 60)),
        "unknown key id": lambda: fake.token(key=other, kid="kid-nobody-published"),
        "known key id, other key": lambda: fake.token(key=other),
        "serviceurl claim mismatch": lambda: fake.token(serviceurl="https://smba.evil.example/teams/"),
        "serviceurl claim missing": lambda: fake.token(omit=("serviceurl",)),
        "HS256 with the public key as secret": lambda: fake.token(alg="HS256"),
        "alg none": lambda: fake.token(alg="none"),
    }[case]


TOKEN_CASES = ["no token", "wrong issuer", "wrong audience", "expired beyond skew", "unknown key id",
               "known key id, other key", "serviceurl claim mismatch", "serviceurl claim missing",
               "HS256 with the public key as secret", "alg none"]


@pytest.mark.parametrize("case", TOKEN_CASES)
async def test_card_action_with_bad_token_is_401_and_changes_nothing(rig, case):
    """Requirement 2: only activities whose Bot Framework token validates (issuer, audience = app id,
    signing key from the OpenID metadata, serviceurl claim) are accepted; otherwise 401, no state change."""
    rid, card_id = await rig.propose_posted()
    maker = _token(rig.fake, case)
    token = maker() if maker else None
    r = await rig.send(card_action(rid, reply_to_id=card_id, user="bob"), token=token)
    assert r.status_code == 401, r.text
    await _unchanged(rig, rid, card_id)
    # The same click with a valid token goes through: the refusal above was about the token.
    ok = await rig.send(card_action(rid, reply_to_id=card_id, user="bob"))
    assert ok.status_code == 200 and ok.json()["statusCode"] == 200
    assert (await rig.h.life.get(rid)).approvers == ["bob"]


async def test_expired_within_clock_skew_is_accepted(rig):
    """Bot Framework tolerates 5 minutes of clock skew: a token expired 1 minute ago still counts."""
    rid, card_id = await rig.propose_posted()
    r = await rig.send(card_action(rid, reply_to_id=card_id, user="bob"), token=rig.fake.token(exp_in=-60))
    assert r.status_code == 200 and r.json()["statusCode"] == 200


async def test_token_for_an_activity_elsewhere_is_refused(rig):
    """Requirement 2: the serviceurl claim must match the activity's serviceUrl (a token minted for
    one Bot Connector endpoint cannot carry an activity pointing the bot at another)."""
    rid, card_id = await rig.propose_posted()
    act = card_action(rid, reply_to_id=card_id, user="bob", service_url="https://smba.evil.example/teams/")
    r = await rig.send(act)  # token's serviceurl is the stand-in's
    assert r.status_code == 401
    await _unchanged(rig, rid, card_id)


async def test_key_not_endorsed_for_the_channel_is_refused(rig):
    """Requirement 2 (channel endorsement): the signing key is endorsed for msteams only."""
    rid, card_id = await rig.propose_posted()
    r = await rig.send(card_action(rid, reply_to_id=card_id, user="bob", channel_id="webchat"))
    assert r.status_code == 401
    await _unchanged(rig, rid, card_id)


async def test_wrong_scheme_and_garbage_are_refused(rig):
    """A non-Bearer Authorization header or a token that is not a JWT is a 401; a body that is not an activity a 400."""
    rid, card_id = await rig.propose_posted()
    act = card_action(rid, reply_to_id=card_id, user="bob")
    assert (await rig.send(act, token=None, headers={"Authorization": "Basic Ym9iOmJvYg=="})).status_code == 401
    assert (await rig.send(act, token="not-a-jwt")).status_code == 401
    r = await rig.h.client.post("/api/messages", content=b"[1, 2]", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {rig.fake.token()}"})
    assert r.status_code == 400
    r = await rig.h.client.post("/api/messages", content=b"type=invoke", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Bearer {rig.fake.token()}"})
    assert r.status_code == 415
    await _unchanged(rig, rid, card_id)


async def test_unbound_user_gets_403_and_nothing_changes(rig):
    """Requirement 3: a Teams user who is not bound to an approver is refused (403) with a message."""
    rid, card_id = await rig.propose_posted()
    r = await rig.send(card_action(rid, reply_to_id=card_id, user="mallory"))
    assert r.status_code == 200
    body = r.json()
    assert body["statusCode"] == 403 and body["type"] == "application/vnd.microsoft.error"
    assert "not bound" in body["value"]["message"]
    await _unchanged(rig, rid, card_id)


async def test_bound_object_id_from_another_tenant_is_refused(rig):
    """Requirement 3: the tenant is checked against MICROSOFT_APP_TENANT_ID (the same object id
    from another tenant is nobody)."""
    rid, card_id = await rig.propose_posted()
    r = await rig.send(card_action(rid, reply_to_id=card_id, user="bob", tenant=OTHER_TENANT))
    assert r.json()["statusCode"] == 403
    await _unchanged(rig, rid, card_id)


async def test_tenant_statements_that_disagree_are_refused(rig):
    """Requirement 3: conversation.tenantId and channelData.tenant.id must agree."""
    rid, card_id = await rig.propose_posted()
    act = card_action(rid, reply_to_id=card_id, user="bob")
    act["channelData"]["tenant"]["id"] = OTHER_TENANT
    r = await rig.send(act)
    assert r.json()["statusCode"] == 403
    await _unchanged(rig, rid, card_id)


async def test_card_action_naming_a_different_request_is_refused(rig):
    """Requirement 3: card data is only a pointer; a click on request A's card that names request B
    changes neither."""
    rid_a, card_a = await rig.propose_posted()
    rid_b, card_b = await rig.propose_posted(justification="another change")
    r = await rig.send(card_action(rid_b, reply_to_id=card_a, user="bob"))
    assert r.json()["statusCode"] == 403
    assert "does not belong" in r.json()["value"]["message"]
    await _unchanged(rig, rid_a, card_a)
    await _unchanged(rig, rid_b, card_b)


async def test_card_action_from_another_conversation_is_refused(rig):
    """Requirement 3: the right message id in another conversation is not the card either."""
    rid, card_id = await rig.propose_posted()
    r = await rig.send(card_action(rid, reply_to_id=card_id, user="bob", conversation="19:elsewhere@thread.tacv2"))
    assert r.json()["statusCode"] == 403
    r = await rig.send(card_action(rid, reply_to_id=None, user="bob"))
    assert r.json()["statusCode"] == 403
    await _unchanged(rig, rid, card_id)


async def test_approver_identity_comes_from_the_activity_not_the_card(rig):
    """Requirement 3: an approver id smuggled into the card data is ignored; the clicker counts."""
    rid, card_id = await rig.propose_posted()
    act = card_action(rid, reply_to_id=card_id, user="bob",
                      data={"request_id": rid, "approver": "erin", "aadObjectId": "aad-erin"})
    r = await rig.send(act)
    assert r.json()["statusCode"] == 200
    assert (await rig.h.life.get(rid)).approvers == ["bob"]


@pytest.mark.parametrize("data, code", [
    ({}, 400), ({"request_id": 42}, 400), ({"request_id": "../../etc"}, 400), ({"request_id": "0" * 26}, 404),
])
async def test_forged_card_data_is_a_clean_error(rig, data, code):
    """Bad card data gets an application/vnd.microsoft.error answer and changes nothing."""
    rid, card_id = await rig.propose_posted()
    r = await rig.send(card_action(rid, reply_to_id=card_id, user="bob", data=data))
    assert r.status_code == 200
    assert r.json()["statusCode"] == code and r.json()["type"] == "application/vnd.microsoft.error"
    await _unchanged(rig, rid, card_id)


async def test_unknown_verb_is_a_400(rig):
    """Only the desk's verbs are honoured."""
    rid, card_id = await rig.propose_posted()
    r = await rig.send(card_action(rid, "approve_everything", reply_to_id=card_id, user="bob"))
    assert r.json()["statusCode"] == 400
    await _unchanged(rig, rid, card_id)


@pytest.mark.parametrize("user, why", [("alice", "owns agent deploy-bot"), ("dave", "only members of 'sre'")])
async def test_bound_but_not_allowed_gets_403(rig, user, why):
    """The lifecycle re-checks the approver against the request now: not the agent's owner, in the group."""
    rid, card_id = await rig.propose_posted()
    r = await rig.send(card_action(rid, reply_to_id=card_id, user=user))
    assert r.json()["statusCode"] == 403 and why in r.json()["value"]["message"]
    await _unchanged(rig, rid, card_id)


async def test_messages_from_another_tenant_teach_the_bot_nothing(rig):
    """An installation in a foreign tenant (multi-tenant registration) never becomes a place to post."""
    act = base_activity("conversationUpdate", conversation="19:foreign@thread.tacv2", tenant=OTHER_TENANT,
                        membersAdded=[{"id": f"28:{rig.fake.app_id}"}])
    r = await rig.send(act)
    assert r.status_code == 202
    await rig.settle()
    assert await rig.desk.conversations.get("19:foreign@thread.tacv2") is None
    assert rig.fake.posts("19:foreign@thread.tacv2") == []


async def test_nothing_is_sent_before_the_token_validates(rig):
    """A refused activity is not handled at all (no reply, no conversation learnt)."""
    act = base_activity("message", conversation="19:new@thread.tacv2", text="help")
    r = await rig.send(act, token=rig.fake.token(aud="someone-else"))
    assert r.status_code == 401
    await rig.settle()
    assert await rig.desk.conversations.get("19:new@thread.tacv2") is None
    assert [c for c in rig.fake.calls if "19:new" in c.path] == []


async def test_oversized_activity_is_refused(rig):
    """Every input has a bound: an activity over JITGATE_MAX_BODY_BYTES is a 413."""
    rid, card_id = await rig.propose_posted()
    act = card_action(rid, reply_to_id=card_id, user="bob")
    act["text"] = "x" * (rig.h.settings.max_body_bytes + 1)
    assert (await rig.send(act)).status_code == 413
    await _unchanged(rig, rid, card_id)


async def test_without_signing_keys_everything_is_refused(tmp_path, redis_url, prefix, redis, fake_bf, fake_login,
                                                            caplog):
    """Fail closed: when the OpenID metadata cannot be fetched, tokens are refused (401), the
    broker still starts, and /readyz says Teams is not ready. Issue 14.14: "/readyz shows
    internal URLs when a fetch fails": it shows the state only; the log says why."""
    missing = f"{fake_bf.base}/{secrets.token_hex(4)}/missing/openid"
    r = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login, teams_openid_metadata_url=missing)
    try:
        resp = await r.send(conversation_update(APPROVALS, members_added=["bot"]))
        assert resp.status_code == 401
        with caplog.at_level(logging.WARNING, logger="jitgate.api"):
            ready = await r.h.client.get("/readyz")
        assert ready.json()["components"]["teams"] == "not ready"
        assert urlsplit(fake_bf.base).netloc not in ready.text and "missing" not in ready.text
        assert "Error" not in ready.text
        assert any("teams is not ready" in m.getMessage() and "signing keys" in m.getMessage() for m in caplog.records)
        teams = await r.desk.readiness()
        assert teams["ready"] is False and "signing keys" in teams["detail"]
    finally:
        await r.h.stop()


async def test_outbound_calls_need_the_login_authority_to_agree(tmp_path, redis_url, prefix, redis, fake_bf, fake_login):
    """Outbound, MSAL's client-credentials grant must succeed: with a wrong secret nothing is sent."""
    r = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login, microsoft_app_password=Secret("wrong"))
    try:
        with pytest.raises(PermissionError, match="invalid_client"):
            await r.desk.outbound.post(fake_bf.service_url, APPROVALS, Activity(type="message", text="hi"))
        assert fake_bf.calls == [] and fake_bf.rejected == []
    finally:
        await r.h.stop()
