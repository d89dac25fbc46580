"""approvers.yaml and targets.yaml: strict loading, lookups, reloading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.directory import Approver, Directory, SlackGroupBinding, Target, group_bound_id
from broker.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

APPROVERS = """
approvers:
  - id: alice
    groups: [sre, on-call]
    slack: U0123ABCD
    teams: 6F2C1A9E-3B7D-4C55-9F1E-0A2B3C4D5E6F
    email: Alice@Example.com
  - id: bob
    groups: [sre]
    slack: U0456EFGH
  - id: sre-in-slack
    groups: [sre]
    slack_usergroups: [S0SRE, S0SREOPS]
"""
TARGETS = """
targets:
  - id: prod/payments-api
    env: prod
    attributes: {sensitivity: high, tier: 1, regions: [eu, us], pci: true}
  - id: staging/payments-api
    env: staging
  - id: sandbox
"""


def files(tmp_path: Path, approvers: str | None = APPROVERS, targets: str | None = TARGETS) -> tuple[Path, Path]:
    a, t = tmp_path / "approvers.yaml", tmp_path / "targets.yaml"
    if approvers is not None:
        a.write_text(approvers)
    if targets is not None:
        t.write_text(targets)
    return a, t


def load(tmp_path: Path, approvers: str | None = APPROVERS, targets: str | None = TARGETS) -> Directory:
    return Directory.load(*files(tmp_path, approvers, targets))


def bump_mtime(path: Path) -> None:
    """Move a file's mtime forward so a change is seen even within one timestamp tick."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_loads_approvers_and_targets(tmp_path):
    """Entries become frozen Approver and Target values, in file order."""
    d = load(tmp_path)
    assert [a.id for a in d.approvers] == ["alice", "bob"]
    alice = d.approver("alice")
    assert alice == Approver("alice", frozenset({"sre", "on-call"}), "U0123ABCD",
                             "6F2C1A9E-3B7D-4C55-9F1E-0A2B3C4D5E6F", "Alice@Example.com")
    assert d.approver("bob").teams is None and d.approver("bob").email is None
    prod = d.target("prod/payments-api")
    assert prod.env == "prod"
    assert prod.attributes == {"sensitivity": "high", "tier": 1, "regions": ("eu", "us"), "pci": True}
    assert d.target("sandbox") == Target("sandbox", None, {})
    assert d.approver("mallory") is None and d.target("nope") is None


def test_values_are_frozen_and_hashable(tmp_path):
    """Approver and Target are immutable and can be used in sets."""
    d = load(tmp_path)
    with pytest.raises(AttributeError):
        d.approver("alice").groups = frozenset({"security"})  # type: ignore[misc]
    assert len({*d.approvers, *d.targets}) == 5


def test_members_of_group(tmp_path):
    """members(group) lists the approvers in that group, in file order."""
    d = load(tmp_path)
    assert [a.id for a in d.members("sre")] == ["alice", "bob"]
    assert [a.id for a in d.members("on-call")] == ["alice"]
    assert d.members("security") == ()


def test_slack_user_group_bindings(tmp_path):
    """An entry with slack_usergroups binds a Slack user group's members to jitgate groups; it is no approver itself."""
    d = load(tmp_path)
    (binding,) = d.slack_bindings
    assert binding == SlackGroupBinding("sre-in-slack", frozenset({"sre"}), ("S0SRE", "S0SREOPS"))
    assert d.approver("sre-in-slack") is None and "sre-in-slack" not in [a.id for a in d.members("sre")]
    assert d.slack_usergroups_for("sre") == ("S0SRE", "S0SREOPS") and d.slack_usergroups_for("on-call") == ()
    assert group_bound_id("U0999") == "slack:U0999"


def test_chat_identity_lookups(tmp_path):
    """Slack ids match exactly; Entra object ids and e-mail addresses case-insensitively."""
    d = load(tmp_path)
    assert d.by_slack("U0456EFGH").id == "bob"
    assert d.by_slack("u0456efgh") is None
    assert d.by_teams("6f2c1a9e-3b7d-4c55-9f1e-0a2b3c4d5e6f").id == "alice"
    assert d.by_email("alice@example.COM").id == "alice"
    assert d.by_email("bob@example.com") is None


def test_missing_files_are_empty(tmp_path):
    """A file that does not exist is an empty list, not an error."""
    d = Directory.load(tmp_path / "no-approvers.yaml", tmp_path / "no-targets.yaml")
    assert d.approvers == () and d.targets == ()


def test_empty_file_is_empty(tmp_path):
    """An empty file or an empty list is an empty directory."""
    d = load(tmp_path, approvers="", targets="targets: []\n")
    assert d.approvers == () and d.targets == ()


def test_example_files_load():
    """The shipped examples load: four approvers and three targets."""
    d = Directory.load(REPO / "examples" / "approvers.yaml", REPO / "examples" / "targets.yaml")
    assert [a.id for a in d.approvers] == ["alice", "bob", "carol", "dave"]
    assert {a.id for a in d.members("sre")} == {"alice", "bob"}
    assert d.target("prod/payments-api").attributes == {"sensitivity": "high"}
    assert d.target("prod/orders-db").env == "prod"
    assert d.target("staging/payments-api").env == "staging"


def test_malformed_yaml_names_the_file(tmp_path):
    """YAML that does not parse raises ConfigError naming the file."""
    with pytest.raises(ConfigError, match="approvers.yaml: not valid YAML"):
        load(tmp_path, approvers="approvers:\n  - id: [unclosed\n")


def test_duplicate_yaml_keys_are_refused(tmp_path):
    """A key given twice in one entry is refused (PyYAML would silently keep the last)."""
    with pytest.raises(ConfigError, match="duplicate key 'groups'"):
        load(tmp_path, approvers="approvers:\n  - id: eve\n    groups: [sre]\n    groups: []\n")


@pytest.mark.parametrize(
    ("approvers", "expected"),
    [
        ("approvers:\n  - id: eve\n    groups: sre\n", r"entry 1 \(id 'eve'\): groups must be a list"),
        ("approvers:\n  - alice\n", "entry 1: must be a mapping"),
        ("approvers:\n  - id: ok\n  - groups: [sre]\n", "entry 2: id must be a string"),
        ("approvers:\n  - id: ''\n", "entry 1: id must not be empty"),
        ('approvers:\n  - id: "ev\\u0000e"\n', "control characters"),
        ('approvers:\n  - id: "ev\\u202ee"\n', "control characters"),
        ("approvers:\n  - id: " + "x" * 201 + "\n", "at most 200 characters"),
        ("approvers:\n  - id: ' eve'\n", "whitespace"),
        ("approvers:\n  - id: 123\n", "must be a string, got int"),
        ("approvers:\n  - id: eve\n    slack: no\n", r"\(id 'eve'\): slack must be a string, got bool"),
        ("approvers:\n  - id: eve\n    grups: [sre]\n", r"unknown key\(s\) \['grups'\]"),
        ("approvers:\n  - id: eve\n    email: not-an-address\n", "is not an ASCII e-mail address"),
        ("approvers:\n  - id: eve\n  - id: eve\n", r"entry 2 \(id 'eve'\): duplicate approver id"),
        ("approvers:\n  - {id: eve, slack: U1}\n  - {id: mal, slack: U1}\n", "already bound to approver 'eve'"),
        ("approvers:\n  - {id: eve, email: E@x.org}\n  - {id: mal, email: e@X.org}\n", "already bound"),
        ("approvers: {alice: {}}\n", "'approvers' must be a list"),
        ("- id: alice\n", "expected a mapping"),
        ("approver:\n  - id: alice\n", "unknown top-level key"),
        ("approvers:\n  - {id: slack:U1, groups: [sre]}\n", "reserved for people bound through a Slack user group"),
        ("approvers:\n  - {id: b, groups: [sre], slack: U1, slack_usergroups: [S0A]}\n", r"not one person.*\['slack'\]"),
        ("approvers:\n  - {id: b, slack_usergroups: [S0A]}\n", "needs 'groups'"),
        ("approvers:\n  - {id: b, groups: [sre], slack_usergroups: []}\n", "at least one Slack user group id"),
        ("approvers:\n  - {id: b, groups: [sre], slack_usergroups: ['@sre-leads']}\n", "not a Slack user group id"),
        ("approvers:\n  - {id: b, groups: [sre]}\n  - {id: b, groups: [sre], slack_usergroups: [S0A]}\n", "duplicate id"),
    ],
)
def test_malformed_approver_entries(tmp_path, approvers, expected):
    """A bad approver entry raises ConfigError naming the file and the entry."""
    with pytest.raises(ConfigError, match=expected) as err:
        load(tmp_path, approvers=approvers)
    assert "approvers.yaml" in err.value.detail


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ("targets:\n  - id: t\n    attributes: {weight: 1.5}\n", "attribute 'weight' must be a string"),
        ("targets:\n  - id: t\n    attributes: {owner: null}\n", "got NoneType"),
        ("targets:\n  - id: t\n    attributes: {name: other}\n", "'name' is reserved"),
        ("targets:\n  - id: t\n    attributes: {x: [[1]]}\n", "may not nest lists"),
        ("targets:\n  - id: t\n    attributes: {x: {__entity: {type: A, id: b}}}\n", "got dict"),
        ("targets:\n  - id: t\n    attributes: [a, b]\n", "attributes must be a mapping"),
        ("targets:\n  - id: t\n    env: ''\n", r"\(id 't'\): env must not be empty"),
        ("targets:\n  - id: t\n  - id: t\n", "duplicate target id"),
        ("targets:\n  - id: t\n    environment: prod\n", "unknown key"),
    ],
)
def test_malformed_target_entries(tmp_path, targets, expected):
    """A bad target entry raises ConfigError naming the file and the entry."""
    with pytest.raises(ConfigError, match=expected) as err:
        load(tmp_path, targets=targets)
    assert "targets.yaml" in err.value.detail


def test_reload_if_changed_picks_up_edits(tmp_path):
    """reload_if_changed returns False while nothing changed and True after an edit, with the new data."""
    d = load(tmp_path)
    assert d.reload_if_changed() is False
    approvers = tmp_path / "approvers.yaml"
    approvers.write_text(APPROVERS + "  - id: carol\n    groups: [security]\n")
    bump_mtime(approvers)
    assert d.reload_if_changed() is True
    assert d.approver("carol").groups == frozenset({"security"})
    assert d.reload_if_changed() is False


def test_reload_sees_a_file_appear_and_disappear(tmp_path):
    """Creating or deleting a file is a change too."""
    a, t = files(tmp_path, targets=None)
    d = Directory.load(a, t)
    assert d.targets == ()
    t.write_text(TARGETS)
    assert d.reload_if_changed() is True
    assert d.target("sandbox") is not None
    t.unlink()
    assert d.reload_if_changed() is True
    assert d.targets == ()


def test_reload_keeps_old_data_on_broken_file(tmp_path):
    """A broken new version raises ConfigError, keeps the old data, and is reported until fixed."""
    d = load(tmp_path)
    approvers = tmp_path / "approvers.yaml"
    approvers.write_text("approvers:\n  - id: alice\n    groups: sre\n")
    bump_mtime(approvers)
    with pytest.raises(ConfigError, match="approvers.yaml"):
        d.reload_if_changed()
    assert [a.id for a in d.approvers] == ["alice", "bob"]
    assert d.by_slack("U0456EFGH").id == "bob"
    with pytest.raises(ConfigError):
        d.reload_if_changed()
    approvers.write_text("approvers:\n  - id: alice\n    groups: [sre]\n")
    bump_mtime(approvers)
    assert d.reload_if_changed() is True
    assert [a.id for a in d.approvers] == ["alice"]


def test_directory_built_in_code_does_not_reload():
    """A Directory built from entries has no files to follow."""
    d = Directory(approvers=[Approver("alice", frozenset({"sre"}))], targets=[Target("t")])
    assert d.reload_if_changed() is False
    assert d.members("sre")[0].id == "alice"


def test_directory_built_in_code_checks_bindings():
    """Two approvers bound to one Slack user are refused even when built in code."""
    with pytest.raises(ConfigError, match="already bound"):
        Directory(approvers=[Approver("a", frozenset(), slack="U1"), Approver("b", frozenset(), slack="U1")])
