"""Binding chat identities to approvers (DESIGN: bind identities explicitly)."""

from __future__ import annotations

from broker.directory import Approver, Directory
from bot.approvers import Binder, with_slack_groups

ALICE = Approver("alice", frozenset({"sre"}), slack="U1", teams="aad-1", email="alice@example.com")


def test_slack_binding_is_by_user_id():
    """A Slack user maps to an approver only through the configured user id."""
    b = Binder(Directory([ALICE]))
    assert b.slack("U1") == ALICE
    assert b.slack("U2") is None and b.slack(None) is None


def test_email_binding_is_opt_in():
    """STYLE 5: matching by e-mail happens only when explicitly enabled."""
    assert Binder(Directory([ALICE])).slack("U9", email="alice@example.com") is None
    assert Binder(Directory([ALICE]), email_binding=True).slack("U9", email="alice@example.com") == ALICE


def test_teams_binding_checks_tenant():
    """A Teams user from another tenant is never bound, even with a matching object id."""
    b = Binder(Directory([ALICE]), teams_tenant="t-1")
    assert b.teams("aad-1", "t-1") == ALICE
    assert b.teams("aad-1", "t-2") is None
    assert b.teams(None, "t-1") is None


def test_slack_user_group_groups_fold_into_one_identity():
    """Bound explicitly and through a user group is one approver with both groups; only through a group: slack:<id>."""
    assert with_slack_groups(ALICE, "U1", frozenset({"sre-leads"})) == Approver(
        "alice", frozenset({"sre", "sre-leads"}), slack="U1", teams="aad-1", email="alice@example.com")
    assert with_slack_groups(ALICE, "U1", frozenset()) is ALICE
    assert with_slack_groups(None, "U7", frozenset({"sre"})) == Approver("slack:U7", frozenset({"sre"}), slack="U7")
    assert with_slack_groups(None, "U7", frozenset()) is None
