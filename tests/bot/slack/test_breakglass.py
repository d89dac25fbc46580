"""Break-glass through Slack (issue #5): ``/jit breakglass`` → confirmation modal → grant,
the security channel's alert and review, suspension and reinstatement, and the token for
``me`` shown once to its engineer alone. Signed slash commands and interactions against the
running app; the Slack stand-in records every Web API call."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time

import jwt
import orjson

from bot.slack.bgviews import CONFIRM_VIEW, REVIEW, REVIEW_VIEW
from tests.bot.slack import slackreq
from tests.bot.slack.conftest import APPROVERS, running
from tests.bot.slack.test_manifest import METHOD_SCOPES

AGENT_BG = "ops-bot rollback prod/payments-api 20m pods crash-looping --incident INC-7"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


# ---------------------------------------------------------------------- helpers
async def open_confirmation(slack, user: str, args: str):
    """``/jit breakglass args`` as ``user``; the views.open call of the confirmation modal."""
    before = len(slack.fake.of("views.open"))
    started = time.monotonic()
    r = await slack.jit(user, f"breakglass {args}")
    assert r.status_code == 200 and r.content == b""  # acked at once, empty
    assert time.monotonic() - started < 3
    calls = await slack.fake.wait_for(lambda: slack.fake.of("views.open")[before:], what="the confirmation modal")
    call = calls[0]
    assert call.args["trigger_id"] == "trigger-3" and call.args["view"]["callback_id"] == CONFIRM_VIEW
    # Slack shows the modal only once views.open has answered, and the desk binds the confirmation
    # to that view just after: wait for the binding, as a person's click always comes after it.
    nonce = call.args["view"]["external_id"]
    redis = slack.h.broker.store.redis
    for _ in range(500):
        keys = [k async for k in redis.scan_iter(match=f"*bg-confirm:{nonce}")]
        if keys and await redis.hget(keys[0], "card"):
            break
        await asyncio.sleep(0.01)
    return call


async def submit_confirmation(slack, user: str, call, *, metadata: str | None = None, external_id: str | None = None):
    """Press Confirm on the modal the stand-in opened (optionally with forged fields)."""
    view = call.args["view"]
    payload = slackreq.modal_submission(
        user, callback_id=CONFIRM_VIEW, view_id=call.response["view"]["id"],
        private_metadata=view["private_metadata"] if metadata is None else metadata,
        external_id=view["external_id"] if external_id is None else external_id)
    r = await slack.post(slackreq.form_payload(payload))
    assert r.status_code == 200


async def the_grant(slack, engineer: str = "frank"):
    """The break-glass request just granted by ``engineer`` (waits for it)."""
    bg = slack.h.broker.breakglass

    async def find():
        return [r for r in await bg.pending_reviews() if r.engineer == engineer]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = await find()
        if found:
            return found[-1]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no break-glass grant by {engineer}")


async def security_alert(slack) -> tuple[str, str]:
    """(channel id, ts) of the break-glass alert posted to #security."""
    calls = await slack.fake.wait_for(
        lambda: [c for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "#security" and c.args.get("blocks")],
        what="the security alert")
    return calls[0].response["channel"], calls[0].response["ts"]


async def told(slack, user: str, count: int = 1) -> list[str]:
    """What ``user`` was told privately so far, in order: ephemerals and DMs (waits for ``count``)."""
    def found():
        texts = [c.args["text"] for c in slack.fake.calls if c.response.get("ok")
                 and ((c.method == "chat.postEphemeral" and c.args.get("user") == user)
                      or (c.method == "chat.postMessage" and c.args.get("channel") == user))]
        return texts if len(texts) >= count else None
    return await slack.fake.wait_for(found, what=f"{count} private message(s) to {user}")


def action_ids(message: dict) -> list[str]:
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


async def audit(slack) -> list[dict]:
    s = slack.h.broker.store
    return [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]


async def click_review(slack, user: str, rid: str, ref: tuple[str, str]):
    payload = slackreq.block_actions(user, REVIEW, value=rid, channel=ref[0], ts=ref[1],
                                     response_url=slack.fake.response_url("review"))
    return await slack.post(slackreq.form_payload(payload))


async def submit_review(slack, user: str, rid: str, comment: str):
    payload = slackreq.modal_submission(user, callback_id=REVIEW_VIEW, private_metadata=rid,
                                        values={"comment": ("comment", comment)})
    return await slack.post(slackreq.form_payload(payload))


# ---------------------------------------------------------------------- the scenario
async def test_on_call_grants_agent_then_collect_announce_expire_review(slack):
    """Scenario: on-call confirms → agent collects a break-glass token → #security and the bypassed sre
    approvers are told → the scheduler ends it → security acknowledges → the alert is edited in place."""
    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    modal = json.dumps(call.args["view"])
    for shown in ("ops-bot", "rollback", "prod/payments-api", "20 min", "pods crash-looping", "INC-7", "Confirm"):
        assert shown in modal
    assert await slack.h.broker.store.scan_requests() == []  # nothing granted before the confirmation

    await submit_confirmation(slack, "U0FRANK", call)
    (answer,) = await slack.ephemerals("U0FRANK")
    req = await the_grant(slack)
    assert f"Break-glass granted: `{req.id}`" in answer and "ops-bot may now collect its token" in answer
    assert req.status == "approved" and req.approvers == ["frank"] and req.approved_duration_s == 1200
    assert req.approvals[0]["platform_user"] == "U0FRANK" and req.approvals[0]["channel"] == "slack"
    assert req.incident == "INC-7"

    tok = await slack.h.collect(req.id, "ops-bot")
    assert tok.status_code == 200
    claims = jwt.decode(tok.json()["access_token"], options={"verify_signature": False})
    assert claims["approval"]["break_glass"] is True and claims["approval"]["approvers"] == ["frank"]

    ref = await security_alert(slack)
    await slack.fake.wait_for(lambda: "Active; ends at" in slack.message_text(ref), what="alert shows the collection")
    text = slack.message_text(ref)
    for shown in ("Break-glass by frank", "agent ops-bot", "rollback", "prod/payments-api", "pods crash-looping",
                  "INC-7", "Review open"):
        assert shown in text
    assert action_ids(slack.message(ref)) == [REVIEW]
    announce = await slack.fake.wait_for(
        lambda: [c for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "#approvals"], what="announce")
    assert len(announce) == 1 and "Approval bypassed" in announce[0].args["text"]
    assert "<@U0ALICE>" in announce[0].args["text"] and "<@U0BOB>" in announce[0].args["text"]
    assert "<@U0ERIN>" in announce[0].args["text"]  # the sre members (the policy's normal approver group)
    assert "<@U0CAROL>" not in announce[0].args["text"]
    await slack.h.broker.breakglass.deliver("bg.granted", req.id)  # at-least-once: a repeated delivery
    await slack.settle()
    alerts = [c for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "#security"]
    assert len(alerts) == 1
    assert not any(":bell:" in t for t in slack.fake.thread(*ref))  # not mistaken for a review reminder
    assert len([c for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "#approvals"]) == 1

    slack.h.clock.advance(1201)
    await slack.h.broker.scheduler.sweep()
    ended = await slack.status(req.id, "expired")
    assert ended.close_reason
    await slack.fake.wait_for(lambda: "Ended: the time limit passed" in slack.message_text(ref), what="alert shows the end")

    r = await click_review(slack, "U0CAROL", req.id, ref)
    assert r.status_code == 200
    opened = await slack.fake.wait_for(
        lambda: [c for c in slack.fake.of("views.open") if c.args["view"]["callback_id"] == REVIEW_VIEW], what="review modal")
    assert opened[0].args["view"]["private_metadata"] == req.id
    r = await submit_review(slack, "U0CAROL", req.id, "justified, INC-7 postmortem filed")
    assert r.status_code == 200
    await slack.fake.wait_for(lambda: "Reviewed by carol:" in slack.message_text(ref), what="alert shows the review")
    assert "justified, INC-7 postmortem filed" in slack.message_text(ref)
    assert action_ids(slack.message(ref)) == []  # the button is gone
    assert (await slack.life.get(req.id)).reviewed_by == "carol"
    assert await slack.h.broker.breakglass.pending_reviews() == []
    await slack.settle()
    assert {c.method for c in slack.fake.calls} <= set(METHOD_SCOPES)  # the manifest's scopes suffice
    thread = slack.fake.thread(*ref)
    assert any("collected its token" in t for t in thread) and any("time limit passed" in t for t in thread)
    assert len([c for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "#security" and c.args.get("blocks")]) == 1
    kinds = [e["type"] for e in await audit(slack)]
    assert "breakglass.granted" in kinds and "breakglass.reviewed" in kinds


# ---------------------------------------------------------------------- who, what, how long
async def test_not_on_call_is_refused(slack):
    """Issue 5 "who may": a user outside the on-call group is told so; no modal opens and nothing is granted."""
    r = await slack.jit("U0BOB", f"breakglass {AGENT_BG}")
    assert r.status_code == 200
    assert "only members of 'on-call' may break glass" in (await slack.answer("U0BOB"))["text"]
    await slack.jit("U0NOBODY", f"breakglass {AGENT_BG}")
    assert "not bound to an approver" in (await slack.answer("U0NOBODY"))["text"]
    await slack.settle()
    assert slack.fake.of("views.open") == []
    assert await slack.h.broker.store.scan_requests() == []


async def test_duration_over_the_cap_is_cut_and_shown(slack):
    """Issue 5 "duration is capped": 2 h asked, the modal says it is cut to 30 min by policy; the grant is 30 min."""
    call = await open_confirmation(slack, "U0FRANK", "ops-bot rollback prod/payments-api 2h long fix needed")
    modal = json.dumps(call.args["view"])
    assert "30 min" in modal and "requested 2 h" in modal and "cut to 30 min by policy" in modal
    await submit_confirmation(slack, "U0FRANK", call)
    await slack.ephemerals("U0FRANK")
    assert (await the_grant(slack)).approved_duration_s == 1800


async def test_missing_reason_and_bad_arguments_get_the_usage(slack):
    """Issue 5 "a reason is required": without one (or with a bad duration) the ack is the usage line; nothing opens."""
    for args in ("ops-bot rollback prod/payments-api 20m", "ops-bot rollback prod/payments-api 20m --incident INC-7",
                 "ops-bot rollback prod/payments-api soon because", "ops-bot rollback prod/payments-api 0 because",
                 "ops-bot rollback prod/payments-api 20m because --incident", ""):
        r = await slack.jit("U0FRANK", f"breakglass {args}".strip())
        assert r.json()["response_type"] == "ephemeral", args
        assert r.json()["text"].startswith(":warning: Usage: `/jit breakglass &lt;agent-id|me&gt;"), args
    await slack.settle()
    assert slack.fake.of("views.open") == []


async def test_policy_forbid_and_unknown_agent_are_refused_before_the_modal(slack):
    """Cedar still decides with break_glass=true: a forbidden action, or an unknown agent, is refused in words."""
    await slack.jit("U0FRANK", "breakglass ops-bot db.export prod/payments-api 10m need the data")
    assert "even in an emergency" in (await slack.answer("U0FRANK"))["text"]
    await slack.jit("U0FRANK", "breakglass ghost-bot rollback prod/payments-api 10m why not")
    assert "no agent 'ghost-bot'" in (await slack.answer("U0FRANK", 2))["text"]
    await slack.settle()
    assert slack.fake.of("views.open") == []


# ---------------------------------------------------------------------- review, suspension
async def test_only_security_may_acknowledge(slack):
    """Issue 5 review: someone outside the security group gets a private refusal, no modal, and the review stays open;
    a review button replayed on another message is refused."""
    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    await submit_confirmation(slack, "U0FRANK", call)
    req = await the_grant(slack)
    ref = await security_alert(slack)
    await click_review(slack, "U0BOB", req.id, ref)
    (text,) = await slack.ephemerals("U0BOB")
    assert "only members of 'security' may acknowledge" in text
    r = await submit_review(slack, "U0BOB", req.id, "looks fine to me")  # a forged submission: refused by the core
    assert r.status_code == 200
    texts = await slack.ephemerals("U0BOB", 2)
    assert "only members of 'security'" in texts[1]
    await click_review(slack, "U0CAROL", req.id, ("C0APPROVALS", "1700000099.000100"))
    assert "does not belong to that request" in (await slack.ephemerals("U0CAROL"))[0]
    r = await submit_review(slack, "U0CAROL", req.id, "   ")
    assert r.json()["response_action"] == "errors"  # a comment is required
    await slack.settle()
    assert [c for c in slack.fake.of("views.open") if c.args["view"]["callback_id"] == REVIEW_VIEW] == []
    after = await slack.life.get(req.id)
    assert after.reviewed_by is None and [r.id for r in await slack.h.broker.breakglass.pending_reviews()] == [req.id]
    assert action_ids(slack.message(ref)) == [REVIEW]


async def test_unreviewed_grant_suspends_until_security_reinstates(slack):
    """Issue 5 enforced review: a reminder, then past the deadline the engineer is suspended (threaded under the alert,
    refused at the next attempt); only security reinstates, by id or mention, which is audited and restores the right."""
    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    await submit_confirmation(slack, "U0FRANK", call)
    req = await the_grant(slack)
    ref = await security_alert(slack)
    bg = slack.h.broker.breakglass
    review_s = slack.h.settings.breakglass_review_s

    slack.h.clock.advance(review_s / 2 + 1)
    await bg.sweep_reviews()
    await slack.fake.wait_for(lambda: any("review still open" in t for t in slack.fake.thread(*ref)), what="a reminder")
    reminder = [t for t in slack.fake.thread(*ref) if "review still open" in t][0]
    assert "<@U0CAROL>" in reminder  # the security group is nudged

    slack.h.clock.advance(review_s / 2 + 1)
    await bg.sweep_reviews()
    assert (await bg.suspension("frank"))["request_id"] == req.id
    await slack.fake.wait_for(lambda: any("SUSPENDED" in t for t in slack.fake.thread(*ref)), what="suspension reply")
    await slack.fake.wait_for(lambda: "Review overdue" in slack.message_text(ref), what="alert shows the suspension")
    (suspended,) = [c for c in slack.fake.of("chat.postMessage") if "SUSPENDED" in c.args["text"]]
    assert suspended.args["thread_ts"] == ref[1] and suspended.args["reply_broadcast"] is True  # the channel sees it
    await bg.deliver("bg.suspended", req.id)  # a repeated delivery says nothing twice
    await slack.settle()
    assert len([c for c in slack.fake.of("chat.postMessage") if "SUSPENDED" in c.args["text"]]) == 1

    await slack.jit("U0FRANK", f"breakglass {AGENT_BG}")
    assert "suspended" in (await slack.answer("U0FRANK"))["text"]
    await slack.jit("U0BOB", "breakglass-reinstate frank")
    assert "only members of 'security'" in (await slack.answer("U0BOB"))["text"]
    assert await bg.suspension("frank") is not None
    await slack.jit("U0CAROL", "breakglass-reinstate <@U0FRANK|frank>")
    assert "frank's break-glass right is reinstated" in (await slack.answer("U0CAROL"))["text"]
    assert await bg.suspension("frank") is None
    await slack.fake.wait_for(lambda: any("carol reinstated frank" in t for t in slack.fake.thread(*ref)),
                              what="reinstatement note")
    events = [e for e in await audit(slack) if e["type"] == "breakglass.reinstated"]
    assert len(events) == 1 and events[0]["actor"]["approver"] == "carol" and events[0]["data"]["engineer"] == "frank"
    await slack.jit("U0CAROL", "breakglass-reinstate frank")
    assert "not suspended" in (await slack.answer("U0CAROL", 2))["text"]
    await open_confirmation(slack, "U0FRANK", AGENT_BG)  # the right is back


async def test_an_overdue_review_shows_a_suspension_only_once_the_core_records_one(slack):
    """Issue 15: "is this break-glass grant suspended?" has one answer, the core's (``BreakGlass.suspended_by``),
    on every desk (Teams' twin: tests/bot/teams/test_breakglass.py). A delivery after the review deadline but before
    the sweep suspends anyone shows no suspension; the suspension, once recorded, is said in the thread exactly once;
    after security reinstates the engineer the alert no longer says the right is suspended."""
    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    await submit_confirmation(slack, "U0FRANK", call)
    req = await the_grant(slack)
    ref = await security_alert(slack)
    bg = slack.h.broker.breakglass

    seen = len(slack.fake.of("chat.update"))
    slack.h.clock.advance(slack.h.settings.breakglass_review_s + 1)  # overdue, but no sweep has suspended anyone
    await bg.deliver("bg.review_reminder", req.id)  # e.g. a reminder delivered late
    await slack.settle()
    assert await bg.suspension("frank") is None and not await bg.suspended_by(req)
    edits = [json.dumps(c.args.get("blocks")) for c in slack.fake.of("chat.update")[seen:] if c.args.get("ts") == ref[1]]
    assert edits and not [t for t in edits if "suspended until" in t], edits  # no edit said it, not even for a moment
    assert not [t for t in slack.fake.thread(*ref) if "SUSPENDED" in t]

    await bg.sweep_reviews()  # now the core suspends frank, then tells the desks
    await slack.settle()
    assert await bg.suspended_by(await slack.h.life.get(req.id))
    await slack.fake.wait_for(lambda: "suspended until the security group reinstates it" in slack.message_text(ref),
                              what="the alert shows the suspension")
    assert len([t for t in slack.fake.thread(*ref) if "SUSPENDED" in t]) == 1

    await bg.reinstate("frank", slack.h.approver("carol"), channel="cli")
    await slack.settle()
    assert "suspended until" not in slack.message_text(ref)


async def test_reviews_lists_open_reviews(slack):
    """`/jit reviews`: security sees every open review, an engineer their own, others none."""
    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    await submit_confirmation(slack, "U0FRANK", call)
    req = await the_grant(slack)
    await slack.jit("U0CAROL", "reviews")
    text = (await slack.answer("U0CAROL"))["text"]
    assert req.id in text and "frank" in text and "pods crash-looping" in text
    await slack.jit("U0FRANK", "reviews")
    assert req.id in (await slack.answer("U0FRANK"))["text"]
    await slack.jit("U0ALICE", "reviews")
    assert req.id not in (await slack.answer("U0ALICE"))["text"]
    r = await slack.jit("U0CAROL", "reviews all")
    assert "Usage: `/jit reviews`" in r.json()["text"]


# ---------------------------------------------------------------------- the token for me
async def test_token_for_me_is_shown_once_to_its_engineer_alone(tmp_path, redis_url, prefix, redis, fake_slack, caplog):
    """Issue 5 "for me": the token reaches Slack in exactly one call, an ephemeral to the engineer; it is in no
    channel message, response URL, audit entry, Redis value or log line. The engineer may revoke it with /jit revoke."""
    caplog.set_level(logging.DEBUG)
    async with running(tmp_path, redis_url, prefix, fake_slack) as slack:
        call = await open_confirmation(slack, "U0FRANK", "me restart prod/payments-api 5m manual failover")
        assert "shown to you once" in json.dumps(call.args["view"])
        await submit_confirmation(slack, "U0FRANK", call)
        (answer,) = await slack.ephemerals("U0FRANK")
        (token,) = JWT.findall(answer)
        req = await the_grant(slack)
        assert req.status == "active"
        assert (await slack.h.introspect(token)).json()["active"] is True
        await security_alert(slack)
        await slack.settle()

        carrying = [c for c in slack.fake.calls if token in json.dumps(c.args)]
        assert len(carrying) == 1
        assert carrying[0].method == "chat.postEphemeral" and carrying[0].args["user"] == "U0FRANK"
        assert all(token not in json.dumps(r) for r in slack.fake.responses)
        assert all(token not in json.dumps(m) for m in slack.fake.messages.values())
        assert all(token not in json.dumps(e) for e in await audit(slack))
        async for key in redis.scan_iter(match=prefix + "*"):
            kind = (await redis.type(key)).decode()
            dump = {"hash": redis.hgetall, "string": redis.get, "zset": lambda k: redis.zrange(k, 0, -1),
                    "stream": redis.xrange, "set": redis.smembers, "list": lambda k: redis.lrange(k, 0, -1)}[kind]
            assert token not in repr(await dump(key)), key
        # Revoked early by the engineer themself (a break-glass grant has no approver group).
        await slack.jit("U0ALICE", f"revoke {req.id} not yours")
        assert "may not do that" in (await slack.answer("U0ALICE"))["text"]
        await slack.jit("U0FRANK", f"revoke {req.id} failover done")
        assert "Revoked" in (await slack.answer("U0FRANK"))["text"]
        revoked = await slack.status(req.id, "revoked")
        assert revoked.closed_by == "frank"
        assert (await slack.h.introspect(token)).json() == {"active": False}
        await slack.settle()
        assert len([c for c in slack.fake.calls if token in json.dumps(c.args)]) == 1
    assert token not in caplog.text


async def test_token_goes_by_dm_when_the_channel_refuses(slack, caplog):
    """Issue 5 "for me": when Slack cannot show the ephemeral in the command's channel, the token goes by DM, once,
    and the logged warning does not carry it."""
    caplog.set_level(logging.DEBUG)
    call = await open_confirmation(slack, "U0FRANK", "me restart prod/payments-api 5m manual failover")
    slack.fake.fail("chat.postEphemeral", 1, error="channel_not_found")
    await submit_confirmation(slack, "U0FRANK", call)
    dm = await slack.fake.wait_for(lambda: [c for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "U0FRANK"],
                                   what="the DM")
    (token,) = JWT.findall(dm[0].args["text"])
    await slack.settle()
    carrying = [c for c in slack.fake.calls if token in json.dumps(c.args)]
    assert [(c.method, c.response["ok"]) for c in carrying] == [("chat.postEphemeral", False), ("chat.postMessage", True)]
    assert carrying[0].args["user"] == "U0FRANK"  # the refused attempt was for the engineer alone too
    assert "sending it by DM" in caplog.text and token not in caplog.text


async def test_token_for_me_is_refused_in_chat_when_dpop_is_required(tmp_path, redis_url, prefix, redis, fake_slack):
    """Issue 24.1: with JITGATE_REQUIRE_DPOP every token the broker issues is bound, and a chat cannot hold the
    engineer's key: `/jit breakglass me ...` is refused before any modal, pointing to the CLI's --dpop-key, and
    nothing is granted or counted; break-glass for an agent still works (the agent proves its own key)."""
    async with running(tmp_path, redis_url, prefix, fake_slack, require_dpop=True) as slack:
        await slack.jit("U0FRANK", "breakglass me restart prod/payments-api 5m manual failover")
        text = (await slack.answer("U0FRANK"))["text"]
        assert "requires DPoP" in text and "--dpop-key" in text
        assert slack.fake.of("views.open") == []
        assert await slack.h.broker.breakglass.pending_reviews() == []
        await open_confirmation(slack, "U0FRANK", AGENT_BG)


# ---------------------------------------------------------------------- forged confirmations
async def test_forged_confirmations_grant_nothing(slack):
    """Issue 5 "intent confirmed": a confirmation submitted by another user than the one it was shown to, one with
    tampered parameters, one without its one-time record, and a replay are all refused; only the real one grants."""
    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    meta = json.loads(call.args["view"]["private_metadata"])
    assert meta == {"subject": "ops-bot", "action": "rollback", "target": "prod/payments-api", "duration_s": 1200,
                    "reason": "pods crash-looping", "incident": "INC-7"}

    # Alice is on-call too, but this confirmation was shown to frank; her attempt leaves it in place.
    await submit_confirmation(slack, "U0ALICE", call)
    assert "does not match the one jitgate showed you" in (await told(slack, "U0ALICE"))[0]
    tampered = json.dumps({**meta, "subject": "me", "duration_s": 86400})
    await submit_confirmation(slack, "U0FRANK", call, metadata=tampered)
    assert "does not match" in (await told(slack, "U0FRANK"))[0]
    await submit_confirmation(slack, "U0FRANK", call)  # the tampered attempt spent it
    assert "already used or has expired" in (await told(slack, "U0FRANK", 2))[1]
    await submit_confirmation(slack, "U0FRANK", call, external_id="made-up-confirmation-id")
    assert "already used or has expired" in (await told(slack, "U0FRANK", 3))[2]
    await slack.settle()
    assert await slack.h.broker.store.scan_requests() == []
    assert not [e for e in await audit(slack) if e["type"] == "breakglass.granted"]

    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    await submit_confirmation(slack, "U0FRANK", call)
    assert "Break-glass granted" in (await told(slack, "U0FRANK", 4))[3]
    await submit_confirmation(slack, "U0FRANK", call)  # the same signed confirmation again
    assert "already used" in (await told(slack, "U0FRANK", 5))[4]
    await slack.settle()
    assert len(await slack.h.broker.store.scan_requests()) == 1


async def test_confirmation_rechecks_at_submit(slack):
    """Issue 5: the grant re-runs every check when confirmed; a right suspended after the modal opened grants nothing."""
    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    bg = slack.h.broker.breakglass
    await bg.store.redis.hset(bg.suspended, "frank", orjson.dumps({"request_id": "r0", "since": "now"}))
    await submit_confirmation(slack, "U0FRANK", call)
    assert "suspended" in (await slack.ephemerals("U0FRANK"))[0]
    await slack.settle()
    assert await slack.h.broker.store.scan_requests() == []


async def test_a_cut_by_the_break_glass_limit_names_that_limit(tmp_path, redis_url, prefix, redis, fake_slack):
    """Issue 14.16 "name the limit that actually applied": with JITGATE_BREAKGLASS_MAX_S=60 and a policy allowing
    1800 s, 2 min asked is granted 60 s, and the modal, the confirmation and the audit entry credit the break-glass
    limit, not the policy."""
    async with running(tmp_path, redis_url, prefix, fake_slack, breakglass_max_s=60) as slack:
        call = await open_confirmation(slack, "U0FRANK", "ops-bot rollback prod/payments-api 2m pods crash-looping")
        modal = json.dumps(call.args["view"])
        assert "cut to 1 min by the break-glass limit (JITGATE_BREAKGLASS_MAX_S)" in modal
        assert "by policy" not in modal
        await submit_confirmation(slack, "U0FRANK", call)
        confirmation = " ".join(await slack.ephemerals("U0FRANK"))
        grant = await the_grant(slack)
        assert grant.approved_duration_s == 60
        store = slack.h.broker.store
        events = [orjson.loads(f[b"event"]) for _, f in await store.redis.xrange(store.audit_stream)]
        granted = [e for e in events if e["type"] == "breakglass.granted"]
        assert granted and granted[0]["data"]["note"] == "cut to 1 min by the break-glass limit (JITGATE_BREAKGLASS_MAX_S)"
        assert "cut to 1 min by the break-glass limit" in confirmation and "by policy" not in confirmation


async def test_the_engineer_is_not_mentioned_among_those_bypassed(slack):
    """Issue 15 "the audience resolved once in the core (who was bypassed)": an engineer who is in the bypassed group
    is not @mentioned as someone whose approval they bypassed; Teams' twin: tests/bot/teams/test_breakglass.py."""
    await slack.h.broker.breakglass.grant(slack.h.approver("alice"), subject="ops-bot", action="rollback",
                                          target="prod/payments-api", duration_s=600, reason="pods down", channel="cli")
    (announce,) = await slack.fake.wait_for(
        lambda: [c for c in slack.fake.of("chat.postMessage") if c.args["channel"] == "#approvals"], what="announce")
    assert "Approval bypassed: alice" in announce.args["text"]
    assert "<@U0ERIN>" in announce.args["text"] and "<@U0ALICE>" not in announce.args["text"]


# ---------------------------------------------------------------------- the kit's confirmation checks (issue 15)
# Issue 15 "one one-time confirmation store (keep the stricter of today's two)": the checks Teams made and Slack
# did not now hold on Slack too (bot/kit/confirmations.py; Teams' tests: tests/bot/teams/test_breakglass.py).
async def submit_as(slack, user: str, call, *, team: str | None = None, view_id: str | None = None):
    """Press Confirm on the modal, optionally from another workspace or another view."""
    view = call.args["view"]
    payload = slackreq.modal_submission(
        user, callback_id=CONFIRM_VIEW, view_id=view_id or call.response["view"]["id"],
        private_metadata=view["private_metadata"], external_id=view["external_id"])
    if team is not None:
        payload["team"]["id"] = payload["user"]["team_id"] = team
    r = await slack.post(slackreq.form_payload(payload))
    assert r.status_code == 200


async def test_someone_elses_submission_leaves_the_confirmation_to_its_engineer(slack):
    """Issue 15 (the stricter store): a confirmation is taken only by the person it was shown to; another user's
    submission is refused and neither uses nor spends it, so the engineer can still confirm."""
    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    await submit_as(slack, "U0ALICE", call)
    assert "does not match the one jitgate showed you" in (await told(slack, "U0ALICE"))[0]
    await submit_as(slack, "U0FRANK", call)
    assert "Break-glass granted" in (await told(slack, "U0FRANK"))[0]
    await slack.settle()
    assert len(await slack.h.broker.store.scan_requests()) == 1


async def test_a_submission_from_another_workspace_grants_nothing(slack):
    """Issue 15 (the stricter store): a confirmation is bound to the user *and* the tenant (Slack workspace) it was
    shown in; the same user id submitting from another workspace grants nothing."""
    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    await submit_as(slack, "U0FRANK", call, team="T0ELSEWHERE")
    assert "does not match the one jitgate showed you" in (await told(slack, "U0FRANK"))[0]
    await slack.settle()
    assert await slack.h.broker.store.scan_requests() == []


async def test_a_submission_from_another_modal_grants_nothing(slack):
    """Issue 15 (the stricter store): once the modal is open, only a submission of that very modal (its view id)
    counts; the confirmation's id carried by another view grants nothing."""
    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    await submit_as(slack, "U0FRANK", call, view_id="V0SOMEOTHER")
    assert "does not match the one jitgate showed you" in (await told(slack, "U0FRANK"))[0]
    await slack.settle()
    assert await slack.h.broker.store.scan_requests() == []


async def test_a_confirmation_grants_only_what_the_modal_showed(slack):
    """Issue 15 (the stricter store): the core's preview is re-run at submit; when what would be granted changed
    since the modal was shown (here a lower break-glass cap: 10 min instead of the 20 shown), nothing is granted."""
    call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
    bg = slack.h.broker.breakglass
    bg.limits = dataclasses.replace(bg.limits, max_duration_s=600)
    await submit_as(slack, "U0FRANK", call)
    said = (await told(slack, "U0FRANK"))[0]
    assert "changed since the dialog was shown" in said and "now 10 min" in said
    await slack.settle()
    assert await slack.h.broker.store.scan_requests() == []


async def test_a_confirmation_needs_the_engineer_it_was_shown_to(tmp_path, redis_url, prefix, redis, fake_slack):
    """Issue 15 (the stricter store): the confirmation is bound to the approver it was shown to; when the approvers
    file is edited meanwhile so that the same Slack user is now another approver, nothing is granted."""
    path = tmp_path / "bg-approvers.yaml"
    original = APPROVERS.read_text()
    path.write_text(original)
    async with running(tmp_path, redis_url, prefix, fake_slack, approvers_file=path) as slack:
        call = await open_confirmation(slack, "U0FRANK", AGENT_BG)
        path.write_text(original.replace("slack: U0FRANK", "slack: U0FRANKOLD")
                        + "  - id: fred\n    groups: [on-call]\n    slack: U0FRANK\n")
        directory = slack.h.broker.directory
        deadline = time.monotonic() + 8  # the reload job runs every 2 s; bounded so a missing reload fails
        while directory.by_slack("U0FRANK").id != "fred" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert directory.by_slack("U0FRANK").id == "fred", "the approvers file was not reloaded"
        await submit_as(slack, "U0FRANK", call)
        assert "no longer bound to the approver who typed" in (await told(slack, "U0FRANK"))[0]
        await slack.settle()
        assert await slack.h.broker.store.scan_requests() == []
