"""File permissions that must hold before a file is trusted, as OpenSSH checks its keys.

Two rules. A file holding a secret (a private key, a ``.env`` with the key-encryption key)
must not be readable by others. A file the broker trusts and re-reads (agents, approvers,
targets, policies, the SPIFFE bundle) must not be writable by others. For both, the folder
that holds the file must not let others replace it (writable by everyone without the
sticky bit). Each refusal is a :class:`ConfigError` naming the file and the ``chmod`` that
fixes it. A file on a read-only mount (a Kubernetes ConfigMap or Secret volume) cannot be
written by anyone, whatever its mode says.

Pure on purpose (standard library and ``broker.errors`` only): the agent client checks
its private key with it, in an environment that has nothing else of the broker's.
Nothing is checked where there are no POSIX modes (Windows).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import ConfigError

POSIX = os.name == "posix"


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _check_folder(path: Path, what: str) -> None:
    """The folder holding ``path`` must not let everyone replace it (o+w without the sticky bit)."""
    folder = path.resolve().parent
    try:
        mode = folder.stat().st_mode
    except OSError:
        return  # the file's own read reports what is wrong
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX and not _read_only_mount(folder):
        raise ConfigError(f"{folder}: the folder of {what} {path} is writable by everyone, who could replace it; "
                          f"run `chmod o-w {folder}`")


def _stat(path: Path) -> os.stat_result | None:
    """The file's status, or None where there is nothing to check (not POSIX; missing or
    unreadable, which the read that follows reports)."""
    if not POSIX:
        return None
    try:
        return path.stat()
    except OSError:
        return None


def check_private(path: str | os.PathLike, what: str) -> None:
    """Refuse a secret file others may read, as OpenSSH refuses an unprotected private key:
    no access at all for others, and none for the group when the file is ours (we could
    have made it private); and a folder everyone may write to without the sticky bit."""
    path = Path(path)
    st = _stat(path)
    if st is None:
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007 or (st.st_uid == os.geteuid() and mode & 0o070):
        raise ConfigError(f"{path}: {what} is accessible by others (mode {mode:04o}); it must be private to its owner: "
                          f"run `chmod 600 {path}`")
    _check_folder(path, what)


def check_not_writable(path: str | os.PathLike, what: str) -> None:
    """Refuse a trusted file (or folder) that everyone may write to, or whose folder lets
    everyone replace it. For a folder, each file in it is checked by its reader."""
    path = Path(path)
    st = _stat(path)
    if st is None:
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH and not _read_only_mount(path):
        raise ConfigError(f"{path}: {what} is writable by everyone (mode {mode:04o}); anyone could change what the "
                          f"broker trusts: run `chmod o-w {path}`")
    _check_folder(path, what)


def write_private(path: str | os.PathLike, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the first byte (never overwrites an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
