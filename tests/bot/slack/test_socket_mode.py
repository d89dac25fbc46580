"""Socket Mode: with SLACK_APP_TOKEN set the desk connects out over a WebSocket (no public
URL); envelopes are acked on the socket and handled like HTTP requests."""

from __future__ import annotations

import time

import pytest

from broker.config import Secret
from bot.slack import desk_from_settings
from bot.slack.blocks import APPROVE
from tests.bot.slack import slackreq
from tests.bot.slack.conftest import running


@pytest.fixture
async def socket_slack(tmp_path, redis_url, prefix, redis, fake_slack):
    async with running(tmp_path, redis_url, prefix, fake_slack, make_desk=desk_from_settings,
                       slack_signing_secret=Secret(""), slack_app_token=Secret(slackreq.APP_TOKEN)) as driver:
        assert driver.h.broker.desks[0].socket_mode
        await fake_slack.socket_connected()
        yield driver


async def _ack(fake, envelope_id: str) -> dict:
    acks = await fake.wait_for(lambda: [a for a in fake.socket_acks if a.get("envelope_id") == envelope_id],
                               what=f"ack of {envelope_id}")
    return acks[0]


async def test_socket_mode_click_is_acked_and_counted(socket_slack):
    """Requirement 8: an interactive envelope over the socket is acked with its envelope id and the approval counts."""
    slack = socket_slack
    opened = slack.fake.of("apps.connections.open")
    assert opened and opened[0].token == slackreq.APP_TOKEN  # the app-level token, not the bot token
    rid = await slack.propose()
    channel, ts = await slack.message_ref(rid)
    payload = slackreq.block_actions("U0BOB", APPROVE, value=rid, channel=channel, ts=ts)
    await slack.fake.socket_send({"envelope_id": "env-1", "type": "interactive", "accepts_response_payload": False,
                                  "payload": payload})
    assert (await _ack(slack.fake, "env-1")) == {"envelope_id": "env-1"}
    await slack.fake.wait_for(lambda: slack.fake.of("chat.postEphemeral"), what="confirmation")
    assert (await slack.life.get(rid)).approvers == ["bob"]

    # An unbound user over the socket: acked, refused, nothing changes.
    payload = slackreq.block_actions("U0NOBODY", APPROVE, value=rid, channel=channel, ts=ts)
    await slack.fake.socket_send({"envelope_id": "env-2", "type": "interactive", "payload": payload})
    await _ack(slack.fake, "env-2")
    assert "not bound" in (await slack.ephemerals("U0NOBODY"))[0]
    assert (await slack.life.get(rid)).approvers == ["bob"]


async def test_socket_mode_slash_command_answers_in_the_ack(socket_slack):
    """Requirement 8: /jit over the socket is acked with its answer in the envelope ack."""
    slack = socket_slack
    command = {"command": "/jit", "text": "help", "user_id": "U0BOB", "channel_id": "C0APPROVALS", "team_id": "T0TEST",
               "api_app_id": "A0JITGATE", "response_url": slack.fake.response_url("bob"), "trigger_id": "t"}
    await slack.fake.socket_send({"envelope_id": "env-3", "type": "slash_commands", "payload": command})
    ack = await _ack(slack.fake, "env-3")
    assert "/jit revoke &lt;id&gt; [reason]" in ack["payload"]["text"]


async def test_socket_mode_has_no_http_endpoint(socket_slack):
    """Requirement 8/9: in Socket Mode no unauthenticated HTTP endpoint exists (there is no signing secret to check)."""
    body = slackreq.form_payload(slackreq.block_actions("U0BOB", APPROVE, value="x" * 22))
    r = await socket_slack.post(body)
    assert r.status_code == 404


async def test_socket_mode_deny_modal(socket_slack):
    """Requirement 4/8: the deny modal's submission over the socket: a blank reason is answered in the ack with a
    field error; a reason denies."""
    slack = socket_slack
    rid = await slack.propose()
    blank = slackreq.view_submission("U0BOB", rid, "  ")
    await slack.fake.socket_send({"envelope_id": "env-4", "type": "interactive", "payload": blank})
    ack = await _ack(slack.fake, "env-4")
    assert ack["payload"]["response_action"] == "errors"
    assert (await slack.life.get(rid)).status == "pending"
    await slack.fake.socket_send({"envelope_id": "env-5", "type": "interactive",
                                  "payload": slackreq.view_submission("U0BOB", rid, "change freeze")})
    await _ack(slack.fake, "env-5")
    req = await slack.status(rid, "denied")
    assert req.denial["by"] == "bob" and req.denial["reason"] == "change freeze"


@pytest.mark.parametrize("change, why", [
    ({"api_app_id": "A0OTHERAPP"}, "for app 'A0OTHERAPP'"),
    ({"api_app_id": None}, "for app None"),
    ({"team": {"id": "T0OTHER", "domain": "other"}}, "for workspace 'T0OTHER'"),
    ({"actions_ts_offset": -86400}, "s away from now"),
    ({"actions_ts_offset": 600}, "s away from now"),
    ({"actions_ts": "yesterday"}, "not a number"),
])
async def test_socket_mode_refuses_envelopes_for_another_app_or_team_or_a_day_old(socket_slack, caplog, change, why):
    """Issue 24.6: "Socket Mode envelopes for another app or team id, or a day old, are acted on" - an envelope must
    name this app (the socket's hello) and workspace (auth.test), and an interaction's action_ts be within the five
    minutes HTTP mode allows; otherwise it is acked and ignored, and the click counts for nothing."""
    slack = socket_slack
    rid = await slack.propose()
    channel, ts = await slack.message_ref(rid)
    payload = slackreq.block_actions("U0BOB", APPROVE, value=rid, channel=channel, ts=ts)
    change = dict(change)   # the parameters are shared between runs; the offset is taken from now, not collection
    offset = change.pop("actions_ts_offset", None)
    stamp = time.time() + offset if offset is not None else change.pop("actions_ts", None)
    if stamp is not None:
        payload["actions"][0]["action_ts"] = str(stamp) if not isinstance(stamp, str) else stamp
    payload.update(change)
    await slack.fake.socket_send({"envelope_id": "env-x", "type": "interactive", "payload": payload})
    assert (await _ack(slack.fake, "env-x")) == {"envelope_id": "env-x"}
    await slack.settle()
    assert (await slack.life.get(rid)).approvals == [] and slack.fake.of("chat.postEphemeral") == []
    assert "Socket Mode envelope refused" in caplog.text and why in caplog.text
    # The same click, for this app and workspace and now, counts.
    fresh = slackreq.block_actions("U0BOB", APPROVE, value=rid, channel=channel, ts=ts)
    await slack.fake.socket_send({"envelope_id": "env-y", "type": "interactive", "payload": fresh})
    await _ack(slack.fake, "env-y")
    await slack.fake.wait_for(lambda: slack.fake.of("chat.postEphemeral"), what="confirmation")
    assert (await slack.life.get(rid)).approvers == ["bob"]


async def test_socket_mode_refuses_a_slash_command_for_another_workspace(socket_slack):
    """Issue 24.6: a slash command envelope naming another workspace is acked empty and not run."""
    slack = socket_slack
    command = {"command": "/jit", "text": "help", "user_id": "U0BOB", "channel_id": "C0APPROVALS", "team_id": "T0OTHER",
               "api_app_id": "A0JITGATE", "response_url": slack.fake.response_url("bob"), "trigger_id": "t"}
    await slack.fake.socket_send({"envelope_id": "env-z", "type": "slash_commands", "payload": command})
    assert (await _ack(slack.fake, "env-z")) == {"envelope_id": "env-z"}


async def test_revoked_app_token_makes_the_slack_desk_not_ready_and_is_logged_once(tmp_path, redis_url, prefix, redis,
                                                                                   fake_slack, caplog):
    """Issue 24.4: when Slack later refuses the app token, /readyz reports the Slack desk not ready and the log says
    so once per state change (not a traceback per retry); when it is accepted again, both say so."""
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from bot.slack.desk import SlackDesk  # noqa: PLC0415

    caplog.set_level(logging.INFO, logger="jitgate.slack")
    async with running(tmp_path, redis_url, prefix, fake_slack, slack_signing_secret=Secret(""),
                       slack_app_token=Secret(slackreq.APP_TOKEN),
                       make_desk=lambda s: SlackDesk(s, retry_backoff_s=0.01, socket_ping_s=0.2)) as slack:
        await fake_slack.socket_connected()
        desk = slack.h.broker.desks[0]

        async def slack_ready():
            return (await slack.h.client.get("/readyz")).json()["components"]["slack"]

        assert await slack_ready() == "ok"
        fake_slack.app_token = "xapp-rotated"  # the old one is revoked at Slack, which drops the connection
        await fake_slack.sockets[-1].close()
        await fake_slack.wait_for(lambda: desk.app_token_problem, what="the refusal noticed")
        await asyncio.sleep(1)  # several refused reconnection attempts (every 0.2 s)
        assert len(fake_slack.of("apps.connections.open", ok=False)) >= 3
        assert await slack_ready() == "not ready"  # /readyz shows states only; the reason is in the log
        assert any("Slack refuses SLACK_APP_TOKEN (invalid_auth)" in r.getMessage() for r in caplog.records)
        fake_slack.app_token = slackreq.APP_TOKEN  # fixed
        await fake_slack.wait_for(lambda: desk.app_token_problem is None and fake_slack.sockets, what="reconnected")
        assert await slack_ready() == "ok"
    said = [r for r in caplog.records if r.name.startswith("jitgate.slack") and "SLACK_APP_TOKEN" in r.getMessage()]
    assert [r.levelname for r in said] == ["ERROR", "WARNING"]
    assert not [r for r in caplog.records if r.name.startswith("jitgate.slack.socket") and r.levelname == "ERROR"]
