"""broker.watched: the one way trusted files are read strictly, fingerprinted and reloaded
(issue 15: "strict YAML + fingerprint + hot reload" had three copies)."""

from __future__ import annotations

import logging
import os

import pytest

from broker.errors import ConfigError
from broker.watched import Watched, fingerprint, follow, load_yaml, read_trusted


def bump(path, seconds=5):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


class Counting:
    """A reader of one YAML file that counts how often it really parsed."""

    def __init__(self, path):
        self.path, self.parsed = path, 0

    def __call__(self):
        self.parsed += 1
        return load_yaml(read_trusted(self.path, "test file") or "", str(self.path))


def test_changed_file_reloads_and_unchanged_is_not_reparsed(tmp_path):
    """An edit is picked up once; while nothing changed the file is not parsed again."""
    path = tmp_path / "a.yaml"
    path.write_text("x: 1\n")
    read = Counting(path)
    w = Watched(lambda: (path,))
    assert w.load(read) == {"x": 1} and read.parsed == 1
    for _ in range(3):
        assert w.reload(read) is None
    assert read.parsed == 1
    path.write_text("x: 2\n")
    bump(path)
    assert w.reload(read) == {"x": 2} and read.parsed == 2
    assert w.reload(read) is None and read.parsed == 2


def test_atomic_replace_and_deletion_are_changes(tmp_path):
    """Replacing the file by rename (same size, same mtime) or deleting it is a change."""
    path, new = tmp_path / "a.yaml", tmp_path / "new.yaml"
    path.write_text("x: 1\n")
    before = fingerprint([path])
    new.write_text("x: 2\n")
    st = path.stat()
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, path)
    assert fingerprint([path]) != before
    path.unlink()
    assert fingerprint([path]) == ((str(path), None),)


def test_broken_edit_keeps_previous_version_and_logs(tmp_path, caplog):
    """A broken edit raises, the caller's previous version stays, follow() logs it naming the
    file, and a fixed edit is then taken."""
    path = tmp_path / "a.yaml"
    path.write_text("x: 1\n")
    w = Watched(lambda: (path,))
    current = {"value": w.load(Counting(path))}

    def reload_if_changed():
        new = w.reload(Counting(path))
        if new is None:
            return False
        current["value"] = new
        return True

    path.write_text("x: 1\nx: 2\n")  # a duplicate key is refused, not "last one wins"
    bump(path)
    with caplog.at_level(logging.ERROR, logger="broker.watched"):
        assert follow("test file", reload_if_changed) is False
    assert current["value"] == {"x": 1}
    assert any("test file" in r.getMessage() and "duplicate key 'x'" in r.getMessage() for r in caplog.records)
    # retry_broken (the default): still broken, reported again rather than silently accepted
    with pytest.raises(ConfigError, match="duplicate key"):
        reload_if_changed()
    path.write_text("x: 3\n")
    bump(path, 10)
    assert follow("test file", reload_if_changed) is True and current["value"] == {"x": 3}


def test_report_once_mode_does_not_reparse_a_broken_version(tmp_path):
    """Without retry_broken a broken version raises once and is re-read only after its next edit."""
    path = tmp_path / "a.yaml"
    path.write_text("x: 1\n")
    read = Counting(path)
    w = Watched(lambda: (path,), retry_broken=False)
    w.load(read)
    path.write_text("x: [\n")
    bump(path)
    with pytest.raises(ConfigError, match="not valid YAML"):
        w.reload(read)
    assert w.reload(read) is None and read.parsed == 2


def test_world_writable_file_is_refused(tmp_path):
    """filemodes: a trusted file everyone may write is refused by read_trusted."""
    path = tmp_path / "a.yaml"
    path.write_text("x: 1\n")
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="chmod"):
        read_trusted(path, "test file")
    path.chmod(0o644)
    assert read_trusted(path, "test file") == "x: 1\n"
    assert read_trusted(tmp_path / "missing.yaml", "test file") is None


def test_only_safe_yaml():
    """Python object tags are refused (safe loader)."""
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml("x: !!python/object/apply:os.system [true]\n", "src")
