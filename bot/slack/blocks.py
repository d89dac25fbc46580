"""Block Kit views of a request: the proposal message, the evidence and deny modals.

Pure functions of the request as it is now (plus a couple of settings), so re-rendering
is idempotent: every update shows the whole truth, and buttons exist only while the
request is pending. Untrusted text goes through :mod:`bot.slack.text`; every builder
stays inside Slack's limits (3000 characters per text object, 50 blocks per message,
100 per modal) by construction.
"""

from __future__ import annotations

from broker.model import ACTIVE, APPROVED, CANCELLED, COMPLETED, DENIED, EXPIRED, PENDING, REVOKED, Request

from bot import render
from .text import FIELD_LIMIT, TEXT_LIMIT, clip, code_block, date, escape, mrkdwn

APPROVE = "jit_approve"
APPROVE_FOR = "jit_approve_for"
DENY = "jit_deny"
EVIDENCE = "jit_evidence"
DENY_VIEW = "jit_deny_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason"

EVIDENCE_SHOWN = 5          # items shown in the message; the rest are in the modal
EXCERPT_SHOWN = 300         # characters of an excerpt shown in the message
MAX_BLOCKS = 50
MAX_MODAL_BLOCKS = 100
REASON_MAX = 500            # the lifecycle's cap on a denial reason

STATUS_ICON = {
    PENDING: ":hourglass_flowing_sand:", APPROVED: ":white_check_mark:", ACTIVE: ":key:", DENIED: ":x:",
    EXPIRED: ":alarm_clock:", CANCELLED: ":leftwards_arrow_with_hook:", COMPLETED: ":checkered_flag:",
    REVOKED: ":no_entry:",
}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, TEXT_LIMIT)}}


def _context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text, TEXT_LIMIT)}]}


def _field(label: str, value: str) -> dict:
    return {"type": "mrkdwn", "text": clip(f"*{label}*\n{value}", FIELD_LIMIT)}


def _plain(text: str, limit: int = 75) -> dict:
    return {"type": "plain_text", "text": text[:limit], "emoji": True}


def fallback_text(req: Request) -> str:
    """The notification text (shown in alerts and where blocks cannot be)."""
    p = req.proposal
    head = "Approval needed" if req.status == PENDING else f"Access request {req.status}"
    return mrkdwn(f"{head}: {req.agent} wants to {p.action} on {p.target} for {render.fmt_duration(p.duration_s)}", TEXT_LIMIT)


def proposal_blocks(req: Request, *, max_duration_s: int) -> list[dict]:
    """The proposal message as it should look now."""
    p = req.proposal
    blocks: list[dict] = [{"type": "header", "text": _plain(f"Access request: {p.action}", 150)}]
    blocks += linked_blocks(req)

    fields = [
        _field("Agent", mrkdwn(req.agent, 500)),
        _field("Owner", mrkdwn(req.owner or "unknown", 500)),
        _field("Action", mrkdwn(p.action, 500)),
        _field("Target", mrkdwn(p.target, 1000)),
        _field("Duration requested", render.fmt_duration(p.duration_s)),
        _field("Confidence", render.fmt_confidence(p.confidence)),
    ]
    for label, value in (("Tool", p.tool), ("Dataset", p.dataset), ("Ticket", p.ticket)):
        if value:
            fields.append(_field(label, mrkdwn(value, 1000)))
    fields.append(_field("Deadline" if req.status == PENDING else "Was due",
                         date(req.deadline, render.fmt_time(req.deadline))))
    blocks.append({"type": "section", "fields": fields[:10]})
    arguments = render.arguments_text(req)
    if arguments is not None:  # what the agent will pass to its tool: what the approver approves
        blocks.append(_section("*Arguments*\n" + code_block(arguments, TEXT_LIMIT - 20)))

    links = render.delegation_links(req)
    if links:
        chain = "\n".join(f"{i}. {link}" for i, link in enumerate(links, 1))
        blocks.append(_section("*Delegation chain* (verified, root first)\n" + mrkdwn(chain, TEXT_LIMIT - 60)))
    excluded = render.excluded_line(req)
    if excluded:
        blocks.append(_section(":no_entry: " + mrkdwn(excluded, TEXT_LIMIT - 20)))

    blocks.append(_section("*Justification*\n" + mrkdwn(p.justification, TEXT_LIMIT - 20)))
    again = render.asked_again_line(req)
    if again:
        blocks.append(_section(":repeat: " + mrkdwn(again, TEXT_LIMIT - 20)))

    blocks += _evidence_summary(req)
    blocks += history_blocks(req)

    blocks.append(_context(f"*Policy:* {escape(render.verdict(req))}\n"
                           f"*Request* `{escape(req.id)}` · proposal sha256 `{escape(req.proposal_sha256[:16])}`"))
    blocks.append({"type": "divider"})
    icon = STATUS_ICON.get(req.status, "")
    blocks.append(_section(f"{icon} *{escape(req.status.capitalize())}* — {mrkdwn(render.status_line(req), TEXT_LIMIT - 60)}"))
    links = render.outcome_links(req)
    if links:  # the completion outcome's evidence, shown as sent (issue 18, item 6)
        blocks.append(_section("*Outcome evidence*\n" + mrkdwn("\n".join(links), TEXT_LIMIT - 30)))
    blocks.append(_context("\n".join(escape(s) for s in render.timeline(req))))
    if req.status == PENDING:
        blocks.append(_buttons(req, max_duration_s))
    return blocks[:MAX_BLOCKS]


def linked_blocks(req: Request) -> list[dict]:
    """The link to a recent denial (alternate paths, issue 19), shown first and loudly."""
    line = render.linked_line(req)
    return [_section(":warning: *" + mrkdwn(line, TEXT_LIMIT - 20) + "*")] if line else []


def history_blocks(req: Request) -> list[dict]:
    """The agent's recent history next to the proposal (issue 19, item 5)."""
    lines = render.history_lines(req)
    if not lines:
        return []
    return [_section("*Agent history*\n" + mrkdwn("\n".join(lines), TEXT_LIMIT - 40))]


def _evidence_summary(req: Request) -> list[dict]:
    items = req.proposal.evidence
    if not items:
        return [_context("No evidence attached.")]
    out = [_section(f"*Evidence* ({len(items)})")]
    cut = len(items) > EVIDENCE_SHOWN
    for e in items[:EVIDENCE_SHOWN]:
        lines = [f"`{escape(e.kind)}` *{mrkdwn(e.title, 400)}*"]
        if e.url:
            lines.append(mrkdwn(e.url, 1200))
        if e.excerpt:
            cut = cut or len(e.excerpt) > EXCERPT_SHOWN
            lines.append(code_block(e.excerpt if len(e.excerpt) <= EXCERPT_SHOWN else e.excerpt[:EXCERPT_SHOWN] + "…",
                                    EXCERPT_SHOWN * 5 + 10))
        out.append(_section("\n".join(lines)))
    if cut:
        out.append({"type": "actions", "block_id": "jit_evidence_actions", "elements": [
            {"type": "button", "action_id": EVIDENCE, "value": req.id, "text": _plain("View all evidence")}]})
    return out


def _buttons(req: Request, max_duration_s: int) -> dict:
    elements: list[dict] = [
        {"type": "button", "action_id": APPROVE, "style": "primary", "value": req.id, "text": _plain("Approve")},
    ]
    shorter = render.shorter_durations(req, max_duration_s)
    if shorter:
        elements.append({
            "type": "static_select", "action_id": APPROVE_FOR, "placeholder": _plain("Approve for less time"),
            "options": [{"text": _plain(f"Approve for {render.fmt_duration(d)}"), "value": f"{req.id}:{d}"} for d in shorter],
            # Choosing is approving: ask once so a stray selection does not count.
            "confirm": {"title": _plain("Approve for less time?", 100),
                        "text": {"type": "plain_text", "text": "Your approval counts now and caps the grant at the time you chose."},
                        "confirm": _plain("Approve", 30), "deny": _plain("Cancel", 30)},
        })
    elements.append({"type": "button", "action_id": DENY, "style": "danger", "value": req.id, "text": _plain("Deny")})
    return {"type": "actions", "block_id": "jit_decide", "elements": elements}


def evidence_modal(req: Request) -> dict:
    """Every evidence item in full (up to the API's 20), as a modal."""
    p = req.proposal
    blocks = [_section(f"*{mrkdwn(req.agent, 200)}* wants to *{mrkdwn(p.action, 100)}* on *{mrkdwn(p.target, 400)}*")]
    for i, e in enumerate(p.evidence, 1):
        blocks.append({"type": "divider"})
        blocks.append(_section(f"*{i}. {mrkdwn(e.title, 1000)}*  `{escape(e.kind)}`"))
        if e.url:
            blocks.append(_section(mrkdwn(e.url, TEXT_LIMIT)))
        if e.excerpt:
            blocks.append(_section(code_block(e.excerpt, TEXT_LIMIT)))
    if not p.evidence:
        blocks.append(_section("No evidence attached."))
    return {
        "type": "modal",
        "title": _plain("Evidence", 24),
        "close": _plain("Close", 24),
        "blocks": blocks[:MAX_MODAL_BLOCKS],
    }


def deny_modal(req: Request) -> dict:
    """Asks for the (required) reason; ``private_metadata`` carries only the request id."""
    p = req.proposal
    return {
        "type": "modal",
        "callback_id": DENY_VIEW,
        "private_metadata": req.id,
        "title": _plain("Deny request", 24),
        "submit": _plain("Deny", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            _section(f"Deny *{mrkdwn(req.agent, 200)}*'s request to *{mrkdwn(p.action, 100)}* on "
                     f"*{mrkdwn(p.target, 400)}*? The agent and the audit log get your reason."),
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": _plain("Reason", 2000),
                "element": {"type": "plain_text_input", "action_id": REASON_INPUT, "multiline": True,
                            "max_length": REASON_MAX, "placeholder": _plain("e.g. change freeze until Monday", 150)},
            },
        ],
    }
