"""The Chrome or Chromium the browser tests drive, found by `.ci/find-browser` (the same search
`make test` makes before installing one), and the switches it runs with here."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.process import ROOT

FIND_BROWSER = ROOT / ".ci" / "find-browser"
# --no-sandbox: the tests may run as root; the others keep Chromium from reaching the internet at start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


@functools.cache
def _find() -> tuple[Path | None, str]:
    done = subprocess.run([str(FIND_BROWSER)], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode == 0 and done.stdout.strip():
        return Path(done.stdout.strip()), ""
    return None, done.stderr.strip()


def browser_for_tests() -> Path:
    """The browser to launch; the test FAILS, saying how to get one, when there is none.

    JITGATE_SKIP_BROWSER=1 skips instead, on purpose (pytest -ra lists the reason); CI never sets it.
    """
    if os.environ.get("JITGATE_SKIP_BROWSER") == "1":
        if os.environ.get("CI"):  # the browser test must run in CI: skipping it there is refused
            pytest.fail("JITGATE_SKIP_BROWSER=1 is refused under CI: the browser tests must run there")
        pytest.skip("JITGATE_SKIP_BROWSER=1: the browser tests were skipped on purpose")
    path, why = _find()
    if path is None:
        pytest.fail(
            f"no browser for the browser tests: {why} Run `.ci/install-browser` (it installs Debian's chromium "
            "where it may, and otherwise says how to get one), or point JITGATE_TEST_BROWSER at a Chrome or "
            "Chromium; JITGATE_SKIP_BROWSER=1 skips these tests deliberately.", pytrace=False)
    return path
