"""A late click (issue 14 item 4) is told that it came too late, on every desk: the
request did change (it expired), so "Nothing changed" would mislead the approver."""

from __future__ import annotations

from bot.slack.listeners import error_text
from bot.teams.replies import error_answer
from broker.errors import Conflict, DeadlinePassed

LATE = DeadlinePassed("the deadline to decide passed; the request expired")


def test_slack_says_too_late_for_a_late_decision():
    """Slack: a DeadlinePassed is "Too late", any other conflict still "Nothing changed"."""
    assert error_text(LATE).startswith(":hourglass: Too late: the deadline to decide passed")
    assert "Nothing changed" in error_text(Conflict("already approved by bob"))


def test_teams_says_too_late_for_a_late_decision():
    """Teams: the same distinction as Slack."""
    assert error_answer(LATE).text.startswith("Too late: the deadline to decide passed")
    assert error_answer(Conflict("already approved by bob")).text.startswith("Nothing changed")
