"""Requirement 8: the Teams app manifest and its two icons (and the package command)."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from broker.cli import main as jitgate
from bot.teams import manifest as m
from bot.teams.commands import COMMANDS

FOLDER = Path(__file__).resolve().parents[3] / "manifests" / "teams"
APP_ID = "12345678-1234-1234-1234-123456789abc"


def read_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    """(width, height, RGBA pixels) of an unfiltered 8-bit RGBA PNG as the generator writes them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert (depth, ctype) == (8, 6)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + 4 * width
    pixels = []
    for y in range(height):
        row = raw[y * stride + 1:(y + 1) * stride]
        pixels += [tuple(row[i:i + 4]) for i in range(0, len(row), 4)]
    return width, height, pixels


def test_checked_in_manifest_and_icons_are_the_generated_ones():
    """manifests/teams is what the generator writes (placeholders), so it cannot drift from the bot."""
    assert json.loads((FOLDER / "manifest.json").read_text()) == m.manifest()
    assert (FOLDER / "color.png").read_bytes() == m.color_icon()
    assert (FOLDER / "outline.png").read_bytes() == m.outline_icon()


def test_manifest_declares_the_bot_scopes_commands_and_domains():
    """A bot in team, group chat and personal scopes, with validDomains and the command list."""
    doc = m.manifest(APP_ID, "jit.acme.example")
    bot = doc["bots"][0]
    assert doc["id"] == bot["botId"] == APP_ID
    assert set(bot["scopes"]) == {"team", "groupChat", "personal"}
    assert doc["validDomains"] == ["jit.acme.example"]
    cmds = bot["commandLists"][0]["commands"]
    assert [c["title"] for c in cmds] == list(COMMANDS)
    assert all(len(c["title"]) <= 32 and len(c["description"]) <= 128 for c in cmds)
    assert len(doc["description"]["short"]) <= 80 and len(doc["description"]["full"]) <= 4000
    assert len(doc["name"]["short"]) <= 30
    assert doc["icons"] == {"color": "color.png", "outline": "outline.png"}
    for bad in ({"app_id": "not-a-guid"}, {"domain": "https://jit.acme.example/x"}):
        with pytest.raises(ValueError):
            m.manifest(**{"app_id": APP_ID, "domain": "jit.acme.example", **bad})


def test_icons_follow_the_teams_rules():
    """Color icon 192x192 and opaque; outline icon 32x32, white on transparent only."""
    w, h, color = read_png(m.color_icon())
    assert (w, h) == (192, 192) and all(p[3] == 255 for p in color)
    assert len({p[:3] for p in color}) > 2  # accent, white and the anti-aliased edge between
    w, h, outline = read_png(m.outline_icon())
    assert (w, h) == (32, 32)
    assert all(p[:3] == (255, 255, 255) for p in outline)
    assert any(p[3] == 0 for p in outline) and any(p[3] == 255 for p in outline)


def test_package_command_writes_the_app_zip(tmp_path, monkeypatch):
    """`jitgate teams package` fills in the app id and domain and zips manifest and icons."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MICROSOFT_APP_ID", APP_ID)
    monkeypatch.setenv("JITGATE_ISSUER", "https://jit.acme.example")
    assert jitgate(["teams", "package", "--out", str(tmp_path / "app.zip")]) == 0
    with zipfile.ZipFile(io.BytesIO((tmp_path / "app.zip").read_bytes())) as z:
        assert sorted(z.namelist()) == ["color.png", "manifest.json", "outline.png"]
        doc = json.loads(z.read("manifest.json"))
    assert doc["bots"][0]["botId"] == APP_ID and doc["validDomains"] == ["jit.acme.example"]
    assert jitgate(["teams", "package", "--app-id", "nope", "--out", str(tmp_path / "x.zip")]) == 2
    assert not (tmp_path / "x.zip").exists()
