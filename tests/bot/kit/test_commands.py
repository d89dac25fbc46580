"""The desk kit's command handlers on their own (bot/kit/commands.py), against a running broker on
real Redis: issue 15, "bot/kit/ (no platform SDK imported): the command table and its neutral
handlers returning an answer each desk formats"."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from broker.errors import (BrokerError, Conflict, DeadlinePassed, Forbidden, InvalidRequest, NotApprover,
                           NotFound, PolicyDenied)

from bot.kit import commands as kit

KIT = Path(__file__).resolve().parents[3] / "bot" / "kit"


def caller(h, approver_id: str) -> kit.Caller:
    return kit.Caller(h.approver(approver_id), user=f"U-{approver_id}", channel="cli")


async def propose(h) -> str:
    r = await h.propose()
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_list_returns_the_requests_this_approver_may_still_decide(harness):
    """Requirement 7 (list): what waits for you; not once you approved, never for the owner or outside the group."""
    rid = await propose(harness)
    reply = await kit.list_pending(harness.life, caller(harness, "bob"), None)
    assert [r.id for r in reply.requests] == [rid] and not reply.more and reply.error is None
    await harness.approve(rid, "bob")
    assert (await kit.list_pending(harness.life, caller(harness, "bob"), None)).requests == ()
    assert (await kit.list_pending(harness.life, caller(harness, "alice"), None)).requests == ()  # the owner
    assert (await kit.list_pending(harness.life, caller(harness, "dave"), None)).requests == ()


async def test_status_returns_the_request_and_refuses_bad_or_unknown_ids(harness):
    """status <id>: the request as it stands; a malformed id is refused before Redis is asked."""
    rid = await propose(harness)
    reply = await kit.status(harness.life, caller(harness, "dave"), rid)
    assert reply.requests[0].id == rid and reply.requests[0].status == "pending"
    with pytest.raises(InvalidRequest):
        await kit.status(harness.life, caller(harness, "dave"), "../../etc")
    with pytest.raises(NotFound):
        await kit.status(harness.life, caller(harness, "dave"), rid[:-4] + "zzzz")


async def test_revoke_is_decided_by_the_lifecycle_and_records_the_platform_user(harness):
    """revoke <id> [reason]: "approvers of the request's group, its owner or security may; others not"."""
    rid = await propose(harness)
    await harness.approve(rid, "bob")
    await harness.approve(rid, "erin")
    with pytest.raises(Forbidden):
        await kit.revoke(harness.life, caller(harness, "dave"), (rid, "curious"))
    assert (await harness.life.get(rid)).status == "approved"
    reply = await kit.revoke(harness.life, caller(harness, "bob"), (rid, "looks wrong"))
    assert reply.requests[0].id == rid and reply.requests[0].status == "revoked"
    assert "looks wrong" in (reply.requests[0].close_reason or "")


async def test_posture_shows_to_anyone_and_only_security_sets_it(harness):
    """posture [level]: anyone bound may look; only the security group may change it."""
    shown = await kit.posture(harness.life, caller(harness, "bob"), None)
    assert (shown.posture, shown.changed) == ("normal", False)
    with pytest.raises(Forbidden):
        await kit.posture(harness.life, caller(harness, "bob"), "incident")
    assert await harness.life.posture() == "normal"
    changed = await kit.posture(harness.life, caller(harness, "carol"), "elevated")
    assert (changed.posture, changed.changed) == ("elevated", True)
    assert await harness.life.posture() == "elevated"


def test_errors_are_classified_by_class_with_the_deadline_before_the_conflict():
    """STYLE 7 "Branch on the class, not on text": a DeadlinePassed is a Conflict but says 'too late'."""
    assert kit.error_kind(NotApprover("x")) is kit.ErrorKind.FORBIDDEN
    assert kit.error_kind(Forbidden("x")) is kit.ErrorKind.FORBIDDEN
    assert kit.error_kind(DeadlinePassed("x")) is kit.ErrorKind.TOO_LATE
    assert kit.error_kind(PolicyDenied("x")) is kit.ErrorKind.POLICY_DENIED  # a Forbidden, but the request was denied
    assert kit.error_kind(Conflict("x")) is kit.ErrorKind.UNCHANGED
    assert kit.error_kind(NotFound("x")) is kit.ErrorKind.NOT_FOUND
    assert kit.error_kind(InvalidRequest("x")) is kit.ErrorKind.INVALID
    assert kit.error_kind(BrokerError("x")) is kit.ErrorKind.OTHER


def test_parse_resolves_names_case_blind_defaults_to_help_and_flags_bad_usage():
    """One parse for every desk: no name is help, an unknown name is None, arguments that do not fit are usage."""
    table = kit.table("/x ", lambda spec: spec.handler, ())
    assert kit.parse(table, "   ").command is table["help"]
    assert kit.parse(table, "nope 1").command is None and kit.parse(table, "nope 1").name == "nope"
    p = kit.parse(table, "STATUS  abc")
    assert p.command is table["status"] and p.args == "abc" and not p.usage
    assert kit.parse(table, "status").usage and kit.parse(table, "posture panic").usage
    assert kit.parse(table, "revoke r1 too   late").args == ("r1", "too   late")


def test_both_desks_offer_the_same_commands_in_the_same_order_with_the_same_words():
    """Issue 15: "a test per desk shows the desks agree": one table, Slack's with the /jit prefix."""
    from bot.slack.commands import SUBCOMMANDS
    from bot.teams.commands import COMMANDS

    assert list(SUBCOMMANDS) == list(COMMANDS) == ["list", "status", "revoke", "posture", "breakglass",
                                                     "breakglass-reinstate", "reviews", "help"]
    for name in ("list", "status", "revoke", "posture", "reviews", "help"):
        assert SUBCOMMANDS[name].usage == "/jit " + COMMANDS[name].usage
        assert SUBCOMMANDS[name].summary == COMMANDS[name].summary


def test_the_kit_imports_no_platform():
    """Issue 15: "bot/kit/ (no platform SDK imported)", nor a desk."""
    banned = ("slack_bolt", "slack_sdk", "botbuilder", "botframework", "aiohttp", "bot.slack", "bot.teams")
    for path in KIT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert not any(n == b or n.startswith(b + ".") for b in banned), f"{path.name} imports {n}"


async def test_list_is_bounded_and_says_when_it_was_cut(harness, monkeypatch):
    """STYLE 11 "every list has a bound": at most LIST_LIMIT requests, and ``more`` says there may be others."""
    monkeypatch.setattr(kit, "LIST_LIMIT", 2)
    for _ in range(3):
        await propose(harness)
    reply = await kit.list_pending(harness.life, caller(harness, "bob"), None)
    assert len(reply.requests) == 2 and reply.more


async def test_reviews_show_security_every_open_review_and_others_only_their_own(harness):
    """Break-glass "security team ... review break-glass": the security group sees every open review, an
    engineer only their own (the rule both desks' ``reviews`` command used to hold a copy of)."""
    bg = harness.broker.breakglass
    granted = await bg.grant(harness.approver("alice"), subject="ops-bot", action="rollback",
                             target="prod/payments-api", duration_s=600, reason="pods down", channel="cli")
    rid = granted.request.id
    security = harness.settings.security_group
    mine = await kit.reviews(bg, caller(harness, "alice"), security)
    assert [r.id for r in mine.requests] == [rid] and not mine.everyone
    assert (await kit.reviews(bg, caller(harness, "frank"), security)).requests == ()
    everyone = await kit.reviews(bg, caller(harness, "carol"), security)
    assert [r.id for r in everyone.requests] == [rid] and everyone.everyone
