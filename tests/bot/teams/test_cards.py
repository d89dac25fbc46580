"""The Adaptive Cards: content, plain-text rendering of untrusted text, caps, collapsed
evidence, Universal Actions, mentions and invoke responses."""

from __future__ import annotations

import orjson

from broker.model import DENIED, PENDING, Evidence, Proposal, Request
from bot.teams import cards

NOW = 1_800_000_000.0


def make_request(status: str = PENDING, **proposal) -> Request:
    p = dict(action="deploy", target="prod/payments-api", justification="roll out fix for INC-42", duration_s=600,
             confidence=0.9, evidence=(Evidence("ticket", "INC-42", "https://tickets.example.com/INC-42", None),))
    p.update(proposal)
    decision = {"outcome": "require_approval", "policies": ["prod-deploy"], "approvals_required": 2,
                "approver_group": "sre", "max_duration_s": 900, "channel": None, "backup_group": None, "reason": ""}
    return Request(id="01JTESTREQUEST0000000000AA", agent="deploy-bot", status=status, proposal=Proposal(**p),
                   proposal_sha256="ab" * 32, decision=decision, created_at=NOW, deadline=NOW + 900, owner="alice")


def nodes(card, type_: str) -> list[dict]:
    out = []

    def walk(n):
        if isinstance(n, dict):
            if n.get("type") == type_:
                out.append(n)
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(card)
    return out


def test_card_shows_what_approvers_need():
    """Requirement 1: agent, owner, action, target, duration, confidence, justification, evidence,
    the policy's verdict and the deadline are on the card."""
    card = cards.proposal_card(make_request(), max_duration_s=3600)
    runs = " ".join(r["text"] for r in nodes(card, "TextRun"))
    for expected in ("deploy-bot", "alice", "deploy", "prod/payments-api", "10 min", "90%", "roll out fix for INC-42",
                     "INC-42", "https://tickets.example.com/INC-42", "needs 2 approvals from sre", "prod-deploy"):
        assert expected in runs, expected
    deadline = [t["text"] for t in nodes(card, "TextBlock") if "Decide by" in t["text"]]
    assert deadline and "2027-01-15T08:15:00Z" in deadline[0] and "{{DATE(" in deadline[0]
    assert card["version"] == "1.5" and card["$schema"].startswith("http://adaptivecards.io/")


def test_card_shows_the_verified_delegation_chain_as_plain_links():
    """Requirement 1 (delegation chain), as on Slack: who let whom ask for what, root first, as plain text."""
    req = make_request()
    req.delegation_chain = [
        {"link": 1, "delegator": "orchestrator", "delegate": "planner", "actions": ["deploy"], "targets": ["prod/*"],
         "reason": "release **train** {{DATE(2030-01-01T00:00:00Z)}}"},
        {"link": 2, "delegator": "planner", "delegate": "deploy-bot", "actions": ["deploy"],
         "targets": ["prod/payments-api"]},
    ]
    card = cards.proposal_card(req, max_duration_s=3600)
    runs = [r["text"] for r in nodes(card, "TextRun")]
    chain = next(t for t in runs if t.startswith("1. "))
    assert chain.split("\n") == ["1. orchestrator → planner: deploy on prod/* (release **train** {\u200b{DATE(2030-01-01T00:00:00Z)}})",
                                  "2. planner → deploy-bot: deploy on prod/payments-api"]
    assert "Delegation chain (verified, root first):" in runs
    assert not any("orchestrator" in t["text"] for t in nodes(card, "TextBlock"))  # never markdown
    no_chain = cards.proposal_card(make_request(), max_duration_s=3600)
    assert not any("Delegation" in r["text"] for r in nodes(no_chain, "TextRun"))


def test_universal_actions_carry_only_the_request_id():
    """Requirement 4: Action.Execute verbs approve / approve_for / deny; data is just the request id."""
    req = make_request()
    card = cards.proposal_card(req, max_duration_s=3600, refresh_user_ids=["29:bob", "29:bob", "29:erin"])
    execs = nodes(card, "Action.Execute")
    assert {a["verb"] for a in execs} == {"approve", "approve_for", "deny", "refresh"}
    assert all(a["data"] == {"request_id": req.id} for a in execs)
    assert card["refresh"]["userIds"] == ["29:bob", "29:erin"]
    deny_input = [i for i in nodes(card, "Input.Text") if i["id"] == "reason"][0]
    assert deny_input["isRequired"] is True and deny_input["maxLength"] == 500
    choices = [int(c["value"]) for c in nodes(card, "Input.ChoiceSet")[0]["choices"]]
    assert choices and max(choices) < 600  # only shorter than what may be granted (600 requested, policy 900)


def test_agent_text_is_plain_text_never_markdown():
    """STYLE 6: agent text only in TextRuns (no markdown), control characters and card date
    functions defused; TextBlocks hold only jitgate's own words."""
    evil = "**urgent** [click me](https://evil.example) <at>bob</at> {{DATE(2017-02-14T06:08:39Z,SHORT)}}\x1b[31m\u202e"
    req = make_request(justification=evil, target="prod/x_[y](z)",
                       evidence=(Evidence("log", "*title*", None, "`rm -rf` {{TIME(2017-02-14T06:08:39Z)}}"),))
    card = cards.proposal_card(req, max_duration_s=3600)
    blocks = " ".join(t["text"] for t in nodes(card, "TextBlock"))
    assert "urgent" not in blocks and "evil.example" not in blocks and "title" not in blocks
    runs = [r["text"] for r in nodes(card, "TextRun")]
    just = [t for t in runs if "urgent" in t][0]
    assert just.startswith("**urgent** [click me](https://evil.example) <at>bob</at>")
    assert "\x1b" not in just and "\u202e" not in just
    assert "{{" not in "".join(runs)
    assert not any(r.get("selectAction") for r in nodes(card, "TextRun") if "evil.example" in r["text"])


def test_untrusted_text_is_length_capped():
    """Requirement 1: agent text is length-capped; the whole card stays under Teams' message size."""
    long_evidence = tuple(Evidence("log", "t" * 200, "https://x.example/" + "a" * 1900, "e" * 2000) for _ in range(20))
    req = make_request(justification="j" * 4000, evidence=long_evidence, target="t" * 200)
    card = cards.proposal_card(req, max_duration_s=3600)
    just = [r["text"] for r in nodes(card, "TextRun") if r["text"].startswith("jjj")][0]
    assert len(just) == cards.CAP_JUSTIFICATION and just.endswith("…")
    assert all(len(r["text"]) <= 2000 for r in nodes(card, "TextRun"))
    assert len(orjson.dumps(card)) <= cards.MAX_CARD_BYTES
    long_urls = [r for r in nodes(card, "TextRun") if r["text"].startswith("https://x.example/")]
    assert all("selectAction" not in r for r in long_urls)  # a cut URL is never a link


def test_evidence_beyond_three_is_collapsed_behind_a_toggle():
    """Requirement 1: evidence beyond N items is collapsed, shown with Action.ToggleVisibility."""
    ev = tuple(Evidence("log", f"item {i}", f"https://logs.example/{i}", None) for i in range(5))
    card = cards.proposal_card(make_request(evidence=ev), max_duration_s=3600)
    hidden = [c for c in nodes(card, "Container") if c.get("isVisible") is False]
    assert len(hidden) == 1
    assert [r["text"] for r in nodes(hidden[0], "TextRun") if r["text"].startswith("item")] == ["item 3", "item 4"]
    toggle = nodes(card, "Action.ToggleVisibility")
    assert toggle and toggle[0]["targetElements"] == [hidden[0]["id"]]
    shown_link = [r for r in nodes(card, "TextRun") if r["text"] == "https://logs.example/0"][0]
    assert shown_link["selectAction"] == {"type": "Action.OpenUrl", "url": "https://logs.example/0"}


def test_closed_request_has_no_buttons_and_no_refresh():
    """Buttons exist only while the request is pending."""
    req = make_request(status=DENIED)
    req.denial = {"by": "bob", "reason": "change freeze"}
    card = cards.proposal_card(req, max_duration_s=3600, refresh_user_ids=["29:bob"])
    assert "actions" not in card and "refresh" not in card
    assert any("Denied by bob: change freeze" in r["text"] for r in nodes(card, "TextRun"))


def test_read_only_view_and_personal_notice():
    """A viewer who may not decide gets the card without buttons and a line saying why."""
    card = cards.proposal_card(make_request(), max_duration_s=3600, actions=False, notice="You approved this request.")
    assert "actions" not in card
    assert any(r["text"] == "You approved this request." for r in nodes(card, "TextRun"))


def test_notice_mentions_are_entities_matching_the_text():
    """@mentions use msteams entities whose text appears verbatim in a TextBlock."""
    card = cards.notice_card("Reminder: 1 more approval needed", mentions=[("bob", "29:bob"), ("erin", "aad-erin")])
    entities = card["msteams"]["entities"]
    assert [e["mentioned"]["id"] for e in entities] == ["29:bob", "aad-erin"]
    block = [t["text"] for t in nodes(card, "TextBlock")][0]
    assert all(e["text"] in block for e in entities)
    assert cards.mention("<b>x</b>", "1")[0] == "<at>bx/b</at>"


def test_invoke_responses_have_the_universal_action_shape():
    """Requirement 4: a card answer or an application/vnd.microsoft.error answer."""
    c = cards.proposal_card(make_request(), max_duration_s=3600)
    assert cards.card_response(c) == {"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive", "value": c}
    err = cards.error_response(403, "Forbidden", "no")
    assert err == {"statusCode": 403, "type": "application/vnd.microsoft.error", "value": {"code": "Forbidden", "message": "no"}}


def test_card_shows_what_each_group_of_a_mixed_quorum_still_owes_and_the_arguments():
    """Issue 16, items 3 and 4: the card says per group what is missing, and shows the tool's arguments as plain text."""
    req = make_request(tool="payments-cli", arguments={"amount": 2500, "memo": "**bold** {{DATE(2030-01-01T00:00:00Z)}}"})
    req.decision = {**req.decision, "approvals_from": {"sre": 1, "security": 1},
                    "reason": "needs 1 approval from sre and 1 from security; decided by policy payments-refund-large"}
    req.approvals = [{"approver": "bob", "channel": "slack", "at": "2027-01-15T08:00:00.000Z", "group": "sre"}]
    card = cards.proposal_card(req, max_duration_s=3600)
    runs = " ".join(r["text"] for r in nodes(card, "TextRun"))
    assert "Waiting for 1 approval from security (sre: 1 of 1 (bob); security: 0 of 1)" in runs
    assert '"amount": 2500' in runs and "payments-cli" in runs
    assert "**bold**" in runs and "{{DATE(2030" not in runs  # agent text: plain, no card date function


def test_card_shows_the_link_to_a_denial_and_the_agents_history():
    """Requirement (issue 19, items 3 and 5): the card says loudly which denial the proposal is
    related to (who, why, how long before) and shows the agent's recent history."""
    from dataclasses import replace  # noqa: PLC0415

    req = replace(make_request(action="rollback"),
                  linked_to={"request": "01JDENIED", "by": "bob", "reason": "freeze until Monday",
                             "at": "2027-01-15T07:57:00Z", "action": "restart", "target": "prod/payments-api",
                             "why": "another action (rollback) on the denied target"},
                  history={"requests_24h": 4, "granted_24h": 1, "denied_24h": 2, "active_grants": 1, "waiting": 0,
                           "last_denials": [{"request": "01JDENIED", "by": "bob", "reason": "freeze until Monday",
                                             "action": "restart", "target": "prod/payments-api"}]})
    card = cards.proposal_card(req, max_duration_s=3600)
    loud = [r for r in nodes(card, "TextRun") if r["text"].startswith("Related to a request bob denied")]
    assert loud and loud[0].get("color") == "Attention"
    assert "3 min before this proposal: freeze until Monday" in loud[0]["text"]
    runs = " ".join(r["text"] for r in nodes(card, "TextRun"))
    assert "deploy-bot, 24 h before this proposal: 4 requests, 1 granted, 2 denied; then 1 active grant, 0 other requests waiting" in runs
    assert "denied by bob: restart on prod/payments-api: freeze until Monday (01JDENIED)" in runs
    assert "linked to a recent denial: yes" in runs
    plain = cards.proposal_card(make_request(), max_duration_s=3600)
    assert "Related to a request" not in " ".join(r["text"] for r in nodes(plain, "TextRun"))
