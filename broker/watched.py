"""Trusted files the broker follows while it runs: one way to read them, notice edits and reload.

The agents file, the approvers and targets files and the policy folder share these rules:

* :func:`read_trusted` refuses a file others may write (:mod:`broker.filemodes`), a path that
  is not a file, an oversized file and non-UTF-8 text; a missing file reads as None.
* :func:`load_yaml` is PyYAML's safe loader that also refuses a mapping with the same key
  twice (PyYAML would keep the last one silently).
* :func:`fingerprint` is what "changed" means: existence, modification time, size, inode
  and device of each file, so an atomic replace is a change too.
* :class:`Watched` remembers the fingerprint of the version in force and re-reads only when
  it changed; a broken new version raises and the previous one stays in force.

When reloads happen is not decided here: the scheduler's reload job (``Broker.maybe_reload``,
every 2 s on every replica) is the only caller, never a request path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError
from .filemodes import check_not_writable

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_FILE_BYTES = 5 * 1024 * 1024
RELOAD_INTERVAL_S = 2.0  # how often the scheduler's reload job checks the fingerprints


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key; let the base constructor report it
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, source: str) -> Any:
    """The YAML document in ``text`` (safe types only, no key twice in one mapping);
    :class:`ConfigError` naming ``source`` otherwise."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None


def compose_yaml(text: str) -> yaml.Node | None:
    """The node tree of ``text`` (for edits that keep the file's layout); None when malformed."""
    try:
        return yaml.compose(text, Loader=_StrictLoader)
    except yaml.YAMLError:
        return None


def read_trusted(path: Path, what: str, *, max_bytes: int = MAX_FILE_BYTES) -> str | None:
    """The text of a file the broker trusts, or None when it does not exist.

    Refused with :class:`ConfigError`: others may write it or replace it, it is not a
    regular file, it is larger than ``max_bytes``, it is not UTF-8, or it cannot be read.
    """
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    check_not_writable(path, what)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > max_bytes:
        raise ConfigError(f"{path}: larger than {max_bytes} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def fingerprint(paths: Iterable[Path]) -> tuple:
    """What "changed" compares: per path, its existence, modification time, size, inode and device."""
    out = []
    for path in paths:
        try:
            st = Path(path).stat()
        except FileNotFoundError:
            out.append((str(path), None))
            continue
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(out)


class Watched:
    """The files one loaded version came from, and their fingerprint when it was read.

    ``files`` lists the paths now (a function, so a folder's new files count). With
    ``retry_broken`` a broken version is re-read (and reported) on every check until it is
    fixed; without it, it is reported once and re-read only after its next change.
    """

    def __init__(self, files: Callable[[], Iterable[Path]], *, retry_broken: bool = True) -> None:
        self._files = files
        self.retry_broken = retry_broken
        self.stamp: tuple | None = None

    def now(self) -> tuple:
        """The fingerprint of the files as they are now."""
        return fingerprint(self._files())

    def load(self, read: Callable[[], T]) -> T:
        """``read()`` now, remembering the fingerprint taken *before* reading (an edit racing
        the read shows up as a change at the next check)."""
        stamp = self.now()
        value = read()
        self.stamp = stamp
        return value

    def reload(self, read: Callable[[], T]) -> T | None:
        """``read()`` again when the files changed since the version in force; None when they
        did not. A broken version raises (the caller keeps its previous value)."""
        stamp = self.now()
        if stamp == self.stamp:
            return None
        if not self.retry_broken:
            self.stamp = stamp
        value = read()
        self.stamp = stamp
        return value


def follow(what: str, reload_if_changed: Callable[[], bool]) -> bool:
    """Run one ``reload_if_changed`` for the reload job: True when a new version is in force;
    a refused one is logged (naming ``what``) and the previous version stays."""
    try:
        return bool(reload_if_changed())
    except Exception as exc:  # noqa: BLE001 - keep serving with the last good version
        detail = getattr(exc, "detail", None) or str(exc)
        log.error("reload of the %s refused, keeping the previous version: %s", what, detail)
        return False
