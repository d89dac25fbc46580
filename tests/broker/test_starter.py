"""Where `jitgate init` points the policies, approvers and targets: a checkout's own files,
else copies of the starter files shipped in the package (issue 13, item 2)."""

from __future__ import annotations

from pathlib import Path

from broker.starter import place, shipped

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_starter_files_are_the_repository_examples():
    """The package data is the repository's policies/ and examples/ (one copy to edit)."""
    def files(folder):
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files(shipped() / "policies") == files(ROOT / "policies")  # the policies and their tests
    for name in files(ROOT / "policies"):
        assert (shipped() / "policies" / name).read_bytes() == (ROOT / "policies" / name).read_bytes()
    for name in ("approvers.yaml", "targets.yaml"):
        assert (shipped() / name).read_bytes() == (ROOT / "examples" / name).read_bytes()


def test_a_checkout_keeps_its_own_files_and_nothing_is_copied(tmp_path):
    """In the repository (`make run`), init writes policies and examples/ paths, as before."""
    placed = place(ROOT, tmp_path / "data")
    assert placed == {"JITGATE_POLICY_DIR": ("policies", False),
                      "JITGATE_APPROVERS_FILE": ("examples/approvers.yaml", False),
                      "JITGATE_TARGETS_FILE": ("examples/targets.yaml", False)}
    assert not (tmp_path / "data").exists()


def test_an_empty_folder_gets_copies_in_the_data_folder_which_are_never_overwritten(tmp_path):
    """Elsewhere the starter files are copied into the data folder; a later init keeps the operator's edits."""
    data = tmp_path / ".jitgate"
    data.mkdir()
    placed = place(tmp_path, data)
    assert placed["JITGATE_POLICY_DIR"] == (str(data / "policies"), True)
    assert placed["JITGATE_APPROVERS_FILE"] == (str(data / "approvers.yaml"), True)
    assert (data / "policies" / "prod.cedar").read_text() == (ROOT / "policies" / "prod.cedar").read_text()
    edited = "approvers:\n  - id: zoe\n    groups: [sre]\n"
    (data / "approvers.yaml").write_text(edited)
    again = place(tmp_path, data)
    assert again["JITGATE_APPROVERS_FILE"] == (str(data / "approvers.yaml"), False)
    assert (data / "approvers.yaml").read_text() == edited


def test_a_policies_folder_without_policies_is_not_taken_for_a_checkout(tmp_path):
    """An unrelated, empty policies/ folder in the working folder does not leave the broker without policies."""
    (tmp_path / "policies").mkdir()
    placed = place(tmp_path, tmp_path / "data")
    assert placed["JITGATE_POLICY_DIR"] == (str(tmp_path / "data" / "policies"), True)
