"""The package says truthfully what it is (issue 13, item 7: "A LICENSE file matching
pyproject.toml, project URLs and classifiers")."""

from __future__ import annotations

import tomllib
from pathlib import Path

from trove_classifiers import classifiers as known_classifiers

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_license_file_is_the_apache_2_license_pyproject_names():
    """pyproject.toml says Apache-2.0, ships LICENSE, and LICENSE is the whole Apache License 2.0."""
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    for clause in ("1. Definitions.", "4. Redistribution.", "9. Accepting Warranty or Additional Liability."):
        assert clause in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_classifiers_are_known_and_do_not_restate_the_license():
    """Every classifier is one PyPI accepts; with an SPDX license, PEP 639 forbids a License :: classifier."""
    classifiers = PROJECT["classifiers"]
    assert classifiers, "no classifiers"
    assert [c for c in classifiers if c not in known_classifiers] == []
    assert [c for c in classifiers if c.startswith("License ::")] == []
    assert "Typing :: Typed" in classifiers  # broker/client ships py.typed
    supported = PROJECT["requires-python"].removeprefix(">=")
    assert f"Programming Language :: Python :: {supported}" in classifiers


def test_the_project_urls_point_to_the_docs_and_the_source():
    """The URLs are absolute https addresses, one for the documentation and one for the source."""
    urls = PROJECT["urls"]
    assert {"Homepage", "Documentation", "Source"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())
