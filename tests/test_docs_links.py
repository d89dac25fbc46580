"""Every relative link in the documentation resolves (issue 13, item 7: "move the long sections
into docs/ with an index, and make every link resolve (a test checks relative links)").

The pages checked are README.md and every Markdown file under docs/ and bench/ except the
dated benchmark results. A link is a Markdown link or image (``[text](target)``, a reference
definition ``[label]: target``) or an HTML ``href``/``src``; links with a scheme (``https:``,
``mailto:``) are not followed. A target must exist; a ``#fragment`` on a Markdown target (or
alone, on the page itself) must be the GitHub anchor of one of its headings.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
_HTML_ID = re.compile(r"""<a\s[^>]*\b(?:name|id)\s*=\s*["']([^"']+)["']""", re.I)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def doc_pages(root: Path = ROOT) -> list[Path]:
    """README.md, docs/**/*.md and bench/*.md: the pages a reader follows links through."""
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md")), *sorted((root / "bench").glob("*.md"))]
    return [p for p in pages if p.is_file()]


def _prose_lines(text: str, *, blank_code: bool = True):
    """(line number, line) outside fenced code blocks; inline code spans blanked unless told not to."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark
                continue
            if mark[0] == fence[0] and len(mark) >= len(fence) and not line.strip()[len(mark):].strip():
                fence = None
                continue
        if fence is None:
            yield n, (_CODE_SPAN.sub("", line) if blank_code else line)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.replace("`", "").replace("*", "")
    out = []
    for ch in text.lower():
        if ch in "-_" or ch.isalnum() or unicodedata.category(ch).startswith("M"):
            out.append(ch)
        elif ch == " ":
            out.append("-")
    return "".join(out)


def anchors(page: Path) -> set[str]:
    """Every fragment a link may name on this page: heading slugs (repeats get -1, -2, …) and HTML ids."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _n, line in _prose_lines(page.read_text(encoding="utf-8"), blank_code=False):
        m = _HEADING.match(line)
        if m:
            slug = github_slug(m.group(2))
            if slug in seen:
                seen[slug] += 1
                slug = f"{slug}-{seen[slug]}"
            else:
                seen[slug] = 0
            found.add(slug)
        found.update(_HTML_ID.findall(line))
    return found


def links(page: Path):
    """(line number, target) of every relative link on the page."""
    for n, line in _prose_lines(page.read_text(encoding="utf-8")):
        targets = [m.group(1) for m in _INLINE.finditer(line)]
        targets += [m.group(1) for m in _REFDEF.finditer(line)]
        targets += _HTML.findall(line)
        for target in targets:
            target = target.strip("<>")
            if target and not _SCHEME.match(target):
                yield n, target


def dead_links(pages: list[Path], root: Path = ROOT) -> list[str]:
    """One line per link whose file, or whose #anchor in a Markdown file, does not exist."""
    dead = []
    for page in pages:
        for n, target in links(page):
            path, _, fragment = target.partition("#")
            path = unquote(path.split("?", 1)[0])
            dest = page if not path else (root / path.lstrip("/") if path.startswith("/") else page.parent / path)
            where = f"{page.relative_to(root)}:{n}: {target}"
            if not dest.exists():
                dead.append(f"{where} (no such file)")
            elif fragment and dest.suffix == ".md" and unquote(fragment).lower() not in anchors(dest):
                dead.append(f"{where} (no heading with that anchor in {dest.resolve().relative_to(root)})")
    return dead


def test_every_relative_link_in_the_docs_resolves():
    """README.md and docs/ link only to files and headings that exist."""
    pages = doc_pages()
    assert ROOT / "docs" / "README.md" in pages, "docs/README.md, the index, is missing"
    assert dead_links(pages) == []


def test_the_readme_and_the_index_link_to_every_page_in_docs():
    """No page under docs/ is an orphan: the index links to each, and the README to the index."""
    linked = {(ROOT / "docs" / t.partition("#")[0]).resolve() for _n, t in links(ROOT / "docs" / "README.md")}
    orphans = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "README.md" and p.resolve() not in linked]
    assert orphans == []
    assert "docs/README.md" in {t for _n, t in links(ROOT / "README.md")}


def test_the_checker_finds_a_dead_file_and_a_dead_anchor(tmp_path):
    """The check can fail: a missing file, a missing heading and a missing same-page anchor are each reported."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## First run: `make run` and `jitgate demo`\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#first-run-make-run-and-jitgate-demo) [ok](docs/a.md#a-page) [ok](#top)\n"
        "# Top\n"
        "[dead](docs/b.md) [dead](docs/a.md#nowhere) [dead](#bottom) [skip](https://example.com/x.md)\n"
        "`[not a link](docs/c.md)`\n"
        "```\n[not a link either](docs/d.md)\n```\n"
    )
    dead = dead_links(doc_pages(tmp_path), tmp_path)
    assert [d.split(": ", 1)[1].split(" ")[0] for d in dead] == ["docs/b.md", "docs/a.md#nowhere", "#bottom"]


def test_github_slugs():
    """Anchors are made the way GitHub makes them (punctuation dropped, spaces to hyphens, case folded)."""
    assert github_slug("Quick start (two commands)") == "quick-start-two-commands"
    assert github_slug("`jitgate agent` (and `jitgate-agent`)") == "jitgate-agent-and-jitgate-agent"
    assert github_slug("DPoP-bound tokens (RFC 9449)") == "dpop-bound-tokens-rfc-9449"
    assert github_slug("`/jit`") == "jit"
    assert github_slug("Agents: the Python client, the decorator, the CLI") == "agents-the-python-client-the-decorator-the-cli"
