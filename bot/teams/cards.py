"""Adaptive Cards for Teams: the proposal card, short notices, and invoke responses.

Pure functions of the request as it is now, so every re-render shows the whole truth and
a repeated update is harmless. Universal Actions (schema 1.5): ``Action.Execute`` with the
verbs ``approve`` / ``approve_for`` / ``deny``, whose data carries only the request id;
``refresh`` lists the approvers' Teams user ids so their clients fetch the current card.

Untrusted text (everything an agent wrote, and approvers' free text) is only ever put in
a ``TextRun`` of a ``RichTextBlock``: Teams renders those as plain text, with no markdown.
It is also stripped of control characters, defused of Adaptive Cards' ``{{DATE()}}``
functions and length-capped here, in one place. Links are shown as the URL itself.
``TextBlock`` (which interprets markdown) only carries jitgate's own words.
"""

from __future__ import annotations

import time
import unicodedata

import orjson

from broker.model import ACTIVE, APPROVED, CANCELLED, COMPLETED, DENIED, EXPIRED, PENDING, REVOKED, Request

from bot import render

CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
ERROR_TYPE = "application/vnd.microsoft.error"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
VERSION = "1.5"

APPROVE, APPROVE_FOR, DENY, REFRESH = "approve", "approve_for", "deny", "refresh"
VERBS = frozenset({APPROVE, APPROVE_FOR, DENY, REFRESH})
DURATION_INPUT, REASON_INPUT = "duration_s", "reason"

EVIDENCE_SHOWN = 3          # items visible at once; the rest behind a toggle
MAX_REFRESH_USERS = 60      # Teams refreshes automatically for at most 60 users
MAX_CARD_BYTES = 24_000     # Teams refuses messages over ~28 KB; stay well below
CAP_NAME, CAP_JUSTIFICATION, CAP_TITLE, CAP_URL, CAP_EXCERPT, CAP_NOTICE = 200, 1500, 200, 500, 400, 1200
CAP_DELEGATION = 1500      # a few links of who let whom do what
CAP_ARGUMENTS = 2200       # the proposal's arguments (at most 2048 bytes of compact JSON)
REASON_MAX = 500            # the lifecycle's cap on a denial reason

STATUS_STYLE = {
    PENDING: ("warning", "Pending"), APPROVED: ("good", "Approved"), ACTIVE: ("good", "Active"),
    DENIED: ("attention", "Denied"), EXPIRED: ("attention", "Expired"), REVOKED: ("attention", "Revoked"),
    CANCELLED: ("default", "Withdrawn"), COMPLETED: ("default", "Completed"),
}
_KEEP = {"\n", "\t"}


def plain(text: object, cap: int) -> str:
    """Untrusted text made safe for a TextRun: no control or invisible format characters,
    no Adaptive Card date functions, at most ``cap`` characters."""
    s = "".join(ch for ch in str(text if text is not None else "")
                if ch in _KEEP or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"))
    s = s.replace("{{", "{\u200b{")  # TextBlock/TextRun would evaluate {{DATE(...)}} / {{TIME(...)}}
    return s if len(s) <= cap else s[: max(0, cap - 1)] + "…"


def run(text: object, cap: int = CAP_NOTICE, **style) -> dict:
    return {"type": "TextRun", "text": plain(text, cap), **style}


def rich(*runs: dict, **extra) -> dict:
    return {"type": "RichTextBlock", "inlines": list(runs), **extra}


def field(label: str, value: object, cap: int = CAP_NAME) -> dict:
    return rich(run(f"{label}: ", weight="Bolder"), run(value, cap))


def card(body: list[dict], actions: list[dict] | None = None, **extra) -> dict:
    c: dict = {"type": "AdaptiveCard", "$schema": SCHEMA, "version": VERSION, "body": body, "msteams": {"width": "Full"}}
    if actions:
        c["actions"] = actions
    c.update(extra)
    return c


# ---------------------------------------------------------------------------- proposal card
def proposal_card(req: Request, *, max_duration_s: int, refresh_user_ids: list[str] = (), actions: bool = True,
                  notice: str | None = None, refresh: bool = True) -> dict:
    """The proposal as it should look now. ``actions`` False (or a closed request) shows no
    buttons; ``notice`` is a line for one viewer (invoke responses are per user)."""
    p = req.proposal
    style, word = STATUS_STYLE.get(req.status, ("default", req.status.capitalize()))
    body: list[dict] = [{
        "type": "Container", "style": style, "bleed": True, "items": [
            rich(run(f"Access request: {p.action} on {p.target}", 300, size="Medium", weight="Bolder")),
            rich(run(f"{word}: ", weight="Bolder"), run(render.status_line(req), 600)),
        ]}]
    if notice:
        body.append(rich(run(notice, 600, color="Accent", italic=True)))
    facts = [
        field("Agent", req.agent), field("Owner", req.owner or "unknown"),
        field("Action", p.action), field("Target", p.target),
        field("Duration requested", render.fmt_duration(p.duration_s)),
        field("Confidence", render.fmt_confidence(p.confidence)),
    ]
    for label, value in (("Tool", p.tool), ("Dataset", p.dataset), ("Ticket", p.ticket)):
        if value:
            facts.append(field(label, value))
    arguments = render.arguments_text(req)
    if arguments is not None:
        facts.append(field("Arguments", arguments, CAP_ARGUMENTS))
    links = render.delegation_links(req)
    if links:
        chain = "\n".join(f"{i}. {link}" for i, link in enumerate(links, 1))
        facts.append(rich(run("Delegation chain (verified, root first):", weight="Bolder")))
        facts.append(rich(run(chain, CAP_DELEGATION)))
    excluded = render.excluded_line(req)
    if excluded:
        facts.append(rich(run(excluded, CAP_DELEGATION, color="Attention")))
    if req.break_glass:
        facts.append(field("Break-glass", f"by {req.engineer or 'unknown'}" + (f", incident {req.incident}" if req.incident else "")))
    body += linked_items(req)
    body.append({"type": "Container", "spacing": "Medium", "items": facts})
    if req.deadline is not None:
        body.append(_deadline(req))
    body.append(rich(run("Justification", weight="Bolder"), spacing="Medium"))
    body.append(rich(run(p.justification, CAP_JUSTIFICATION)))
    again = render.asked_again_line(req)
    if again:
        body.append(rich(run(again, CAP_JUSTIFICATION, color="Attention")))
    body += _evidence(req)
    body += history_items(req)
    body.append(rich(run("Policy: ", weight="Bolder"), run(render.verdict(req), 600), spacing="Medium"))
    links = render.outcome_links(req)
    if links:  # the completion outcome's evidence, shown as sent (issue 18, item 6)
        body.append(rich(run("Outcome evidence", weight="Bolder"), spacing="Medium"))
        body.extend(rich(run(url, CAP_URL, color="Accent")) for url in links)
    body.append(rich(run("\n".join(render.timeline(req)), 2000, size="Small", isSubtle=True)))
    body.append(rich(run(f"Request {req.id} · proposal sha256 {req.proposal_sha256[:16]}", 200, size="Small",
                         isSubtle=True)))
    acts = _actions(req, max_duration_s) if actions and req.status == PENDING else None
    extra = {}
    if refresh and req.status == PENDING:
        extra["refresh"] = {"action": {"type": "Action.Execute", "verb": REFRESH, "title": "Refresh",
                                       "data": {"request_id": req.id}},
                            "userIds": list(dict.fromkeys(refresh_user_ids))[:MAX_REFRESH_USERS]}
    out = card(body, acts, **extra)
    if len(orjson.dumps(out)) > MAX_CARD_BYTES:
        out = _shrink(out)
    return out


def _deadline(req: Request) -> dict:
    # DATE()/TIME() want RFC 3339 without fractions; they show the viewer's local time.
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(req.deadline))
    lead = "Decide by" if req.status == PENDING else "Was due"
    # Only jitgate's own words in a TextBlock.
    return {"type": "TextBlock", "wrap": True, "spacing": "Small",
            "text": f"{lead} {{{{DATE({when}, SHORT)}}}} {{{{TIME({when})}}}} ({render.fmt_time(req.deadline)})"}


def _evidence(req: Request) -> list[dict]:
    items = req.proposal.evidence
    head = rich(run(f"Evidence ({len(items)})" if items else "No evidence attached.", weight="Bolder"), spacing="Medium")
    if not items:
        return [head]
    shown = [_evidence_item(e) for e in items[:EVIDENCE_SHOWN]]
    out = [head, *shown]
    rest = items[EVIDENCE_SHOWN:]
    if rest:
        hidden_id = f"more-evidence-{req.id}"
        out.append({"type": "Container", "id": hidden_id, "isVisible": False,
                    "items": [_evidence_item(e) for e in rest]})
        out.append({"type": "ActionSet", "actions": [{
            "type": "Action.ToggleVisibility", "title": f"Show or hide {len(rest)} more",
            "targetElements": [hidden_id]}]})
    return out


def _evidence_item(e) -> dict:
    items = [rich(run(f"[{e.kind}] ", 40, weight="Bolder"), run(e.title, CAP_TITLE))]
    if e.url:
        url = run(e.url, CAP_URL, color="Accent")
        if len(e.url) <= CAP_URL:  # clickable only when the whole target is on show
            url["selectAction"] = {"type": "Action.OpenUrl", "url": e.url}
        items.append(rich(url))
    if e.excerpt:
        items.append(rich(run(e.excerpt, CAP_EXCERPT, fontType="Monospace", size="Small")))
    return {"type": "Container", "spacing": "Small", "separator": True, "items": items}


def _actions(req: Request, max_duration_s: int) -> list[dict]:
    data = {"request_id": req.id}
    acts: list[dict] = [{"type": "Action.Execute", "title": "Approve", "verb": APPROVE, "data": data, "style": "positive"}]
    shorter = render.shorter_durations(req, max_duration_s)
    if shorter:
        acts.append({"type": "Action.ShowCard", "title": "Approve for less time", "card": {
            "type": "AdaptiveCard", "version": VERSION,
            "body": [{"type": "Input.ChoiceSet", "id": DURATION_INPUT, "label": "Grant access for", "isRequired": True,
                      "errorMessage": "Choose a duration", "value": str(shorter[-1]),
                      "choices": [{"title": render.fmt_duration(d), "value": str(d)} for d in shorter]}],
            "actions": [{"type": "Action.Execute", "title": "Approve for this long", "verb": APPROVE_FOR,
                         "data": data, "style": "positive"}]}})
    acts.append({"type": "Action.ShowCard", "title": "Deny", "card": {
        "type": "AdaptiveCard", "version": VERSION,
        "body": [{"type": "Input.Text", "id": REASON_INPUT, "label": "Reason (the agent and its owner see it)",
                  "isMultiline": True, "isRequired": True, "maxLength": REASON_MAX,
                  "errorMessage": "A reason is required to deny"}],
        "actions": [{"type": "Action.Execute", "title": "Deny", "verb": DENY, "data": data, "style": "destructive"}]}})
    return acts


def _shrink(c: dict) -> dict:
    """Over the size budget (long excerpts everywhere): drop the collapsed evidence, then
    every excerpt. The full proposal stays available through ``status`` and the CLI."""
    body = c["body"]
    for i, el in enumerate(body):
        if el.get("type") == "Container" and str(el.get("id", "")).startswith("more-evidence-"):
            body[i] = rich(run("More evidence is attached than fits in a Teams card; see `status <id>` or "
                               "`jitgate requests show <id>`.", isSubtle=True))
            body[i + 1] = {"type": "TextBlock", "text": " ", "spacing": "None"}
            break
    if len(orjson.dumps(c)) > MAX_CARD_BYTES:
        for el in body:
            if el.get("type") == "Container":
                el["items"] = [it for it in el.get("items", [])
                               if not (it.get("type") == "RichTextBlock" and any(r.get("fontType") == "Monospace"
                                                                                 for r in it.get("inlines", [])))]
    return c


# ---------------------------------------------------------------------------- notices
def mention(display: str, user_id: str) -> tuple[str, dict]:
    """The ``<at>…</at>`` text and entity that @mention a Teams user (Entra object id or 29: id)."""
    name = plain(display, 100).replace("<", "").replace(">", "")
    tag = f"<at>{name}</at>"
    return tag, {"type": "mention", "text": tag, "mentioned": {"id": user_id, "name": name}}


def notice_card(text: str, *, mentions: list[tuple[str, str]] = (), heading: str | None = None,
                lines: list[str] = ()) -> dict:
    """A short message: plain text only, plus @mentions of the given (name, user id) pairs."""
    body: list[dict] = []
    if heading:
        body.append(rich(run(heading, 200, weight="Bolder")))
    body.append(rich(run(text, CAP_NOTICE)))
    for line in lines:
        body.append(rich(run(line, CAP_NOTICE)))
    extra = {}
    if mentions:
        tags, entities = zip(*(mention(n, u) for n, u in mentions))
        body.append({"type": "TextBlock", "wrap": True, "text": " ".join(tags)})
        extra["msteams"] = {"width": "Full", "entities": list(entities)}
    return card(body, **extra)


# ---------------------------------------------------------------------------- invoke responses
def card_response(c: dict) -> dict:
    """An ``adaptiveCard/action`` answer that replaces the card for the person who acted."""
    return {"statusCode": 200, "type": CONTENT_TYPE, "value": c}


def error_response(status: int, code: str, message: str) -> dict:
    """An ``adaptiveCard/action`` answer saying the action was refused (shown to that person)."""
    return {"statusCode": status, "type": ERROR_TYPE, "value": {"code": code, "message": plain(message, 500)}}


def linked_items(req: Request) -> list[dict]:
    """The link to a recent denial (alternate paths, issue 19), loud, above the facts."""
    line = render.linked_line(req)
    return [rich(run(line, CAP_JUSTIFICATION, weight="Bolder", color="Attention"), spacing="Medium")] if line else []


def history_items(req: Request) -> list[dict]:
    """The agent's recent history next to the proposal (issue 19, item 5)."""
    lines = render.history_lines(req)
    if not lines:
        return []
    return [rich(run("Agent history", weight="Bolder"), spacing="Medium"),
            rich(run("\n".join(lines), CAP_JUSTIFICATION))]
