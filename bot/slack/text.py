"""Slack mrkdwn for untrusted text: escaping and truncation, in one place.

Slack's mrkdwn has exactly three control characters, ``&``, ``<`` and ``>``; escaping
them makes ``<!channel>``, ``<!here>``, ``<@U…>`` mentions and ``<url|label>`` links
inert. Everything an agent wrote goes through :func:`mrkdwn` before it reaches a block;
links are shown as their bare (escaped) URL, which Slack displays as itself, never
behind a label the agent chose.
"""

from __future__ import annotations

import re

TEXT_LIMIT = 3000      # a section's or context element's text object
FIELD_LIMIT = 2000     # one of a section's fields
HEADER_LIMIT = 150     # a header block's plain_text
ELLIPSIS = "…"

_ENTITY_TAIL = re.compile(r"&[a-z]{0,3}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,30}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,30}$")
_USERGROUP_ID = re.compile(r"^S[A-Z0-9]{2,30}$")


def escape(text: str) -> str:
    """Escape exactly ``&``, ``<`` and ``>`` (Slack's mrkdwn control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Cut already-escaped ``text`` to at most ``limit`` characters, never inside an
    entity such as ``&amp;``, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - len(ELLIPSIS))]
    cut = _ENTITY_TAIL.sub("", cut)
    return cut + ELLIPSIS


def mrkdwn(text: object, limit: int = TEXT_LIMIT) -> str:
    """Untrusted text made inert and short enough for a text object of ``limit`` characters."""
    return clip(escape("" if text is None else str(text)), limit)


def code_block(text: object, limit: int) -> str:
    """Untrusted multi-line text as a preformatted block (its own fences cannot close ours)."""
    body = escape("" if text is None else str(text)).replace("```", "ˋˋˋ")
    return "```" + clip(body, max(1, limit - 6)) + "```"


def mention(user_id: str | None) -> str | None:
    """``<@U…>`` for a well-formed Slack user id from the approvers file, else None."""
    if user_id and _USER_ID.match(user_id):
        return f"<@{user_id}>"
    return None


def usergroup_mention(usergroup_id: str | None) -> str | None:
    """``<!subteam^S…>`` (notifies the user group's members) for a well-formed id, else None."""
    if usergroup_id and _USERGROUP_ID.match(usergroup_id):
        return f"<!subteam^{usergroup_id}>"
    return None


def channel_link(channel_id: str | None) -> str:
    """``<#C…>`` for a channel id Slack returned, else the escaped name."""
    if channel_id and _CHANNEL_ID.match(channel_id):
        return f"<#{channel_id}>"
    return escape(channel_id or "")


def date(ts: float | None, fallback: str) -> str:
    """A time each reader sees in their own time zone, with ``fallback`` where Slack cannot."""
    if ts is None:
        return escape(fallback)
    return f"<!date^{int(ts)}^{{date_short_pretty}} at {{time}}|{escape(fallback)}>"
