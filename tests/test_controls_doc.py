"""docs/controls.md stays true to the suite (issue 18, item 9): every test it names exists, and
each framework's table lists every entry of that framework, so a control cannot silently lose
the test that shows it, nor a risk drop out of the mapping."""

import ast
import gc
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "controls.md"
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+(?:::\w+)?)`")

FRAMEWORKS = {
    "OWASP Top 10 for Agentic Applications": [f"ASI{n:02d}" for n in range(1, 11)],
    "OWASP Non-Human Identities Top 10": [f"NHI{n}" for n in range(1, 11)],
    "NIST AI RMF": ["GOVERN", "MAP", "MEASURE", "MANAGE"],
    "CSA MAESTRO": [f"L{n}" for n in range(1, 8)],
    "NIST CSF 2.0": ["GOVERN (GV)", "IDENTIFY (ID)", "PROTECT (PR)", "DETECT (DE)", "RESPOND (RS)", "RECOVER (RC)"],
}
STATUSES = {"met", "partial", "not met"}


def _sections() -> dict[str, list[list[str]]]:
    """Each `## heading` with the cells of its table rows (header and rule rows left out)."""
    sections: dict[str, list[list[str]]] = {}
    current = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] not in {"risk", "function", "layer"}:
                sections[current].append(cells)
    return sections


def _defined(path: Path) -> set[str]:
    """The test names a file defines: `name` for functions, `Class::name` for methods."""
    names: set[str] = set()
    # CPython 3.11.7 fails ast.parse with "AST constructor recursion depth mismatch" when the
    # garbage collector runs a finalizer (an earlier test's unclosed socket warning) mid-parse:
    # collect first, and keep the collector off while parsing.
    gc.collect()
    gc.disable()
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    finally:
        gc.enable()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(
                f"{node.name}::{m.name}" for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
            )
    return names


def test_every_named_test_exists():
    refs = TEST_REF.findall(DOC.read_text(encoding="utf-8"))
    assert len(refs) >= 40, "the mapping names too few tests to be the mapping"
    missing = [f"{p}::{n}" for p, n in refs if not (ROOT / p).is_file() or n not in _defined(ROOT / p)]
    assert not missing, f"docs/controls.md names tests that do not exist: {missing}"


def test_every_framework_lists_all_its_entries_with_a_status_and_a_test():
    sections = _sections()
    for framework, entries in FRAMEWORKS.items():
        heading = next((h for h in sections if h.startswith(framework)), None)
        assert heading, f"docs/controls.md has no section for {framework}"
        rows = sections[heading]
        for entry in entries:
            row = next((r for r in rows if r[0] == entry or r[0].startswith(entry + " ")), None)
            assert row, f"{framework}: {entry} is missing"
            assert row[1] in STATUSES, f"{framework} {entry}: status {row[1]!r} is not one of {STATUSES}"
            assert TEST_REF.search(row[3]), f"{framework} {entry}: names no test"
        assert len(rows) == len(entries), f"{framework}: rows for entries it does not have"


def test_the_checks_above_can_fail():
    """A reference to a test that does not exist is caught by the same parsing."""
    assert "test_that_does_not_exist" not in _defined(ROOT / "tests/broker/test_audit.py")
    assert TEST_REF.findall("`tests/broker/test_audit.py::test_that_does_not_exist`") == [
        ("tests/broker/test_audit.py", "test_that_does_not_exist")
    ]
