"""The committed ruff configuration is the one the code's `# noqa` comments assume (issue 13, item 7:
"Commit the ruff and mypy configuration the code's `# noqa` comments assume"). `.ci/steps/20-lint.sh`
runs ruff and mypy themselves; this keeps the two from drifting apart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOQA = re.compile(r"#\s*noqa:\s*([A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)")


def _noqa_codes() -> dict[str, str]:
    """Every rule code named in a `# noqa:` comment in the project's Python files, with one place it is."""
    codes: dict[str, str] = {}
    for folder in ("broker", "bot", "tests", "bench", "support", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for m in NOQA.finditer(line):
                    for code in re.split(r"\s*,\s*", m.group(1)):
                        codes.setdefault(code, f"{path.relative_to(ROOT)}:{n}")
    return codes


def test_every_code_a_noqa_comment_names_is_checked():
    """A `# noqa: X` means the linter checks X: each code is selected (by itself or its group) and not ignored."""
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    codes = _noqa_codes()
    assert {"BLE001", "PLC0415"} <= set(codes)  # the scan finds what is there
    unchecked = {code: where for code, where in codes.items()
                 if not any(code.startswith(s) for s in lint["select"])
                 or any(code.startswith(i) for i in lint.get("ignore", []))}
    assert unchecked == {}


def test_the_lint_step_runs_ruff_on_everything_and_mypy_on_the_client():
    """.ci/steps/20-lint.sh runs both from the test venv, with the versions the test extra pins."""
    step = (ROOT / ".ci" / "steps" / "20-lint.sh").read_text()
    assert ".venv/bin/ruff check --no-cache .\n" in step and ".venv/bin/mypy broker/client\n" in step
    test_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert any(d.startswith("ruff") for d in test_extra) and any(d.startswith("mypy") for d in test_extra)
