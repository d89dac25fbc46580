"""Block Kit as an HTML page that looks like a Slack message, for the README's picture.

Deterministic and offline: it takes the blocks exactly as the desk sent them to Slack (the
stand-in's record of ``chat.postMessage``) and draws them the way Slack's desktop client
does — header, sections with fields, context, dividers, buttons and selects — with Slack's
mrkdwn turned into HTML: ``*bold*``, ``_italic_``, ``~strike~``, ```code```, fenced blocks,
``<url|label>`` links, bare URLs (Slack links them), mentions, and ``<!date^…|fallback>``
as its fallback text. Agent text arrives already escaped (``&amp;``, ``&lt;``, ``&gt;``), so
it stays text here too. Emoji short codes become small badges (no emoji font is needed).

Only what the desk's messages use is drawn; anything else is shown as ``[type]`` so a new
kind of block cannot silently vanish from the picture.
"""

from __future__ import annotations

import html
import re

# Short code → (glyph from DejaVu Sans, badge colour).
EMOJI = {
    "hourglass_flowing_sand": ("◷", "#e8a317"), "white_check_mark": ("✔", "#2eb67d"),
    "ballot_box_with_check": ("☑", "#1264a3"), "x": ("✘", "#e01e5a"), "no_entry": ("⊘", "#e01e5a"),
    "alarm_clock": ("◷", "#616061"), "key": ("⚷", "#e8a317"), "checkered_flag": ("⚑", "#1d1c1d"),
    "leftwards_arrow_with_hook": ("↩", "#616061"), "warning": ("⚠", "#e8a317"),
}

_FENCE = re.compile(r"```(.*?)```", re.S)
_CODE = re.compile(r"`([^`\n]+)`")
_ANGLE = re.compile(r"<([^<>\n]*)>")
# Slack links bare URLs; one ends at white space, a markup character or an escaped < or >.
_URL = re.compile(r"https?://(?:(?!&gt;|&lt;)[^\s<>`|])+")
_EMOJI = re.compile(r":([a-z0-9_+-]+):")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")
_SLOT = re.compile("\x00(\\d+)\x00")


def _text(s: str) -> str:
    """Already-escaped mrkdwn text as HTML text: keep Slack's entities, escape anything else."""
    return html.escape(html.unescape(s), quote=False)


def _href(url: str) -> str:
    return html.escape(html.unescape(url), quote=True)


def emoji(name: str) -> str:
    glyph, colour = EMOJI.get(name, (None, None))
    if glyph is None:
        return f":{html.escape(name)}:"
    return f'<span class="emoji" style="background:{colour}" title=":{html.escape(name)}:">{glyph}</span>'


def mrkdwn(source: str) -> str:
    """Slack mrkdwn (as the desk sends it) → HTML."""
    out = []
    pos = 0
    for m in _FENCE.finditer(source):
        out.append(_inline(source[pos:m.start()]))
        out.append(f"<pre>{_text(m.group(1))}</pre>")
        pos = m.end()
    out.append(_inline(source[pos:]))
    return "".join(out)


def _inline(source: str) -> str:
    slots: list[str] = []

    def keep(fragment: str) -> str:
        slots.append(fragment)
        return f"\x00{len(slots) - 1}\x00"

    s = _CODE.sub(lambda m: keep(f"<code>{_text(m.group(1))}</code>"), source)
    s = _ANGLE.sub(lambda m: keep(_angle(m.group(1))), s)
    s = _URL.sub(lambda m: keep(f'<a href="{_href(m.group(0))}">{_text(m.group(0))}</a>'), s)
    s = _EMOJI.sub(lambda m: keep(emoji(m.group(1))) if m.group(1) in EMOJI else m.group(0), s)
    s = _text(s)
    s = _BOLD.sub(r"<b>\1</b>", s)
    s = _ITALIC.sub(r"<i>\1</i>", s)
    s = _STRIKE.sub(r"<s>\1</s>", s)
    s = s.replace("\n", "<br>")
    while _SLOT.search(s):
        s = _SLOT.sub(lambda m: slots[int(m.group(1))], s)
    return s


def _angle(inner: str) -> str:
    """One ``<…>`` control sequence: a link, a mention, a date."""
    target, _, label = inner.partition("|")
    if target.startswith("!date^"):
        return _text(label)
    if target.startswith("@"):
        return f'<span class="mention">@{_text(label or target[1:])}</span>'
    if target.startswith("#"):
        return f'<span class="mention">#{_text(label or target[1:])}</span>'
    if target.startswith("!subteam^"):
        return f'<span class="mention">@{_text(label or target[len("!subteam^"):])}</span>'
    if target.startswith("!"):
        return f'<span class="mention">@{_text(label or target[1:])}</span>'
    return f'<a href="{_href(target)}">{_text(label or target)}</a>'


def text_object(obj: dict) -> str:
    """A ``mrkdwn`` or ``plain_text`` object as HTML."""
    if obj.get("type") == "mrkdwn":
        return mrkdwn(obj.get("text", ""))
    plain = html.escape(obj.get("text", ""), quote=False)
    if obj.get("emoji", True):
        plain = _EMOJI.sub(lambda m: emoji(m.group(1)) if m.group(1) in EMOJI else m.group(0), plain)
    return plain


def _element(el: dict) -> str:
    kind = el.get("type")
    if kind == "button":
        style = el.get("style", "")
        return f'<span class="button {html.escape(style)}">{text_object(el["text"])}</span>'
    if kind == "static_select":
        return f'<span class="button select">{text_object(el["placeholder"])}<span class="chevron">⌄</span></span>'
    if kind in ("mrkdwn", "plain_text"):
        return f"<span>{text_object(el)}</span>"
    return f'<span class="unknown">[{html.escape(str(kind))}]</span>'


def block(b: dict) -> str:
    """One block as HTML."""
    kind = b.get("type")
    if kind == "header":
        return f'<div class="header">{text_object(b["text"])}</div>'
    if kind == "section":
        parts = []
        if "text" in b:
            parts.append(f'<div class="text">{text_object(b["text"])}</div>')
        if b.get("fields"):
            cells = "".join(f'<div class="field">{text_object(f)}</div>' for f in b["fields"])
            parts.append(f'<div class="fields">{cells}</div>')
        return f'<div class="section">{"".join(parts)}</div>'
    if kind == "context":
        return f'<div class="context">{"".join(_element(e) for e in b.get("elements", []))}</div>'
    if kind == "divider":
        return '<hr class="divider">'
    if kind == "actions":
        return f'<div class="actions">{"".join(_element(e) for e in b.get("elements", []))}</div>'
    return f'<div class="unknown">[{html.escape(str(kind))}]</div>'


CSS = """
* { box-sizing: border-box; }
body { margin: 0; background: #f8f8f8; font: 15px/1.46668 "Lato", "Liberation Sans", "DejaVu Sans", sans-serif;
       color: #1d1c1d; }
.window { width: 860px; margin: 0; background: #fff; border: 1px solid #dddddd; }
.bar { padding: 12px 20px; border-bottom: 1px solid #dddddd; font-weight: 900; font-size: 18px; }
.bar small { font-weight: 400; color: #616061; font-size: 13px; margin-left: 8px; }
.msg { display: flex; gap: 8px; padding: 12px 20px 16px; }
.avatar { flex: 0 0 36px; height: 36px; border-radius: 6px; background: #1d3557; color: #fff; font-weight: 900;
          display: flex; align-items: center; justify-content: center; font-size: 14px; }
.content { flex: 1; min-width: 0; }
.meta { margin-bottom: 2px; }
.meta b { font-weight: 900; }
.meta .app { font-size: 10px; font-weight: 700; color: #616061; background: rgba(29,28,29,.08); border-radius: 2px;
             padding: 1px 3px; margin-left: 4px; vertical-align: 1px; }
.meta .time { color: #616061; font-size: 12px; margin-left: 6px; }
.header { font-size: 18px; font-weight: 900; margin: 4px 0 6px; }
.section { margin: 6px 0; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 8px 16px; margin-top: 4px; max-width: 620px; }
.context { font-size: 12px; color: #616061; margin: 6px 0; }
.divider { border: 0; border-top: 1px solid #dddddd; margin: 10px 0; }
.actions { display: flex; flex-wrap: wrap; gap: 8px; margin: 10px 0 2px; }
.button { display: inline-flex; align-items: center; height: 28px; padding: 0 12px; border: 1px solid rgba(29,28,29,.3);
          border-radius: 4px; font-size: 13px; font-weight: 700; background: #fff; }
.button.primary { background: #007a5a; border-color: #007a5a; color: #fff; }
.button.danger { color: #e01e5a; }
.button.select { font-weight: 400; color: #616061; min-width: 200px; justify-content: space-between; }
.chevron { margin-left: 10px; color: #1d1c1d; }
code { font: 12px "DejaVu Sans Mono", monospace; color: #e01e5a; background: rgba(29,28,29,.04);
       border: 1px solid rgba(29,28,29,.13); border-radius: 3px; padding: 1px 3px; }
pre { font: 12px/1.5 "DejaVu Sans Mono", monospace; background: rgba(29,28,29,.04); border: 1px solid rgba(29,28,29,.13);
      border-radius: 4px; padding: 8px; margin: 4px 0; white-space: pre-wrap; }
a { color: #1264a3; text-decoration: none; }
.mention { color: #1264a3; background: rgba(29,155,209,.1); border-radius: 3px; padding: 0 2px; }
.emoji { display: inline-flex; width: 18px; height: 18px; border-radius: 4px; color: #fff; font-size: 12px;
         align-items: center; justify-content: center; vertical-align: -3px; font-family: "DejaVu Sans", sans-serif; }
.unknown { color: #e01e5a; }
"""


def message_page(blocks: list[dict], *, channel: str, app: str = "jitgate", posted: str = "") -> str:
    """A whole HTML page showing one message with ``blocks`` in ``channel``, posted by ``app``."""
    body = "".join(block(b) for b in blocks)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(app)} in {html.escape(channel)}</title><style>{CSS}</style></head><body>"
        f'<div class="window"><div class="bar">{html.escape(channel)}<small>Slack (drawn from the blocks jitgate '
        "sent)</small></div>"
        f'<div class="msg"><div class="avatar">jg</div><div class="content">'
        f'<div class="meta"><b>{html.escape(app)}</b><span class="app">APP</span>'
        f'<span class="time">{html.escape(posted)}</span></div>'
        f"{body}</div></div></div></body></html>"
    )
