"""Platform-neutral wording shared by the desks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from broker.model import Proposal, Request

from bot import render
from bot.slack import bgviews
from bot.teams import bgcards
from tests.bot.teams.test_cards import nodes


def test_delegation_links_name_who_let_whom_do_what():
    """Approvers see the verified chain as plain lines, root first — never the raw signed links."""
    req = SimpleNamespace(delegation_chain=[
        {"link": 1, "delegator": "orchestrator", "delegate": "planner", "actions": ["deploy"], "targets": ["prod/*"],
         "reason": "release train"},
        {"link": 2, "delegator": "planner", "delegate": "worker", "actions": ["deploy"], "targets": ["prod/api"]},
    ])
    assert render.delegation_links(req) == [
        "orchestrator → planner: deploy on prod/* (release train)",
        "planner → worker: deploy on prod/api",
    ]
    assert render.delegation_links(SimpleNamespace(delegation_chain=[])) == []


def _grant(**kw):
    values = dict(id="01JTESTREQUEST0000000000BG", agent="ops-bot", status="revoked",
                  proposal=Proposal(action="rollback", target="prod/payments-api", justification="pods <!channel> down",
                                    duration_s=600),
                  proposal_sha256="ab" * 32, decision={"policies": ["prod-rollback"]}, created_at=1_800_000_000.0,
                  deadline=1_800_000_300.0, owner="", break_glass=True, engineer="frank", approved_duration_s=600,
                  collected_at=1_800_000_010.0, grant_exp=1_800_000_610.0, closed_by="carol", close_reason="done <&>",
                  review_due=1_800_086_400.0)
    values.update(kw)
    return Request(**values)


def test_break_glass_wording_is_one_for_both_desks():
    """The break-glass sentences come from one place; Slack escapes them for mrkdwn, Teams shows them as plain runs."""
    req = _grant()
    assert render.bg_summary(req) == "Break-glass by frank for agent ops-bot: rollback on prod/payments-api"
    assert render.bg_subject(_grant(agent="")) == "frank themself"
    said = render.bg_event_sentence(req, "revoked")
    assert said == "Revoked by carol: done <&>. The token no longer works."
    assert bgviews.event_line(req, "revoked") == ":no_entry: Revoked by carol: done &lt;&amp;&gt;. The token no longer works."
    assert render.bg_event_sentence(req, "collected") == render.event_sentence(req, "collected")
    assert render.bg_event_sentence(req, "approval") is None and bgviews.event_line(req, "approval") is None
    card = bgcards.security_card(req, overdue=False, suspended=False)
    assert render.bg_grant_line(req) in [r["text"] for r in nodes(card, "TextRun")]
    # An instant in a shared sentence may be localised by the desk; the words stay the same.
    assert render.bg_until(_grant(status="approved", grant_exp=None), when=lambda ts: "<when>") == \
        "10 min after collection (collect by <when>)"
    assert render.bg_review_due(req) == "Security has been told; a review is due by 2027-01-16 08:00 UTC."
    assert render.bg_reviews_heading(True) == "No break-glass review is open."
    assert render.bg_reviews_heading(False, count=2) == "Your break-glass grants awaiting review"


@pytest.mark.parametrize("seconds", [45, 90, 119, 600, 5400, 7260, 90000])
def test_the_console_says_durations_in_every_desks_words(seconds):
    """Issue 15 "duration wording": the console's filter is render.fmt_duration ("1 min 30 s", not "90 s")."""
    from bot.console.views import _environment  # noqa: PLC0415

    assert _environment().filters["dur"](seconds) == render.fmt_duration(seconds)
    assert _environment().filters["dur"](None) == "—"


def test_the_completion_outcome_is_said_once_for_every_desk():
    """Issue 18.6: the outcome an agent reported is worded once (bot/render.py) and shown by
    Slack, Teams and the console, its agent text escaped by each and its links shown as sent."""
    from bot.console.views import _environment  # noqa: PLC0415
    from bot.slack.blocks import proposal_blocks  # noqa: PLC0415
    from bot.teams.cards import proposal_card  # noqa: PLC0415

    links = ["https://grafana.example.com/d/1?a=1&b=<2>", "https://git.example.com/pr/7"]
    req = _grant(status="completed", break_glass=False, engineer=None, closed_by="ops-bot",
                 close_reason="completed by the agent", closed_at=1_800_000_100.0,
                 outcome={"status": "failure", "summary": "rolled back <!here> & paged", "evidence": links})
    line = render.outcome_line(req)
    assert line == "Outcome reported by the agent: failure — rolled back <!here> & paged (2 evidence links)"
    assert render.outcome_links(req) == links
    assert line in render.status_line(req) and line in render.event_sentence(req, "completed")
    assert render.outcome_line(_grant(status="completed")) is None and render.outcome_links(_grant()) == []

    slack = str(proposal_blocks(req, max_duration_s=600))
    assert "rolled back &lt;!here&gt; &amp; paged" in slack and "<!here>" not in slack
    assert "https://grafana.example.com/d/1?a=1&amp;b=&lt;2&gt;" in slack and "https://git.example.com/pr/7" in slack

    texts = [r["text"] for r in nodes(proposal_card(req, max_duration_s=600), "TextRun")]
    assert any(line in t for t in texts) and links[0] in texts and links[1] in texts

    html = _environment().from_string('{% import "macros.html" as m %}{{ m.closed(req) }}').render(
        req=req, when=lambda ts: "at")
    assert "rolled back &lt;!here&gt; &amp; paged" in html and "<!here>" not in html
    assert "https://grafana.example.com/d/1?a=1&amp;b=&lt;2&gt;" in html


def test_the_console_trail_names_the_outcome_token_use_and_policy_set():
    """The console's audit trail says the outcome and token use of grant.completed, who first used
    the token (token.used), and the policy set a decision was made with (issue 18, items 5, 6)."""
    from bot.console.queries import AuditEvent  # noqa: PLC0415

    done = AuditEvent(9, "grant.completed", "t", "r1", {"agent": "deploy-bot"},
                      {"outcome": {"status": "failure", "summary": "rolled back"}, "token_use": {"count": 3}})
    assert done.summary == "task completed; grant ended; outcome failure: rolled back; token introspected 3 time(s)"
    used = AuditEvent(8, "token.used", "t", "r1", {"resource_server": "payments-api"}, {"jti": "01JABCDEFGHIJK"})
    assert used.who == "payments-api" and used.summary == "token first used by payments-api (jti 01JABCDEFG…)"
    decided = AuditEvent(2, "policy.decision", "t", "r1", {}, {"outcome": "deny", "policies": ["no-export"],
                                                              "policy_set_hash": "ab" * 32, "reason": "denied"})
    assert decided.summary == f"policy said deny (no-export) [policy set {'ab' * 6}] — denied"
