"""Adaptive Cards of break-glass in Teams: the confirmation card, what the engineer is told
(and the one private message that carries a token for ``me``), the security conversation's
alert with its review action. The platform-neutral sentences (shared with Slack) are
``bot.render``'s ``bg_*``; this module only lays them out as cards.

Pure functions of what the core returned (a :class:`Preview`, a :class:`Request`), so a
re-render shows the whole truth and a repeated update is harmless. Everything the engineer
or a reviewer typed (reason, incident, comment) and every name goes through
:func:`bot.teams.cards.run` (a plain-text ``TextRun``, control characters removed,
``{{DATE()}}`` defused, capped); ``TextBlock`` carries only jitgate's own words.
"""

from __future__ import annotations

from broker.breakglass import ME, Preview
from broker.model import Request

from bot import render

from .cards import card, field, plain, rich, run

CONFIRM, CANCEL, REVIEW = "bg_confirm", "bg_cancel", "bg_review"
VERBS = frozenset({CONFIRM, CANCEL, REVIEW})
CONFIRMATION = "confirmation"  # the card data's only key on the confirmation card: a pointer
COMMENT_INPUT = "comment"
COMMENT_MAX = 500  # the core's cap on a review comment
TOKEN_CAP = 16_000  # a JWT; far above any token the broker mints


def _heading(text: str, style: str = "attention") -> dict:
    return {"type": "Container", "style": style, "bleed": True,
            "items": [rich(run(text, 300, size="Medium", weight="Bolder"))]}


def _small(text: str) -> dict:
    return rich(run(text, 1200, size="Small", isSubtle=True), spacing="Medium")


# ---------------------------------------------------------------------- the confirmation
def confirm_card(pv: Preview, engineer_id: str, nonce: str, *, review_s: int) -> dict:
    """What a confirmed command grants, exactly: the engineer confirms intent, not a typo.
    The actions' data is only ``nonce``, the pointer to jitgate's one-time record."""
    who = (f"you ({engineer_id}): the token is sent once to your personal chat with jitgate" if pv.subject == ME
           else f"agent {pv.subject}, which collects its token through the API")
    body = [
        _heading(render.BG_WARNING),
        rich(run(render.BG_AT_ONCE, 200), spacing="Small"),
        {"type": "Container", "spacing": "Medium", "items": [
            field("For", who, 300), field("Action", pv.action, 500), field("Target", pv.target, 1000),
            field("Duration", render.bg_duration(pv), 400), field("Incident", pv.incident or "none given", 200),
            field("Policies", ", ".join(pv.policies) or "default", 300),
        ]},
        rich(run("Reason", weight="Bolder"), spacing="Medium"),
        rich(run(pv.reason, 1500)),
    ]
    if pv.note:
        body.append(rich(run(f"Duration {pv.note}.", 500, weight="Bolder", color="Attention"), spacing="Medium"))
    body.append(_small(f"{render.bg_confirm_notice(review_s, place='conversation')} End it early with: revoke <id>. "
                       "Only you can confirm this card, once, within 10 minutes."))
    data = {CONFIRMATION: nonce}
    actions = [
        {"type": "Action.Execute", "title": "Confirm", "verb": CONFIRM, "data": data, "style": "destructive"},
        {"type": "Action.Execute", "title": "Cancel", "verb": CANCEL, "data": data},
    ]
    return card(body, actions)


def closed_confirm_card(text: str, *, lines: list[str] = (), good: bool = True) -> dict:
    """The confirmation card after Confirm or Cancel: what happened, no actions (no token ever)."""
    body = [_heading(text, "good" if good else "default")]
    body += [rich(run(line, 1200)) for line in lines]
    return card(body)


def granted_lines(req: Request, note: str | None, *, for_me: bool) -> list[str]:
    """What the engineer is told after the grant (plain; never the token)."""
    lines = [f"Break-glass granted: {req.id}, {render.bg_granted(req, note)}."]
    if for_me:
        lines.append(f"Your token ends at {render.fmt_time(req.grant_exp)}. It was sent once to your personal chat with "
                     "jitgate; jitgate does not keep it.")
    else:
        lines.append(f"Agent {req.agent} may now collect its token through the API (until {render.fmt_time(req.deadline)}).")
    lines.append(f"{render.bg_review_due(req)} End it early with: revoke {req.id}")
    return lines


def token_card(req: Request, note: str | None, token: str) -> dict:
    """The engineer's token, for their personal chat only: sent once, never stored or logged."""
    body = [
        _heading("Your break-glass token", "warning"),
        rich(run(f"{render.bg_granted(req, note)}; request {req.id}; ends at {render.fmt_time(req.grant_exp)}.", 800)),
        rich(run(f"{render.BG_SHOWN_ONCE}. Do not forward it.", 200, weight="Bolder")),
        # A JWT: base64url and dots only; a TextRun shows it as plain, selectable text.
        rich(run(token, TOKEN_CAP, fontType="Monospace", size="Small"), spacing="Medium"),
        _small(f"Security has been told. End it early with: revoke {req.id}"),
    ]
    return card(body)


# ---------------------------------------------------------------------- the security conversation
def security_summary(req: Request) -> str:
    """The notification preview of the security alert."""
    return plain(render.bg_summary(req), 200)


def review_line(req: Request, *, overdue: bool, suspended: bool) -> tuple[str, str]:
    """(colour, sentence) of the post-incident review as it stands."""
    if req.reviewed_by:
        return "Good", f"Reviewed by {req.reviewed_by}: {req.review_comment or ''}"
    due = render.fmt_time(req.review_due)
    if overdue and suspended:
        return "Attention", (f"Review overdue (was due {due}): {render.bg_suspended(req)} "
                             f"(breakglass-reinstate {req.engineer}).")
    if overdue:
        return "Attention", f"Review overdue (was due {due}); the security group may still acknowledge it."
    return "Warning", f"Review open: the security group must acknowledge it by {due}."


def security_card(req: Request, *, overdue: bool, suspended: bool, notice: str | None = None) -> dict:
    """The security alert: who, for whom, what, why, until when, incident; the review and its action."""
    p = req.proposal
    body: list[dict] = [_heading(render.bg_headline(req))]
    if notice:
        body.append(rich(run(notice, 600, color="Accent", italic=True)))
    body += [
        {"type": "Container", "spacing": "Medium", "items": [
            field("Engineer", req.engineer or "?"), field("For", render.bg_subject(req), 300),
            field("Action", p.action, 500), field("Target", p.target, 1000),
            field("Duration", render.fmt_duration(req.approved_duration_s)), field("Until", render.bg_until(req), 300),
            field("Incident", req.incident or "none given"),
        ]},
        rich(run("Reason", weight="Bolder"), spacing="Medium"),
        rich(run(p.justification, 1500)),
        rich(run("Grant: ", weight="Bolder"), run(render.bg_grant_line(req), 1500), spacing="Medium"),
    ]
    colour, sentence = review_line(req, overdue=overdue, suspended=suspended)
    body.append(rich(run(sentence, 1500, weight="Bolder", color=colour)))
    body.append(_small(f"Policy: {', '.join(req.decision.get('policies') or []) or 'default'} · request {req.id} · "
                       "approval bypassed"))
    actions = None
    if not req.reviewed_by:
        actions = [{"type": "Action.ShowCard", "title": "Acknowledge review", "card": {
            "type": "AdaptiveCard", "version": "1.5",
            "body": [{"type": "Input.Text", "id": COMMENT_INPUT, "label": "Review comment (required)",
                      "isMultiline": True, "isRequired": True, "maxLength": COMMENT_MAX,
                      "placeholder": "e.g. justified by INC-7; runbook updated",
                      "errorMessage": "A comment is required for the review"}],
            "actions": [{"type": "Action.Execute", "title": "Acknowledge", "verb": REVIEW,
                         "data": {"request_id": req.id}, "style": "positive"}]}}]
    return card(body, actions)


def reviews_answer(reqs: list[Request], *, now: float, everyone: bool, limit: int) -> tuple[str, tuple[str, ...]]:
    """``reviews``: the open break-glass reviews, oldest deadline first (text, lines)."""
    if not reqs:
        return render.bg_reviews_heading(everyone), ()
    head = render.bg_reviews_heading(everyone, count=len(reqs))
    lines = []
    for r in reqs:
        p = r.proposal
        late = " (OVERDUE)" if r.review_due is not None and r.review_due <= now else ""
        lines.append(f"{r.id}: {r.engineer} for {render.bg_subject(r)}: {p.action} on {p.target}; reason: "
                     f"{plain(p.justification, 200)}; due {render.fmt_time(r.review_due)}{late}")
    return f"{head} ({len(reqs)}{'+' if len(reqs) >= limit else ''}):", tuple(lines)
