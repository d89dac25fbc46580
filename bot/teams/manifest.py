"""The Teams app manifest and its two icons, generated so they cannot drift from the bot.

The command list comes from :data:`bot.teams.commands.COMMANDS`; the icons are drawn with
the standard library only (zlib + struct): ``color.png`` 192x192, a white keyhole on
jitgate's accent colour, and ``outline.png`` 32x32, the white keyhole on transparency (Teams'
rule for outline icons). ``manifests/teams/`` holds a copy with placeholders
(``python -m bot.teams.manifest manifests/teams``); ``jitgate teams package`` writes the app
package (a zip) with your app id and domain filled in.
"""

from __future__ import annotations

import functools
import io
import json
import re
import struct
import sys
import zipfile
import zlib
from pathlib import Path

from .commands import COMMANDS

SCHEMA_VERSION = "1.17"
PLACEHOLDER_APP_ID = "00000000-0000-0000-0000-000000000000"
PLACEHOLDER_DOMAIN = "jitgate.example.com"
ACCENT = "#1F6FEB"
SCOPES = ["team", "groupChat", "personal"]
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def manifest(app_id: str = PLACEHOLDER_APP_ID, domain: str = PLACEHOLDER_DOMAIN, version: str = "0.1.0") -> dict:
    """The manifest for a bot in team, group chat and personal scopes."""
    if not _GUID.match(app_id):
        raise ValueError(f"the app id must be the Azure Bot's Microsoft App ID (a GUID), got {app_id!r}")
    if not _DOMAIN.match(domain):
        raise ValueError(f"the domain must be a host name like jitgate.example.com, got {domain!r}")
    site = f"https://{domain}"
    return {
        "$schema": f"https://developer.microsoft.com/en-us/json-schemas/teams/v{SCHEMA_VERSION}/MicrosoftTeams.schema.json",
        "manifestVersion": SCHEMA_VERSION,
        "version": version,
        "id": app_id,
        "developer": {"name": "jitgate", "websiteUrl": site, "privacyUrl": f"{site}/", "termsOfUseUrl": f"{site}/"},
        "name": {"short": "jitgate", "full": "jitgate: just-in-time access approvals for AI agents"},
        "description": {
            "short": "Approve or deny AI agents' requests for higher-risk access",
            "full": ("jitgate asks people before an AI agent gets a higher-risk permission. Each proposal arrives as a "
                     "card with the agent's justification, evidence and the policy's verdict; approvers approve "
                     "(optionally for less time) or deny with a reason, and the card updates in place for everyone. "
                     "Commands list what waits for you, show a request, revoke a grant early and set the risk "
                     "posture; on-call engineers can break glass for an emergency (confirmed on a card, announced "
                     "to security, reviewed afterwards)."),
        },
        "icons": {"color": "color.png", "outline": "outline.png"},
        "accentColor": ACCENT,
        "bots": [{
            "botId": app_id,
            "scopes": SCOPES,
            "supportsFiles": False,
            "isNotificationOnly": False,
            "commandLists": [{"scopes": SCOPES, "commands": [
                {"title": c.name, "description": _clip(f"{c.usage}: {c.summary}", 128)} for c in COMMANDS.values()][:10]}],
        }],
        "permissions": ["identity", "messageTeamMembers"],
        "validDomains": [domain],
    }


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word with an ellipsis (Teams' limit on a command description)."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"


# ---------------------------------------------------------------------------- icons
_SAMPLES = 4  # per axis, for anti-aliased edges


def _keyhole(x: float, y: float) -> bool:
    """A keyhole in the unit square: a round head and a widening stem."""
    if (x - 0.5) ** 2 + (y - 0.38) ** 2 <= 0.165 ** 2:
        return True
    if 0.42 <= y <= 0.80:
        return abs(x - 0.5) <= 0.055 + 0.065 * (y - 0.42) / 0.38
    return False


def _coverage(size: int, px: int, py: int) -> float:
    hits = sum(_keyhole((px + (sx + 0.5) / _SAMPLES) / size, (py + (sy + 0.5) / _SAMPLES) / size)
               for sy in range(_SAMPLES) for sx in range(_SAMPLES))
    return hits / _SAMPLES ** 2


def _png(rows: list[list[tuple[int, int, int, int]]]) -> bytes:
    """An 8-bit RGBA PNG."""
    height, width = len(rows), len(rows[0])
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


@functools.lru_cache(maxsize=4)
def color_icon(size: int = 192) -> bytes:
    """Full colour, full bleed (Teams rounds the corners itself)."""
    accent = tuple(int(ACCENT[i:i + 2], 16) for i in (1, 3, 5))
    rows = []
    for py in range(size):
        row = []
        for px in range(size):
            f = _coverage(size, px, py)
            row.append((*(round(accent[i] * (1 - f) + 255 * f) for i in range(3)), 255))
        rows.append(row)
    return _png(rows)


@functools.lru_cache(maxsize=4)
def outline_icon(size: int = 32) -> bytes:
    """White on transparent only."""
    return _png([[(255, 255, 255, round(255 * _coverage(size, px, py))) for px in range(size)] for py in range(size)])


# ---------------------------------------------------------------------------- files
def write_folder(folder: Path, app_id: str = PLACEHOLDER_APP_ID, domain: str = PLACEHOLDER_DOMAIN) -> None:
    """manifest.json, color.png and outline.png into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest(app_id, domain), indent=2) + "\n")
    (folder / "color.png").write_bytes(color_icon())
    (folder / "outline.png").write_bytes(outline_icon())


def package(app_id: str, domain: str, version: str = "0.1.0") -> bytes:
    """The app package to upload to Teams: a zip with the manifest and the icons at its root."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest(app_id, domain, version), indent=2))
        z.writestr("color.png", color_icon())
        z.writestr("outline.png", outline_icon())
    return buf.getvalue()


if __name__ == "__main__":
    write_folder(Path(sys.argv[1] if len(sys.argv) > 1 else "manifests/teams"))
