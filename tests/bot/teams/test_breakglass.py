"""Break-glass through Teams (issue #5): the ``breakglass`` command → confirmation card →
signed ``bg_confirm`` invoke → grant; the security conversation's alert with its review
action, suspension and reinstatement; the token for ``me`` delivered once, in the engineer's
personal chat. Signed activities against the running broker; the Bot Connector stand-in
records every call."""

from __future__ import annotations

import json
import logging
import re

import jwt
import orjson
import pytest

from bot.commands import Usage, parse_breakglass
from bot.teams.breakglass import BREAKGLASS_USAGE

from .conftest import APPROVALS, OTHER_TENANT, USERS, card_action, make_rig, message
from .test_cards import nodes
from .test_scenario import _texts, _verbs

SECURITY = "19:security@thread.tacv2"
AGENT_BG = "ops-bot rollback prod/payments-api 20m pods crash-looping --incident INC-7"
ME_BG = "me restart prod/payments-api 5m manual failover"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@pytest.fixture
async def bg(tmp_path, redis_url, prefix, redis, fake_bf, fake_login):
    """The Teams desk installed in the approvals and the security channels."""
    r = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login, teams_security_conversation=SECURITY)
    await r.install()
    await r.install(SECURITY)
    yield r
    await r.h.stop()


# ---------------------------------------------------------------------- helpers
async def command(rig, text: str, user: str = "frank", conversation: str = APPROVALS, **kw):
    """Type ``text`` to the bot as ``user``; returns the bot's one answer (a Call)."""
    act = message(text, user=user, conversation=conversation, **kw)
    r = await rig.send(act)
    assert r.status_code == 202, r.text
    await rig.settle()
    (answer,) = rig.fake.replies(conversation, act["id"])
    return answer


async def ask(rig, text: str, user: str = "frank", **kw) -> str:
    return _texts((await command(rig, text, user, **kw)).card)


async def confirmation(rig, args: str = AGENT_BG, user: str = "frank", conversation: str = APPROVALS, **kw):
    """``breakglass args``; returns (card, nonce, the card's activity id)."""
    answer = await command(rig, f"breakglass {args}", user, conversation, **kw)
    card = answer.card
    datas = [a["data"] for a in nodes(card, "Action.Execute")]
    assert _verbs(card) == ["bg_confirm", "bg_cancel"], _texts(card)
    assert all(d == datas[0] and list(d) == ["confirmation"] for d in datas)  # only a pointer
    nonce = datas[0]["confirmation"]
    card_id = (await rig.h.broker.redis.hget(rig.desk.confirmations.p + nonce, "card")).decode()
    return card, nonce, card_id


async def click(rig, verb: str, data: dict, *, user: str = "frank", reply_to_id: str | None,
                conversation: str = APPROVALS, **kw) -> dict:
    """A signed ``adaptiveCard/action`` invoke; returns Teams' answer body."""
    r = await rig.send(card_action(None, verb, data=data, reply_to_id=reply_to_id, user=user,
                                   conversation=conversation, **kw))
    assert r.status_code == 200, r.text
    return r.json()


async def confirm(rig, nonce: str, card_id: str, user: str = "frank", **kw) -> dict:
    return await click(rig, "bg_confirm", {"confirmation": nonce}, user=user, reply_to_id=card_id, **kw)


async def grants(rig) -> list:
    return [r for r in await rig.h.broker.store.scan_requests() if r.break_glass]


async def audit(rig) -> list[dict]:
    s = rig.h.broker.store
    return [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]


def alert_of(rig):
    """The one break-glass alert card posted to the security channel."""
    alerts = [c for c in rig.fake.posts(SECURITY) if "Acknowledge review" in json.dumps(c.card)]
    assert len(alerts) == 1, [_texts(c.card) for c in rig.fake.posts(SECURITY)]
    return alerts[0]


async def alert_id(rig, rid: str) -> str:
    return (await rig.desk.notifier.bg.ref(rid)).activity_id


def latest(rig, activity_id: str, original) -> dict:
    """The alert as it looks now: the last edit, else as posted."""
    edits = rig.fake.updates(activity_id)
    return edits[-1].card if edits else original.card


def thread(rig, activity_id: str) -> list[str]:
    return [_texts(c.card) for c in rig.fake.replies(SECURITY, activity_id)]


def mentioned(call) -> set[str]:
    return {e["mentioned"]["name"] for e in call.card.get("msteams", {}).get("entities", [])}


def review_data(rid: str, comment: str) -> dict:
    return {"request_id": rid, "comment": comment}


# ---------------------------------------------------------------------- the scenario
async def test_on_call_grants_agent_collect_announce_expire_review(bg):
    """Scenario: on-call frank confirms on the card → ops-bot collects a break-glass token → the security channel gets
    the alert and the bypassed sre approvers are @mentioned → the scheduler ends it → security acknowledges the
    review → the alert is edited in place; outsiders' review clicks change nothing."""
    h, fake = bg.h, bg.fake
    card, nonce, card_id = await confirmation(bg)
    shown = _texts(card)
    for part in ("ops-bot", "rollback", "prod/payments-api", "20 min", "pods crash-looping", "INC-7", "break-glass"):
        assert part in shown
    assert await grants(bg) == []  # nothing before the confirmation

    body = await confirm(bg, nonce, card_id)
    assert body["statusCode"] == 200 and "Break-glass granted" in _texts(body["value"])
    assert "ops-bot may now collect its token" in _texts(body["value"]) and _verbs(body["value"]) == []
    (req,) = await grants(bg)
    assert req.status == "approved" and req.approvers == ["frank"] and req.approved_duration_s == 1200
    assert req.approvals[0]["platform_user"] == "aad-frank" and req.approvals[0]["channel"] == "teams"
    assert req.incident == "INC-7" and req.agent == "ops-bot"
    await bg.settle()
    closed = fake.updates(card_id)[-1].card  # the shared confirmation card, for everyone: no buttons
    assert "Confirmed by frank" in _texts(closed) and _verbs(closed) == []

    tok = await h.collect(req.id, "ops-bot")
    assert tok.status_code == 200
    claims = jwt.decode(tok.json()["access_token"], options={"verify_signature": False})
    assert claims["approval"]["break_glass"] is True and claims["approval"]["approvers"] == ["frank"]
    await bg.settle()

    alert = alert_of(bg)
    aid = await alert_id(bg, req.id)
    for part in ("Break-glass by frank", "agent ops-bot", "rollback", "prod/payments-api", "pods crash-looping",
                 "INC-7", "Review open"):
        assert part in _texts(alert.card)
    (comment,) = nodes(alert.card, "Input.Text")
    assert comment["id"] == "comment" and comment["isRequired"] is True
    assert [a["data"] for a in nodes(alert.card, "Action.Execute")] == [{"request_id": req.id}]
    assert "Active; ends at" in _texts(latest(bg, aid, alert))
    assert any("collected its token" in t for t in thread(bg, aid))
    (announce,) = [c for c in fake.posts(APPROVALS) if "Approval bypassed" in _texts(c.card)]
    assert mentioned(announce) == {"alice", "bob", "erin"}  # sre: whoever would normally have approved

    await h.broker.breakglass.deliver("bg.granted", req.id)  # at least once: a repeated delivery
    await bg.settle()
    assert len([c for c in fake.posts(SECURITY) if c.card and "Acknowledge review" in json.dumps(c.card)]) == 1
    assert len([c for c in fake.posts(APPROVALS) if "Approval bypassed" in _texts(c.card)]) == 1
    assert not any("review still open" in t for t in thread(bg, aid))  # not mistaken for a reminder

    h.clock.advance(1200 + 1)
    await h.broker.scheduler.sweep()
    await bg.settle()
    assert (await h.life.get(req.id)).status == "expired"
    assert "Ended: the time limit passed" in _texts(latest(bg, aid, alert))
    assert any("time limit passed" in t for t in thread(bg, aid))

    # Requirement "security group only": others get an error and nothing changes.
    assert (await click(bg, "bg_review", review_data(req.id, "fine by me"), user="bob", reply_to_id=aid,
                        conversation=SECURITY))["statusCode"] == 403
    assert (await click(bg, "bg_review", review_data(req.id, "fine"), user="carol", reply_to_id=card_id,
                        conversation=APPROVALS))["statusCode"] == 403  # not the alert of that request
    assert (await click(bg, "bg_review", review_data(req.id, "  "), user="carol", reply_to_id=aid,
                        conversation=SECURITY))["statusCode"] == 400  # a comment is required
    assert (await h.life.get(req.id)).reviewed_by is None

    body = await click(bg, "bg_review", review_data(req.id, "justified by INC-7"), user="carol", reply_to_id=aid,
                       conversation=SECURITY)
    assert body["statusCode"] == 200 and "Reviewed by carol: justified by INC-7" in _texts(body["value"])
    await bg.settle()
    final = fake.updates(aid)[-1].card
    assert "Reviewed by carol: justified by INC-7" in _texts(final)
    assert nodes(final, "Action.ShowCard") == [] and _verbs(final) == []
    again = await click(bg, "bg_review", review_data(req.id, "me too"), user="carol", reply_to_id=aid,
                        conversation=SECURITY)
    assert "Nothing changed" in _texts(again["value"])
    assert (await h.life.get(req.id)).review_comment == "justified by INC-7"
    kinds = [e["type"] for e in await audit(bg)]
    assert "breakglass.granted" in kinds and kinds.count("breakglass.reviewed") == 1


# ---------------------------------------------------------------------- who, what, how long
async def test_not_on_call_is_refused(bg):
    """Issue 5 "who may": a bound user outside on-call, and an unbound user, get an answer; no card, nothing granted."""
    assert "only members of 'on-call' may break glass" in await ask(bg, f"breakglass {AGENT_BG}", user="bob")
    assert "not bound" in await ask(bg, f"breakglass {AGENT_BG}", user="mallory")
    assert "even in an emergency" in await ask(bg, "breakglass ops-bot db.export prod/payments-api 10m need data")
    assert not any("bg_confirm" in json.dumps(c.body) for c in bg.fake.calls)
    assert await grants(bg) == []


async def test_duration_over_the_cap_is_cut_and_said_on_the_card(bg):
    """Issue 5 "duration is capped": 2 h asked; the card says it is cut to 30 min by the policy; the grant is 30 min."""
    card, nonce, card_id = await confirmation(bg, "ops-bot rollback prod/payments-api 2h long fix needed")
    shown = _texts(card)
    assert "30 min (requested 2 h; cut to 30 min by policy prod-rollback, break-glass)" in shown
    assert "Duration cut to 30 min by policy prod-rollback, break-glass." in shown
    assert (await confirm(bg, nonce, card_id))["statusCode"] == 200
    assert [r.approved_duration_s for r in await grants(bg)] == [1800]


async def test_missing_reason_and_bad_arguments_get_the_usage(bg):
    """Issue 5 "a reason is required": without one (or with a bad duration or incident) the answer is the usage line."""
    for args in ("ops-bot rollback prod/payments-api 20m", "ops-bot rollback prod/payments-api 20m --incident INC-7",
                 "ops-bot rollback prod/payments-api soon because", "ops-bot rollback prod/payments-api 0 because",
                 "ops-bot rollback prod/payments-api 20m because --incident"):
        assert f"Usage: {BREAKGLASS_USAGE}" in await ask(bg, f"breakglass {args}"), args
    assert not any("bg_confirm" in json.dumps(c.body) for c in bg.fake.calls)


def test_parser_takes_the_incident_anywhere_and_a_phone_dash():
    """The incident may stand anywhere after the duration, also typed as a dash (phones turn -- into —)."""
    a = parse_breakglass("ops-bot rollback prod/x 20m db is down \u2014incident INC-9 since 10:02")
    assert (a.subject, a.duration_s, a.reason, a.incident) == ("ops-bot", 1200, "db is down since 10:02", "INC-9")
    assert parse_breakglass("ME restart prod/x 1h why").subject == "me"
    with pytest.raises(Usage):
        parse_breakglass("ops-bot rollback prod/x 20m why --incident A --incident B")


# ---------------------------------------------------------------------- review, suspension
async def test_unreviewed_grant_suspends_until_security_reinstates(bg):
    """Issue 5 enforced review: `reviews` lists it; a reminder @mentions security in the alert's thread; past the
    deadline the engineer is suspended (said once, alert edited, next attempt refused); only security reinstates,
    which is audited, noted under the alert, and restores the right."""
    h = bg.h
    _, nonce, card_id = await confirmation(bg)
    await confirm(bg, nonce, card_id)
    (req,) = await grants(bg)
    await bg.settle()
    aid = await alert_id(bg, req.id)
    assert req.id in await ask(bg, "reviews", user="carol")
    assert req.id in await ask(bg, "reviews", user="frank")
    assert req.id not in await ask(bg, "reviews", user="alice")
    review_s = h.settings.breakglass_review_s
    breakglass = h.broker.breakglass

    h.clock.advance(review_s / 2 + 1)
    await breakglass.sweep_reviews()
    await bg.settle()
    reminders = [c for c in bg.fake.replies(SECURITY, aid) if "review still open" in _texts(c.card)]
    assert reminders and mentioned(reminders[0]) == {"carol"}

    h.clock.advance(review_s / 2 + 1)
    await breakglass.sweep_reviews()
    await bg.settle()
    assert (await breakglass.suspension("frank"))["request_id"] == req.id
    assert len([t for t in thread(bg, aid) if "SUSPENDED" in t]) == 1
    assert "suspended until the security group reinstates it" in _texts(bg.fake.updates(aid)[-1].card)
    await breakglass.deliver("bg.suspended", req.id)  # a repeated delivery says nothing twice
    await bg.settle()
    assert len([t for t in thread(bg, aid) if "SUSPENDED" in t]) == 1

    assert "suspended" in await ask(bg, f"breakglass {AGENT_BG}")
    assert "only members of 'security'" in await ask(bg, "breakglass-reinstate frank", user="bob")
    assert await breakglass.suspension("frank") is not None
    assert "frank's break-glass right is reinstated" in await ask(bg, "breakglass-reinstate @frank", user="carol")
    assert await breakglass.suspension("frank") is None
    await bg.settle()
    assert any("carol reinstated frank's break-glass right" in t for t in thread(bg, aid))
    events = [e for e in await audit(bg) if e["type"] == "breakglass.reinstated"]
    assert len(events) == 1 and events[0]["actor"]["approver"] == "carol" and events[0]["data"]["engineer"] == "frank"
    assert "not suspended" in await ask(bg, "breakglass-reinstate frank", user="carol")
    await confirmation(bg)  # the right is back: a confirmation card again


async def test_an_overdue_review_shows_a_suspension_only_once_the_core_records_one(bg):
    """Issue 15: "is this break-glass grant suspended?" has one answer, the core's (``BreakGlass.suspended_by``),
    on every desk (Slack's twin: tests/bot/slack/test_breakglass.py). A delivery after the review deadline but before
    the sweep suspends anyone shows no suspension; the suspension, once recorded, is said in the thread exactly once;
    after security reinstates the engineer the alert no longer says the right is suspended."""
    h = bg.h
    _, nonce, card_id = await confirmation(bg)
    await confirm(bg, nonce, card_id)
    (req,) = await grants(bg)
    await bg.settle()
    aid = await alert_id(bg, req.id)
    original = alert_of(bg)
    breakglass = h.broker.breakglass

    seen = len(bg.fake.updates(aid))
    h.clock.advance(h.settings.breakglass_review_s + 1)  # overdue, but no sweep has suspended anyone
    await breakglass.deliver("bg.review_reminder", req.id)  # e.g. a reminder delivered late
    await bg.settle()
    assert await breakglass.suspension("frank") is None and not await breakglass.suspended_by(req)
    edits = [_texts(c.card) for c in bg.fake.updates(aid)[seen:]]
    assert edits and not [t for t in edits if "suspended until" in t], edits  # no edit said it, not even for a moment
    assert not [t for t in thread(bg, aid) if "SUSPENDED" in t]

    await breakglass.sweep_reviews()  # now the core suspends frank, then tells the desks
    await bg.settle()
    assert await breakglass.suspended_by(await h.life.get(req.id))
    assert "suspended until the security group reinstates it" in _texts(latest(bg, aid, original))
    assert len([t for t in thread(bg, aid) if "SUSPENDED" in t]) == 1

    await breakglass.reinstate("frank", h.approver("carol"), channel="cli")
    await bg.settle()
    assert "suspended until" not in _texts(latest(bg, aid, original))


# ---------------------------------------------------------------------- the token for me
def _carrying(fake, token: str) -> list:
    return [c for c in fake.calls + fake.rejected if token in json.dumps({"h": c.headers, "b": c.body})]


async def _nowhere_else(rig, redis, prefix, token: str) -> None:
    assert all(token not in json.dumps(e) for e in await audit(rig))
    async for key in redis.scan_iter(match=prefix + "*"):
        kind = (await redis.type(key)).decode()
        dump = {"hash": redis.hgetall, "string": redis.get, "zset": lambda k: redis.zrange(k, 0, -1),
                "stream": redis.xrange, "set": redis.smembers, "list": lambda k: redis.lrange(k, 0, -1)}[kind]
        assert token not in repr(await dump(key)), key


async def test_token_for_me_from_a_channel_goes_once_to_the_personal_chat(bg, redis, prefix, caplog):
    """Issue 5 "for me": typed in a channel, the token reaches Teams in exactly one call, a new message in the 1:1 chat
    the bot opens with frank; it is in no channel activity, invoke answer, audit entry, Redis value or log line.
    Frank may revoke it with `revoke`."""
    caplog.set_level(logging.DEBUG)
    card, nonce, card_id = await confirmation(bg, ME_BG)
    assert "sent once to your personal chat" in _texts(card)
    body = await confirm(bg, nonce, card_id)
    assert body["statusCode"] == 200 and "sent once to your personal chat" in _texts(body["value"])
    assert not JWT.search(json.dumps(body))
    await bg.settle()
    (opened,) = bg.fake.created()
    assert opened.body["members"] == [{"id": USERS["frank"][1]}] and opened.body["isGroup"] is False
    assert opened.body["tenantID"] == opened.body["channelData"]["tenant"]["id"]
    personal = f"a:1personal-{USERS['frank'][1].replace(':', '-')}"
    (delivery,) = bg.fake.posts(personal)
    (token,) = JWT.findall(json.dumps(delivery.body))
    assert delivery.body.get("summary") == "Your break-glass token"  # no token in the notification preview
    assert _carrying(bg.fake, token) == [delivery]
    (req,) = await grants(bg)
    assert req.status == "active"
    assert (await bg.h.introspect(token)).json()["active"] is True
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["approval"]["break_glass"] is True and claims["sub"] == "frank"
    await _nowhere_else(bg, redis, prefix, token)

    assert "You may not do that" in await ask(bg, f"revoke {req.id} not yours", user="alice")
    assert f"Revoked {req.id}" in await ask(bg, f"revoke {req.id} failover done", user="frank")
    assert (await bg.h.introspect(token)).json() == {"active": False}
    await bg.settle()
    assert _carrying(bg.fake, token) == [delivery]
    assert token not in caplog.text


async def test_token_for_me_is_refused_in_teams_when_dpop_is_required(tmp_path, redis_url, prefix, redis, fake_bf,
                                                                    fake_login):
    """Issue 24.1: with JITGATE_REQUIRE_DPOP a token for oneself must be bound to a key the engineer holds, which a
    chat cannot: `breakglass me ...` is answered with the refusal pointing to the CLI's --dpop-key, no confirmation
    card, nothing granted."""
    rig = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login, require_dpop=True)
    try:
        await rig.install()
        text = await ask(rig, f"breakglass {ME_BG}")
        assert "requires DPoP" in text and "--dpop-key" in text
        assert await grants(rig) == []
    finally:
        await rig.h.stop()


async def test_token_for_me_typed_in_the_personal_chat_stays_there(bg, redis, prefix):
    """Issue 5 "for me": typed in the 1:1 chat, the token arrives there as a new message; no conversation is opened."""
    chat = "a:1personal-chat-with-frank"
    _, nonce, card_id = await confirmation(bg, ME_BG, conversation=chat, conversation_type="personal")
    body = await confirm(bg, nonce, card_id, conversation=chat, conversation_type="personal")
    assert body["statusCode"] == 200 and not JWT.search(json.dumps(body))
    await bg.settle()
    assert bg.fake.created() == []
    (delivery,) = [c for c in bg.fake.posts(chat) if JWT.search(json.dumps(c.body))]
    (token,) = JWT.findall(json.dumps(delivery.body))
    assert _carrying(bg.fake, token) == [delivery]
    await _nowhere_else(bg, redis, prefix, token)


async def test_undeliverable_token_is_revoked_and_said(bg, caplog):
    """Issue 5 "for me": when Teams refuses the private message, nobody holds the token: the grant is revoked at once,
    the engineer is told, and the failed attempt was the token's only trip (never retried, never logged)."""
    caplog.set_level(logging.DEBUG)
    _, nonce, card_id = await confirmation(bg, ME_BG)
    bg.fake.fail_next(403, when=lambda c: c.method == "POST" and "a:1personal-" in c.path)
    body = await confirm(bg, nonce, card_id)
    assert "could not be delivered" in _texts(body["value"])
    (req,) = await grants(bg)
    assert req.status == "revoked" and req.closed_by == "jitgate"
    tokens = {t for c in bg.fake.rejected for t in JWT.findall(json.dumps(c.body))}
    assert len(tokens) == 1 and len(bg.fake.rejected) == 1
    (token,) = tokens
    assert _carrying(bg.fake, token) == bg.fake.rejected
    assert (await bg.h.introspect(token)).json() == {"active": False}
    assert token not in caplog.text


# ---------------------------------------------------------------------- forged confirmations
async def test_forged_replayed_and_other_users_confirmations_grant_nothing(bg):
    """Issue 5 "intent confirmed": another user's click (on-call alice, frank's object id from another tenant) neither
    grants nor spends frank's confirmation; an unsigned invoke is 401; frank's click from another message is refused
    and spends it; a made-up pointer, extra card data, a cancelled card and a replay grant nothing more."""
    _, nonce, card_id = await confirmation(bg)
    assert (await confirm(bg, nonce, card_id, user="alice"))["statusCode"] == 403
    assert (await confirm(bg, nonce, card_id, tenant=OTHER_TENANT))["statusCode"] == 403
    r = await bg.send(card_action(None, "bg_confirm", data={"confirmation": nonce}, reply_to_id=card_id, user="frank"),
                      token=None)
    assert r.status_code == 401
    assert (await confirm(bg, nonce, "1700000000999"))["statusCode"] == 403  # not the card it was issued for
    assert (await confirm(bg, nonce, card_id))["statusCode"] == 409  # spent by that attempt
    assert (await confirm(bg, "made-up-confirmation-pointer-0000", card_id))["statusCode"] == 409

    _, nonce, card_id = await confirmation(bg)
    assert (await click(bg, "bg_cancel", {"confirmation": nonce}, user="alice", reply_to_id=card_id))["statusCode"] == 403
    cancelled = await click(bg, "bg_cancel", {"confirmation": nonce}, reply_to_id=card_id)
    assert "Cancelled" in _texts(cancelled["value"])
    assert (await confirm(bg, nonce, card_id))["statusCode"] == 409
    assert await grants(bg) == []
    assert not [e for e in await audit(bg) if e["type"] == "breakglass.granted"]

    _, nonce, card_id = await confirmation(bg)
    tampered = {"confirmation": nonce, "subject": "me", "duration_s": 86400, "target": "prod/everything"}
    assert (await click(bg, "bg_confirm", tampered, reply_to_id=card_id))["statusCode"] == 200
    (req,) = await grants(bg)
    assert (req.agent, req.proposal.target, req.approved_duration_s) == ("ops-bot", "prod/payments-api", 1200)
    assert (await confirm(bg, nonce, card_id))["statusCode"] == 409  # the same signed confirmation again
    assert len(await grants(bg)) == 1


async def test_confirmation_rechecks_at_confirm_time(bg):
    """Issue 5: confirming re-runs every check; a right suspended after the card was shown grants nothing."""
    _, nonce, card_id = await confirmation(bg)
    breakglass = bg.h.broker.breakglass
    await breakglass.store.redis.hset(breakglass.suspended, "frank", orjson.dumps({"request_id": "r0", "since": "now"}))
    body = await confirm(bg, nonce, card_id)
    assert body["statusCode"] == 403 and "suspended" in body["value"]["message"]
    assert await grants(bg) == []


async def test_without_a_security_conversation_the_alert_goes_to_approvals(tmp_path, redis_url, prefix, redis, fake_bf,
                                                                          fake_login):
    """Issue 5 "loudly monitored": with TEAMS_SECURITY_CONVERSATION unset the alert (with its review action) goes to
    the approvals conversation rather than nowhere."""
    rig = await make_rig(tmp_path, redis_url, prefix, fake_bf, fake_login)
    try:
        await rig.install()
        _, nonce, card_id = await confirmation(rig)
        assert (await confirm(rig, nonce, card_id))["statusCode"] == 200
        await rig.settle()
        (req,) = await grants(rig)
        alerts = [c for c in rig.fake.posts(APPROVALS) if "Acknowledge review" in json.dumps(c.card)]
        assert len(alerts) == 1 and "Break-glass by frank" in _texts(alerts[0].card)
        assert (await rig.desk.notifier.bg.ref(req.id)).conversation == APPROVALS
    finally:
        await rig.h.stop()


async def test_the_engineer_is_not_mentioned_among_those_bypassed(bg):
    """Issue 15 "the audience resolved once in the core (who was bypassed)": an engineer who is in the bypassed group
    is not @mentioned as someone whose approval they bypassed, as on Slack (tests/bot/slack/test_breakglass.py)."""
    await bg.h.broker.breakglass.grant(bg.h.approver("alice"), subject="ops-bot", action="rollback",
                                       target="prod/payments-api", duration_s=600, reason="pods down", channel="cli")
    await bg.settle()
    (announce,) = [c for c in bg.fake.posts(APPROVALS) if "Approval bypassed" in _texts(c.card)]
    assert "erin" in mentioned(announce) and "alice" not in mentioned(announce)
