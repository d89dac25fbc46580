"""The registry of agents and resource servers, and the agents file it is read from.

Each registered agent has an id and a public JWK (Ed25519 or P-256), parsed once when the
file loads; resource servers (which call introspection and revocation) have their own
section. The file is strict YAML (no duplicate keys, no unknown keys, public keys only),
re-read when it changes (:meth:`Registry.reload_if_changed`), and written atomically by
:func:`add_agent` and :func:`add_resource_server`. SPIFFE ids are valid agent ids here
(``spiffe_id_problem``); the JWT-SVIDs that authenticate them are :mod:`.spiffe`'s.
"""

from __future__ import annotations

import copy
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..watched import Watched, compose_yaml, load_yaml, read_trusted
from ..jose import KINDS as _KINDS, PrivateKeyMaterial, jwk_thumbprint, parse_public_jwk as _parse_public_jwk

ID_PATTERN = re.compile(r"[A-Za-z0-9._:/@-]{1,128}")
_ID_RULE = "1 to 128 characters of A-Z a-z 0-9 . _ : / @ -"

_AGENT_KEYS = frozenset({"id", "owner", "team", "public_key", "can_delegate", "disabled"})
_SERVER_KEYS = frozenset({"id", "public_key", "audiences"})
# A resource server's ``audiences``: the token audiences (target names) it may introspect
# and revoke, or this alone for a central gateway that fronts every target.
GATEWAY_AUDIENCE = "*"
_MAX_AUDIENCES = 100
# ``denied_spiffe_ids``: SPIFFE ids refused whatever their credential, listed entry or not.
_TOP_KEYS = frozenset({"agents", "resource_servers", "denied_spiffe_ids"})

_PUBLIC_ONLY = "agents file must hold public keys only"

SPIFFE_SCHEME = "spiffe://"
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


# --- registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class Agent:
    """A registered agent; ``kid`` is the JWK's ``kid`` or else its RFC 7638 thumbprint.

    An agent whose id is a SPIFFE id may be listed without a key (``public_jwk`` None,
    ``kid`` empty): it then authenticates only with a JWT-SVID, and the entry gives it
    an owner and a team.
    """

    id: str
    owner: str | None
    team: str | None
    public_jwk: dict | None = field(hash=False)
    kid: str
    can_delegate: bool = False
    _key: Any = field(default=None, compare=False, repr=False, hash=False)
    # ``disabled: true`` in the agents file: its assertions are refused (403 agent-disabled)
    # and what it holds is ended on the reload, as for a removed agent; the entry stays.
    disabled: bool = False

    def __post_init__(self) -> None:
        if self._key is None and self.public_jwk is not None:
            object.__setattr__(self, "_key", _parse_public_jwk(self.public_jwk)[0])

    @property
    def alg(self) -> str | None:
        """The one JWS algorithm this agent's assertions may use (None without a key)."""
        if self.public_jwk is None:
            return None
        return _KINDS[self.public_jwk["kty"], self.public_jwk["crv"]][0]


@dataclass(frozen=True)
class ResourceServer:
    """A registered resource server (calls introspection); same key rules as an agent.

    ``audiences`` are the token audiences it is registered for (RFC 7662 section 4: the
    broker answers only about tokens meant for the asking server). Empty means its own
    id is its one audience; ``("*",)`` is a central gateway that may see every token.
    """

    id: str
    public_jwk: dict = field(hash=False)
    kid: str
    _key: Any = field(default=None, compare=False, repr=False, hash=False)
    audiences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self._key is None:
            object.__setattr__(self, "_key", _parse_public_jwk(self.public_jwk)[0])

    def serves(self, aud: Any) -> bool:
        """Whether a token whose ``aud`` claim is ``aud`` is meant for this server (a string
        equal to one of its audiences, or a list holding one)."""
        mine = self.audiences or (self.id,)
        if GATEWAY_AUDIENCE in mine:
            return True
        if isinstance(aud, str):
            return aud in mine
        return isinstance(aud, list) and any(isinstance(a, str) and a in mine for a in aud)

    @property
    def alg(self) -> str:
        """The one JWS algorithm this server's assertions may use."""
        return _KINDS[self.public_jwk["kty"], self.public_jwk["crv"]][0]


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValueError(f"{what} must be {_ID_RULE}")
    return value


def _optional_id(entry: dict, name: str) -> str | None:
    value = entry.get(name)
    return None if value is None else _check_id(value, f"{name!r}")


def _checked_shape(entry: Any, allowed: frozenset, *, keyless_spiffe: bool = False) -> str:
    """The id of an entry, after checking it is a mapping with known keys and a public_key
    (which an agent named by a SPIFFE id may omit when ``keyless_spiffe``)."""
    if not isinstance(entry, dict):
        raise ValueError("must be a mapping")
    unknown = sorted(str(k) for k in entry if k not in allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    ident = _check_id(entry.get("id"), "'id'")
    if "public_key" not in entry and not (keyless_spiffe and ident.startswith(SPIFFE_SCHEME)):
        raise ValueError("'public_key' is required (only an agent whose id is a spiffe:// id may omit it)")
    return ident


def _entry_key(entry: dict) -> tuple[Any, str]:
    try:
        key, kid, _ = _parse_public_jwk(entry["public_key"])
    except PrivateKeyMaterial:
        raise ValueError(f"public_key: {_PUBLIC_ONLY}") from None
    except ValueError as exc:
        raise ValueError(f"public_key: {exc}") from None
    return key, kid


def _agent_from_entry(entry: Any) -> Agent:
    ident = _checked_shape(entry, _AGENT_KEYS, keyless_spiffe=True)
    owner, team = _optional_id(entry, "owner"), _optional_id(entry, "team")
    can_delegate = entry.get("can_delegate", False)
    if not isinstance(can_delegate, bool):
        raise ValueError("'can_delegate' must be true or false")
    disabled = entry.get("disabled", False)
    if not isinstance(disabled, bool):
        raise ValueError("'disabled' must be true or false")  # a string read as false would fail open
    if "public_key" not in entry:
        spiffe_problem = spiffe_id_problem(ident)
        if spiffe_problem:
            raise ValueError(f"'id' {spiffe_problem}")
        return Agent(id=ident, owner=owner, team=team, public_jwk=None, kid="", can_delegate=can_delegate,
                     disabled=disabled)
    key, kid = _entry_key(entry)
    return Agent(
        id=ident,
        owner=owner,
        team=team,
        public_jwk=copy.deepcopy(entry["public_key"]),
        kid=kid,
        can_delegate=can_delegate,
        _key=key,
        disabled=disabled,
    )


def _audiences(entry: dict) -> tuple[str, ...]:
    """The ``audiences`` of a resource-server entry: a list of 1 to 100 token audiences
    (target names), or ``["*"]`` alone for a gateway; absent means the server's own id."""
    if "audiences" not in entry:
        return ()
    value = entry["audiences"]
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_AUDIENCES:
        raise ValueError(f"'audiences' must be a list of 1 to {_MAX_AUDIENCES} target names, or [\"*\"] for a gateway")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > 256 or not item.isprintable() or item != item.strip():
            raise ValueError(f"'audiences' holds {item!r}, which is not a target name")
    if GATEWAY_AUDIENCE in value and len(value) > 1:
        raise ValueError(f"'audiences': {GATEWAY_AUDIENCE!r} (every token, for a gateway) must stand alone")
    return tuple(dict.fromkeys(value))


def _server_from_entry(entry: Any) -> ResourceServer:
    ident = _checked_shape(entry, _SERVER_KEYS)
    audiences = _audiences(entry)
    key, kid = _entry_key(entry)
    return ResourceServer(id=ident, public_jwk=copy.deepcopy(entry["public_key"]), kid=kid, _key=key,
                          audiences=audiences)


def _where(section: str, index: int, entry: Any) -> str:
    ident = entry.get("id") if isinstance(entry, dict) else None
    named = f" (id {ident!r})" if isinstance(ident, str) and ID_PATTERN.fullmatch(ident) else ""
    return f"{section}[{index}]{named}"


def _parse_section(source: str, data: dict, section: str, build: Callable[[Any], Any]) -> list:
    entries = data.get(section)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: {section!r} must be a list")
    parsed = []
    for index, entry in enumerate(entries):
        try:
            parsed.append(build(entry))
        except ValueError as exc:
            raise ConfigError(f"{source}: {_where(section, index, entry)}: {exc}") from None
    return parsed


def _check_unique(source: str, agents: Iterable[Agent], servers: Iterable[ResourceServer]) -> None:
    """One id per entry across both sections, and one entry per public key."""
    ids: dict[str, str] = {}
    keys: dict[str, str] = {}
    for section, items in (("agents", agents), ("resource_servers", servers)):
        for index, item in enumerate(items):
            here = f"{section}[{index}] (id {item.id!r})"
            if item.id in ids:
                raise ConfigError(f"{source}: {here}: duplicate id, already used by {ids[item.id]}")
            if item.public_jwk is None:  # a keyless SPIFFE agent
                ids[item.id] = here
                continue
            # Two entries sharing a key could sign as each other: almost surely a copy-paste slip.
            thumbprint = jwk_thumbprint(item.public_jwk)
            if thumbprint in keys:
                raise ConfigError(f"{source}: {here}: same public key as {keys[thumbprint]}")
            ids[item.id] = keys[thumbprint] = here


def _load_document(text: str, source: str) -> dict:
    data = load_yaml(text, source)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping with 'agents' and 'resource_servers' lists")
    unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {', '.join(unknown)}")
    return data


def _parse_denied(source: str, data: dict) -> frozenset[str]:
    """The ``denied_spiffe_ids`` list: well-formed SPIFFE ids, compared exactly."""
    entries = data.get("denied_spiffe_ids")
    if entries is None:
        return frozenset()
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: 'denied_spiffe_ids' must be a list of spiffe:// ids")
    for index, value in enumerate(entries):
        problem = spiffe_id_problem(value)
        if problem:
            raise ConfigError(f"{source}: denied_spiffe_ids[{index}] {problem}")
    return frozenset(entries)


def _parse_document(text: str, source: str) -> tuple[dict, tuple[Agent, ...], tuple[ResourceServer, ...]]:
    data = _load_document(text, source)
    agents = tuple(_parse_section(source, data, "agents", _agent_from_entry))
    servers = tuple(_parse_section(source, data, "resource_servers", _server_from_entry))
    _check_unique(source, agents, servers)
    return data, agents, servers


def _read(path: Path) -> str:
    return read_trusted(path, "agents file") or ""


def _parse_file(path: Path) -> tuple[tuple[Agent, ...], tuple[ResourceServer, ...], frozenset[str]]:
    data, agents, servers = _parse_document(_read(path), str(path))
    return agents, servers, _parse_denied(str(path), data)


class _Snapshot:
    __slots__ = ("agents", "resource_servers", "agent_by_id", "server_by_id", "denied", "disabled_by_id")

    def __init__(self, agents: tuple[Agent, ...], servers: tuple[ResourceServer, ...],
                 denied: frozenset[str] = frozenset()) -> None:
        # A denied id is not an agent at all: not to authenticate, delegate, be granted or owned.
        # A disabled one neither, but it is kept apart so its assertions get a clear 403.
        self.agents = tuple(a for a in agents if a.id not in denied and not a.disabled)
        self.disabled_by_id = {a.id: a for a in agents if a.disabled and a.id not in denied}
        self.resource_servers = servers
        self.agent_by_id = {a.id: a for a in self.agents}
        self.server_by_id = {s.id: s for s in servers}
        self.denied = denied


class Registry:
    """Registered agents and resource servers, with their parsed public keys."""

    def __init__(
        self,
        agents: Iterable[Agent] = (),
        resource_servers: Iterable[ResourceServer] = (),
        *,
        path: Path | None = None,
        denied_spiffe_ids: Iterable[str] = (),
    ) -> None:
        agents, resource_servers = tuple(agents), tuple(resource_servers)
        _check_unique(str(path or "registry"), agents, resource_servers)
        self.path = path
        # A broken version is reported once; its next edit is tried again.
        self._watched = Watched(lambda: (path,) if path is not None else (), retry_broken=False)
        # Swapped as one object so a reload never shows half of the old and half of the new file.
        self._snapshot = _Snapshot(agents, resource_servers, frozenset(denied_spiffe_ids))
        # Agent ids the last reload took away (removed from the file or denied): their grants end.
        self.last_removed: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: Path) -> Registry:
        """Read the agents file; a missing file is an empty registry, a malformed one a ConfigError."""
        path = Path(path)
        watched = Watched(lambda: (path,), retry_broken=False)
        agents, servers, denied = watched.load(lambda: _parse_file(path))
        registry = cls(agents, servers, path=path, denied_spiffe_ids=denied)
        registry._watched = watched
        return registry

    def reload_if_changed(self) -> bool:
        """Re-read the file when its mtime (or size or inode) changed; True when the data was replaced.

        :attr:`last_removed` then names the agents the new version took away (removed, or
        denied): the caller ends their grants. A broken new version raises ConfigError once
        and the previous data stays in force; the next change of the file is tried again.
        """
        if self.path is None:
            return False
        parsed = self._watched.reload(lambda: _parse_file(self.path))
        if parsed is None:
            return False
        agents, servers, denied = parsed
        before = self._snapshot
        self._snapshot = _Snapshot(agents, servers, denied)
        self.last_removed = frozenset(before.agent_by_id) - frozenset(self._snapshot.agent_by_id)
        return True

    def is_denied(self, spiffe_id: str) -> bool:
        """True when the agents file's ``denied_spiffe_ids`` lists this id."""
        return spiffe_id in self._snapshot.denied

    @property
    def agents(self) -> tuple[Agent, ...]:
        return self._snapshot.agents

    @property
    def resource_servers(self) -> tuple[ResourceServer, ...]:
        return self._snapshot.resource_servers

    def agent(self, id: str) -> Agent | None:
        """The agent with this id, or None."""
        return self._snapshot.agent_by_id.get(id)

    def disabled_agent(self, id: str) -> Agent | None:
        """The agent with this id if the agents file marks it ``disabled: true``, or None."""
        return self._snapshot.disabled_by_id.get(id)

    @property
    def disabled(self) -> tuple[Agent, ...]:
        """The agents marked ``disabled: true`` (not among :attr:`agents`)."""
        return tuple(self._snapshot.disabled_by_id.values())

    def resource_server(self, id: str) -> ResourceServer | None:
        """The resource server with this id, or None."""
        return self._snapshot.server_by_id.get(id)


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=4096, allow_unicode=True)


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def _after_last_agent(text: str) -> int | None:
    """Where a new entry goes in the text: after the last content line of a block ``agents:`` list."""
    root = compose_yaml(text)
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if key.value == "agents" and isinstance(value, yaml.SequenceNode) and not value.flow_style:
            # The node ends where the next key starts; step back over blank and comment lines.
            lines = text[: value.end_mark.index].splitlines(keepends=True)
            while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
                lines.pop()
            return sum(map(len, lines))
    return None


def _appended_text(existing: str, data: dict, entry: dict) -> str:
    """The new file text: the entry inserted as text when that parses to exactly the
    intended document (so the operator's comments and layout survive), else a re-dump."""
    expected = copy.deepcopy(data)
    expected["agents"] = [*(expected.get("agents") or []), entry]
    block = _dump([entry])
    candidates = []
    at = _after_last_agent(existing)
    if at is not None:
        head, tail = existing[:at], existing[at:]
        head = head if not head or head.endswith("\n") else head + "\n"
        candidates += [head + _indent(block, n) + tail for n in (0, 2, 4)]
    base = existing if not existing or existing.endswith("\n") else existing + "\n"
    candidates += [base + "agents:\n" + _indent(block, n) for n in (2, 0)]
    return _first_faithful(candidates, expected)


def _atomic_write(path: Path, text: str) -> None:
    """Write through a temp file in the same folder and os.replace, so readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644  # public keys only
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def add_agent(path: Path, *, id: str, owner: str | None, team: str | None, public_jwk: dict,  # noqa: F811
              can_delegate: bool = False) -> Agent:
    """Register an agent in the agents file (created if missing) and return it.

    Refuses (ConfigError) a duplicate id, a key already registered, a private key, or a
    broken existing file; the file is replaced atomically.
    """
    path = Path(path)
    entry: dict[str, Any] = {"id": id}
    if owner is not None:
        entry["owner"] = owner
    if team is not None:
        entry["team"] = team
    if can_delegate:
        entry["can_delegate"] = True
    entry["public_key"] = copy.deepcopy(public_jwk)
    try:
        agent = _agent_from_entry(entry)
    except ValueError as exc:
        raise ConfigError(f"{path}: new agent {id!r}: {exc}") from None
    existing = _read(path)
    data, agents, servers = _parse_document(existing, str(path))
    if any(item.id == agent.id for item in (*agents, *servers)):
        raise ConfigError(f"{path}: an agent or resource server with id {agent.id!r} already exists")
    text = _appended_text(existing, data, entry)
    _parse_document(text, str(path))  # the whole new file must still load (e.g. key reuse)
    _atomic_write(path, text)
    return agent


def set_disabled(path: Path, agent_id: str, disabled: bool) -> bool:
    """Mark agent ``agent_id`` ``disabled: true`` (or ``false``) in the agents file, the source
    of truth the brokers reload (within about 2 s: its disabled agent is refused at once and
    what it holds is ended). The entry's line is edited in place when that parses to exactly
    the intended document (comments and layout survive), else the file is re-dumped; the file
    is replaced atomically. Returns whether anything changed; ConfigError for an unknown id or
    a broken file."""
    path = Path(path)
    existing = _read(path)
    data, agents, _servers = _parse_document(existing, str(path))
    if not any(a.id == agent_id for a in agents):
        raise ConfigError(f"{path}: no agent {agent_id!r}")
    expected = copy.deepcopy(data)
    for entry in expected.get("agents") or []:
        if isinstance(entry, dict) and entry.get("id") == agent_id:
            if bool(entry.get("disabled", False)) == disabled:
                return False
            entry["disabled"] = disabled
    text = _disabled_text(existing, agent_id, disabled, expected)
    _parse_document(text, str(path))
    _atomic_write(path, text)
    return True


def _disabled_text(existing: str, agent_id: str, disabled: bool, expected: dict) -> str:
    """The agents file's text with the entry's ``disabled`` set (see :func:`set_disabled`)."""
    word = "true" if disabled else "false"
    candidates = []
    root = compose_yaml(existing)
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value != "agents" or not isinstance(value, yaml.SequenceNode):
                continue
            for item in value.value:
                if not isinstance(item, yaml.MappingNode) or item.flow_style:
                    continue
                pairs = {k.value: (k, v) for k, v in item.value if isinstance(k, yaml.ScalarNode)}
                if pairs.get("id", (None, None))[1] is None or pairs["id"][1].value != agent_id:
                    continue
                if "disabled" in pairs:
                    v = pairs["disabled"][1]
                    candidates.append(existing[: v.start_mark.index] + word + existing[v.end_mark.index:])
                else:
                    k, v = pairs["id"]
                    candidates.append(existing[: v.end_mark.index] + "\n" + " " * k.start_mark.column
                                      + f"disabled: {word}" + existing[v.end_mark.index:])
    return _first_faithful(candidates, expected)


def add_resource_server(path: Path, *, id: str, public_jwk: dict, audiences: Iterable[str] | None = None) -> ResourceServer:  # noqa: F811 - the JWK, not the helper
    """Register a resource server (it may then introspect and revoke the tokens meant for
    its ``audiences``: target names, or ``["*"]`` for a gateway; None means its own id).

    Same refusals as :func:`add_agent`; the file is rewritten atomically (as YAML, so
    comments in it are not kept).
    """
    path = Path(path)
    entry: dict[str, Any] = {"id": id, "public_key": copy.deepcopy(public_jwk)}
    if audiences is not None:
        entry["audiences"] = list(audiences)
    try:
        server = _server_from_entry(entry)
    except ValueError as exc:
        raise ConfigError(f"{path}: new resource server {id!r}: {exc}") from None
    data, agents, servers = _parse_document(_read(path), str(path))
    if any(item.id == server.id for item in (*agents, *servers)):
        raise ConfigError(f"{path}: an agent or resource server with id {server.id!r} already exists")
    expected = copy.deepcopy(data)
    expected["resource_servers"] = [*(expected.get("resource_servers") or []), entry]
    text = _dump(expected)
    _parse_document(text, str(path))
    _atomic_write(path, text)
    return server



# --- SPIFFE ids ----------------------------------------------------------------------


def spiffe_id_problem(value: Any) -> str | None:
    """What is wrong with a SPIFFE id (``spiffe://trust-domain/path``), or None."""
    if not isinstance(value, str) or not value.startswith(SPIFFE_SCHEME):
        return "must be a spiffe:// id"
    rest = value[len(SPIFFE_SCHEME):]
    domain, slash, path = rest.partition("/")
    if not _TRUST_DOMAIN.fullmatch(domain):
        return "must have a trust domain of lower-case letters, digits, '.', '-' or '_'"
    if not slash or not path:
        return "must have a path after the trust domain (a workload id)"
    for segment in path.split("/"):
        if not _PATH_SEGMENT.fullmatch(segment) or segment in (".", ".."):
            return "has an empty, '.', '..' or non [A-Za-z0-9._-] path segment"
    return None


def trust_domain_of(spiffe_id: str) -> str:
    """The trust domain of a well-formed SPIFFE id."""
    return spiffe_id[len(SPIFFE_SCHEME):].split("/", 1)[0]


def _first_faithful(candidates: list[str], expected: object) -> str:
    """The first edited text that reads back as ``expected`` (keeping the file's comments and
    layout), else ``expected`` dumped anew."""
    for text in candidates:
        try:
            if load_yaml(text, "candidate") == expected:
                return text
        except ConfigError:
            continue
    return _dump(expected)
