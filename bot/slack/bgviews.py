"""Block Kit and text of break-glass in Slack: the confirmation modal, the security-channel
alert with its review button, the review modal, and what the engineer is told.

Pure functions of what the core returned (a :class:`Preview`, a :class:`Request`), so a
re-render shows the whole truth. The platform-neutral sentences (shared with Teams) are
``bot.render``'s ``bg_*``; this module adds Slack's markup. The reason, the incident
reference and every name are escaped and capped through :mod:`bot.slack.text`; the
engineer typed them, and a security channel is no place for ``<!channel>``.
"""

from __future__ import annotations

from broker.breakglass import ME, Preview
from broker.model import Request

from bot import render

from .blocks import _context, _field, _plain, _section  # Block Kit's pieces, one definition
from .text import TEXT_LIMIT, date, escape, mrkdwn

CONFIRM_VIEW = "jit_bg_confirm"
REVIEW = "jit_bg_review"
REVIEW_VIEW = "jit_bg_review_comment"
COMMENT_BLOCK = "comment"
COMMENT_INPUT = "comment"
COMMENT_MAX = 500  # the core's cap on a review comment
EVENT_ICON = {"collected": ":key:", "revoked": ":no_entry:", "expired": ":checkered_flag:", "completed": ":checkered_flag:"}


# ---------------------------------------------------------------------- the confirmation
def confirm_modal(pv: Preview, engineer_id: str, private_metadata: str, *, review_s: int) -> dict:
    """What a confirmed command grants, exactly: the engineer confirms intent, not a typo."""
    who = (f"you ({mrkdwn(engineer_id, 100)}): the token is shown to you once, privately" if pv.subject == ME
           else f"agent *{mrkdwn(pv.subject, 200)}*, which collects its token through the API")
    fields = [
        _field("For", who),
        _field("Action", mrkdwn(pv.action, 500)),
        _field("Target", mrkdwn(pv.target, 1000)),
        _field("Duration", mrkdwn(render.bg_duration(pv), 400)),
        _field("Incident", mrkdwn(pv.incident, 200) if pv.incident else "none given"),
        _field("Policies", escape(", ".join(pv.policies)) or "default"),
    ]
    blocks = [
        _section(f":rotating_light: *{render.BG_WARNING}.* {render.BG_AT_ONCE}"),
        {"type": "section", "fields": fields},
        _section("*Reason*\n" + mrkdwn(pv.reason, TEXT_LIMIT - 20)),
    ]
    if pv.note:
        blocks.append(_section(f":scissors: *Duration {mrkdwn(pv.note, 500)}.*"))
    blocks.append(_context(f"{render.bg_confirm_notice(review_s, place='channel')} End it early with `/jit revoke <id>`."))
    return {
        "type": "modal",
        "callback_id": CONFIRM_VIEW,
        "private_metadata": private_metadata,
        "title": _plain("Break glass", 24),
        "submit": _plain("Confirm", 24),
        "close": _plain("Cancel", 24),
        "blocks": blocks,
    }


def granted_text(req: Request, note: str | None, token: str | None) -> str:
    """The engineer's answer after the grant; with the token when it was for themself (shown once)."""
    p = req.proposal
    lines = [f":rotating_light: Break-glass granted: `{escape(req.id)}`, *{mrkdwn(p.action, 64)}* on "
             f"{mrkdwn(p.target, 200)} for {render.fmt_duration(req.approved_duration_s)}"
             + (f" ({mrkdwn(note, 300)})" if note else "") + "."]
    if token is None:
        lines.append(f"Agent {mrkdwn(req.agent, 100)} may now collect its token through the API "
                     f"(until {_local(req.deadline)}).")
    else:
        lines.append(f"Your token, ends {_local(req.grant_exp)}. {render.BG_SHOWN_ONCE}:")
        lines.append("```" + token + "```")  # a JWT: base64url and dots only, nothing to escape
    lines.append(f"{render.bg_review_due(req, when=_local)} End it early with `/jit revoke {escape(req.id)}`.")
    return "\n".join(lines)


# ---------------------------------------------------------------------- the security channel
def _local(ts: float | None) -> str:
    """An instant each reader sees in their own time zone (UTC where Slack cannot)."""
    return date(ts, render.fmt_time(ts))


def security_text(req: Request) -> str:
    """The notification text of the security-channel alert."""
    return mrkdwn(render.bg_summary(req), TEXT_LIMIT)


def review_line(req: Request, *, suspended: bool) -> str:
    """The post-incident review as it stands (mrkdwn, escaped)."""
    if req.reviewed_by:
        return f":white_check_mark: *Reviewed by {mrkdwn(req.reviewed_by, 100)}:* {mrkdwn(req.review_comment, 1200)}"
    due = date(req.review_due, render.fmt_time(req.review_due))
    if suspended:
        return f":no_entry: *Review overdue* (was due {due}): {mrkdwn(render.bg_suspended(req), 300)}."
    return f":hourglass_flowing_sand: *Review open*: the security group must acknowledge it by {due}."


def security_blocks(req: Request, *, suspended: bool) -> list[dict]:
    """The security-channel alert: who, what, why, until when, incident; the review and its button."""
    p = req.proposal
    fields = [
        _field("Engineer", mrkdwn(req.engineer, 200)),
        _field("For", mrkdwn(render.bg_subject(req), 300)),
        _field("Action", mrkdwn(p.action, 500)),
        _field("Target", mrkdwn(p.target, 1000)),
        _field("Duration", render.fmt_duration(req.approved_duration_s)),
        _field("Until", render.bg_until(req, when=_local)),
        _field("Incident", mrkdwn(req.incident, 200) if req.incident else "none given"),
    ]
    blocks: list[dict] = [
        {"type": "header", "text": _plain(render.bg_headline(req), 150)},
        {"type": "section", "fields": fields},
        _section("*Reason*\n" + mrkdwn(p.justification, TEXT_LIMIT - 20)),
        _context(f"*Policy:* {escape(', '.join(req.decision.get('policies') or []) or 'default')} · "
                 f"*Request* `{escape(req.id)}` · approval bypassed"),
        {"type": "divider"},
        _section(f"*Grant:* {mrkdwn(render.bg_grant_line(req), 1500)}"),
        _section(review_line(req, suspended=suspended)),
    ]
    if not req.reviewed_by:
        blocks.append({"type": "actions", "block_id": "jit_bg_review", "elements": [
            {"type": "button", "action_id": REVIEW, "style": "primary", "value": req.id,
             "text": _plain("Acknowledge review")}]})
    return blocks


def event_line(req: Request, event: str) -> str | None:
    """A thread reply under the security alert for a change of the grant, or None."""
    sentence = render.bg_event_sentence(req, event)
    return f"{EVENT_ICON[event]} {mrkdwn(sentence, 1600)}" if sentence else None


def review_modal(req: Request) -> dict:
    """Asks the reviewer for a (required) comment; ``private_metadata`` is only the request id."""
    p = req.proposal
    return {
        "type": "modal",
        "callback_id": REVIEW_VIEW,
        "private_metadata": req.id,
        "title": _plain("Break-glass review", 24),
        "submit": _plain("Acknowledge", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            _section(f"Acknowledge the review of *{mrkdwn(req.engineer, 100)}*'s break-glass for "
                     f"{mrkdwn(render.bg_subject(req), 200)}: *{mrkdwn(p.action, 100)}* on *{mrkdwn(p.target, 400)}*.\n"
                     f"*Reason given:* {mrkdwn(p.justification, 1500)}"),
            {
                "type": "input",
                "block_id": COMMENT_BLOCK,
                "label": _plain("Review comment", 2000),
                "element": {"type": "plain_text_input", "action_id": COMMENT_INPUT, "multiline": True,
                            "max_length": COMMENT_MAX,
                            "placeholder": _plain("e.g. justified by INC-7; runbook updated", 150)},
            },
        ],
    }


def reviews_text(reqs: list[Request], *, now: float, everyone: bool, limit: int) -> str:
    """``/jit reviews``: the open break-glass reviews, oldest deadline first."""
    if not reqs:
        return f":sparkles: {render.bg_reviews_heading(everyone)}"
    head = f"*{render.bg_reviews_heading(everyone, count=len(reqs))}*"
    lines = [f"{head} ({len(reqs)}{'+' if len(reqs) >= limit else ''}):"]
    for r in reqs:
        p = r.proposal
        late = " :warning: *overdue*" if r.review_due is not None and r.review_due <= now else ""
        lines.append(f"• `{escape(r.id)}` {mrkdwn(r.engineer, 100)} for {mrkdwn(render.bg_subject(r), 120)}: "
                     f"*{mrkdwn(p.action, 64)}* on {mrkdwn(p.target, 200)}; reason: {mrkdwn(p.justification, 200)}; "
                     f"due {date(r.review_due, render.fmt_time(r.review_due))}{late}")
    return "\n".join(lines)

