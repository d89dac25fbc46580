"""Agent identity: the registry of agents and resource servers, and their signed assertions.

Agents hold no shared secret. Each one is registered with a public JWK (Ed25519 or P-256)
and authenticates every call with ``Authorization: Bearer <JWT>`` signed by its private
key: ``iss`` = ``sub`` = its id, ``aud`` = the broker, ``iat``, ``exp`` (at most five
minutes later) and a ``jti`` that may be used once. Resource servers that call
introspection authenticate the same way, from their own section of the agents file.

Verification runs on every API call, so keys are parsed once (when the registry loads),
the token is parsed once (``jose.split_jws`` with orjson) and its signature checked on
those same segments (``jose.verify_jws_signature``, no second parse by pyjwt), and the
only I/O is one ``SET NX`` in Redis that remembers the ``jti``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import yaml
from jwt.api_jws import PyJWS
from redis.exceptions import RedisError

from .clock import SystemClock
from .errors import ConfigError, InvalidRequest, Unauthenticated, Unavailable
from .filemodes import check_not_writable
from . import jose
from .jose import (  # noqa: F401 - re-exported: callers import key helpers from here
    ALLOWED_ALGS,
    DELEGATION_TYP,
    KINDS as _KINDS,
    PRIVATE_MEMBERS as _PRIVATE_MEMBERS,
    DpopProof,
    HeaderNotAllowed,
    JoseError,
    MalformedJws,
    PrivateKeyMaterial,
    UnusableKey,
    check_header,
    finite_number as _finite_number,
    jwk_thumbprint,
    make_assertion,
    make_delegation,
    parse_public_jwk as _parse_public_jwk,
    public_jwk,
    split_jws,
    uncovered,
    verify_dpop_proof,
    verify_jws_signature,
)

log = logging.getLogger("jitgate.identity")

ID_PATTERN = re.compile(r"[A-Za-z0-9._:/@-]{1,128}")
_ID_RULE = "1 to 128 characters of A-Z a-z 0-9 . _ : / @ -"

_AGENT_KEYS = frozenset({"id", "owner", "team", "public_key", "can_delegate"})
_SERVER_KEYS = frozenset({"id", "public_key", "audiences"})
# A resource server's ``audiences``: the token audiences (target names) it may introspect
# and revoke, or this alone for a central gateway that fronts every target.
GATEWAY_AUDIENCE = "*"
_MAX_AUDIENCES = 100
# ``denied_spiffe_ids``: SPIFFE ids refused whatever their credential, listed entry or not.
_TOP_KEYS = frozenset({"agents", "resource_servers", "denied_spiffe_ids"})

_PUBLIC_ONLY = "agents file must hold public keys only"
# No ':' so that "jti:{iss}:{jti}" cannot mean two things (ids may contain ':').
_JTI = re.compile(r"[\x21-\x39\x3b-\x7e]{1,128}")
_REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "exp", "jti")
# One answer for "no such agent" and "not signed by its key" (unknown id, wrong algorithm for
# the registered key, other kid, bad signature): a caller must not learn which ids exist.
BAD_ASSERTION = "invalid assertion: unknown issuer or a signature that does not verify"
BAD_SVID = "JWT-SVID not accepted: unregistered or denied SPIFFE id, or a signature that does not verify"


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


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


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


def generate_key(kind: str = "Ed25519") -> tuple[bytes, dict]:
    """:func:`broker.jose.generate_key`, refusing a kind other than Ed25519 or P-256 with ConfigError."""
    try:
        return jose.generate_key(kind)
    except UnusableKey as exc:
        raise ConfigError(str(exc)) from None


def load_private_key(pem: bytes | str) -> Any:
    """:func:`broker.jose.load_private_key`, refusing anything but an unencrypted Ed25519 or
    P-256 PEM with ConfigError."""
    try:
        return jose.load_private_key(pem)
    except UnusableKey as exc:
        raise ConfigError(str(exc)) from None


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
    if "public_key" not in entry:
        spiffe_problem = spiffe_id_problem(ident)
        if spiffe_problem:
            raise ValueError(f"'id' {spiffe_problem}")
        return Agent(id=ident, owner=owner, team=team, public_jwk=None, kid="", can_delegate=can_delegate)
    key, kid = _entry_key(entry)
    return Agent(
        id=ident,
        owner=owner,
        team=team,
        public_jwk=copy.deepcopy(entry["public_key"]),
        kid=kid,
        can_delegate=can_delegate,
        _key=key,
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
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
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


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _read(path: Path) -> str:
    check_not_writable(path, "agents file")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None


class _Snapshot:
    __slots__ = ("agents", "resource_servers", "agent_by_id", "server_by_id", "denied")

    def __init__(self, agents: tuple[Agent, ...], servers: tuple[ResourceServer, ...],
                 denied: frozenset[str] = frozenset()) -> None:
        # A denied id is not an agent at all: not to authenticate, delegate, be granted or owned.
        self.agents = tuple(a for a in agents if a.id not in denied)
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
        self._stamp: tuple | None = None
        # Swapped as one object so a reload never shows half of the old and half of the new file.
        self._snapshot = _Snapshot(agents, resource_servers, frozenset(denied_spiffe_ids))
        # Agent ids the last reload took away (removed from the file or denied): their grants end.
        self.last_removed: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: Path) -> Registry:
        """Read the agents file; a missing file is an empty registry, a malformed one a ConfigError."""
        path = Path(path)
        stamp = _stamp(path)  # before reading, so a change during the read is seen next time
        data, agents, servers = _parse_document(_read(path), str(path))
        registry = cls(agents, servers, path=path, denied_spiffe_ids=_parse_denied(str(path), data))
        registry._stamp = stamp
        return registry

    def reload_if_changed(self) -> bool:
        """Re-read the file when its mtime (or size or inode) changed; True when the data was replaced.

        :attr:`last_removed` then names the agents the new version took away (removed, or
        denied): the caller ends their grants. A broken new version raises ConfigError once
        and the previous data stays in force; the next change of the file is tried again.
        """
        if self.path is None:
            return False
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        data, agents, servers = _parse_document(_read(self.path), str(self.path))
        before = self._snapshot
        self._snapshot = _Snapshot(agents, servers, _parse_denied(str(self.path), data))
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
    try:
        root = yaml.compose(text, Loader=_StrictLoader)
    except yaml.YAMLError:
        return None
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
    for text in candidates:
        try:
            if yaml.load(text, Loader=_StrictLoader) == expected:  # noqa: S506 - a SafeLoader subclass
                return text
        except yaml.YAMLError:
            continue
    return _dump(expected)


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


# --- verification ---------------------------------------------------------------------


def _sole_audience(aud: Any, issuer: str) -> bool:
    """Whether ``aud`` names this broker and nothing else: the issuer as a plain string.

    RFC 7523bis (section 3) makes the authorization server's issuer identifier the sole
    audience value of a client assertion, to close the audience-injection attack where
    an assertion meant for another server also lists this one. A one-element list would
    be harmless, but no jitgate signer makes one, so only the string form is accepted.
    """
    return isinstance(aud, str) and aud == issuer


def _bearer_token(authorization: str | None) -> str:
    if not isinstance(authorization, str) or not authorization.strip():
        raise Unauthenticated("missing bearer assertion")
    parts = authorization.split(None, 1)
    if parts[0].lower() != "bearer":
        raise Unauthenticated("authorization must use the Bearer scheme")
    if len(parts) == 1 or not parts[1].strip():
        raise Unauthenticated("missing bearer assertion")
    return parts[1].strip()


_DUMMY_KEYS: dict[str, Any] = {}


def _dummy_key(alg: str) -> Any:
    """A public key of ``alg``'s kind that matches nobody's private key: verifying against it
    costs what verifying against a registered key costs, and always fails."""
    key = _DUMMY_KEYS.get(alg)
    if key is None:
        kind = "Ed25519" if alg == "EdDSA" else "P-256"
        key = _DUMMY_KEYS[alg] = _parse_public_jwk(generate_key(kind)[1])[0]
    return key


class InvalidDpopProof(Unauthenticated):
    """A DPoP proof (RFC 9449) that is missing, malformed, for another request, or replayed."""

    code, title = "invalid-dpop-proof", "Invalid DPoP proof"


class AssertionVerifier:
    """Checks agent (and resource server) assertions; each ``jti`` is accepted once."""

    def __init__(
        self,
        registry: Registry,
        line: Any,
        prefix: str,
        *,
        audience: str,
        clock: Any = SystemClock(),  # stateless, so one shared default is fine
        max_lifetime_s: int = 300,
        leeway_s: int = 30,
        spiffe: "SpiffeBundle | None" = None,
        dpop_max_age_s: int = 60,
    ) -> None:
        if not isinstance(audience, str) or not audience:
            raise ConfigError("the assertion audience (the broker's issuer URL) must be set")
        if max_lifetime_s <= 0 or leeway_s < 0:
            raise ConfigError("max_lifetime_s must be positive and leeway_s not negative")
        self._registry = registry
        self._line = line  # a RedisLine: the jti check is on every request's way
        self._jti_prefix = f"{prefix}jti:"
        self._audience = audience
        self._clock = clock
        self._max_lifetime = max_lifetime_s
        self._leeway = leeway_s
        self._spiffe = spiffe
        self._dpop_prefix = f"{prefix}dpop:"
        self._dpop_max_age = dpop_max_age_s

    async def verify_agent(self, authorization: str | None) -> tuple[Agent, dict]:
        """The agent that signed the bearer assertion (or presented a JWT-SVID of the trusted
        SPIFFE domain) and its verified claims; Unauthenticated otherwise."""
        if self._spiffe is not None:
            token = _bearer_token(authorization)
            svid = self._spiffe.claims_if_svid(token)
            if svid is not None:
                iss = svid.get("iss")
                keyed = self._registry.agent(iss) if isinstance(iss, str) and iss == svid.get("sub") else None
                if keyed is None or keyed.public_jwk is None:
                    return self._spiffe.verify(token, self._registry, self._audience, self._clock.now())
        return await self._verify(authorization, self._registry.agent)

    async def verify_dpop(self, proof: str | None, *, method: str, url: str) -> str:
        """The RFC 7638 thumbprint (``jkt``) of the key that signed a valid DPoP proof for
        this request; each proof is accepted once. Unauthenticated otherwise."""
        if not isinstance(proof, str) or not proof.strip():
            raise InvalidDpopProof("missing DPoP proof")
        now = self._clock.now()
        try:
            checked = verify_dpop_proof(proof.strip(), method=method, url=url, now=now,
                                        max_age_s=self._dpop_max_age, leeway_s=self._leeway)
        except JoseError as exc:
            raise InvalidDpopProof(str(exc)) from None
        # Remembered for as long as the proof would still pass the iat window, plus leeway.
        ttl_ms = max(1, math.ceil((checked.iat + self._dpop_max_age + self._leeway - now) * 1000))
        try:
            fresh = await self._line.execute("SET", f"{self._dpop_prefix}{checked.jkt}:{checked.jti}", "1", "NX", "PX", ttl_ms)
        except RedisError:
            raise Unavailable("replay protection unavailable") from None
        if not fresh:
            raise InvalidDpopProof("DPoP proof replayed (jti already used)")
        return checked.jkt

    async def verify_resource_server(self, authorization: str | None) -> tuple[ResourceServer, dict]:
        """The resource server that signed the bearer assertion and its claims; Unauthenticated otherwise."""
        return await self._verify(authorization, self._registry.resource_server)

    async def _verify(self, authorization: str | None, lookup: Callable[[str], Any]) -> tuple[Any, dict]:
        token = _bearer_token(authorization)
        try:
            # The claims are trusted only once the signature below checks out.
            header, claims = split_jws(token, "assertion", orjson.loads)
            alg = check_header(header)
        except MalformedJws:
            raise Unauthenticated("malformed assertion") from None
        except HeaderNotAllowed as exc:
            raise Unauthenticated(str(exc)) from None
        iss = claims.get("iss")
        if iss is None:
            raise Unauthenticated("assertion lacks the 'iss' claim")
        principal = lookup(iss) if isinstance(iss, str) else None
        # Unknown, keyless (SVID-only), other algorithm, other kid, bad signature: the same
        # status, code and detail, and (for an unknown id) a signature check against a dummy
        # key all the same, so neither the answer nor its timing says whether the id exists.
        known = (principal is not None and principal.public_jwk is not None and alg == principal.alg
                 and ("kid" not in header or header["kid"] == principal.kid))
        key = principal._key if known else _dummy_key(alg)
        if not verify_jws_signature(key, alg, token) or not known:
            raise Unauthenticated(BAD_ASSERTION)

        ttl_ms = self._check_claims(claims, principal.id)
        key = f"{self._jti_prefix}{principal.id}:{claims['jti']}"
        try:
            fresh = await self._line.execute("SET", key, "1", "NX", "PX", ttl_ms)
        except RedisError:
            raise Unavailable("replay protection unavailable") from None
        if not fresh:
            raise Unauthenticated("assertion replayed")
        return principal, claims

    def _check_claims(self, claims: dict, principal_id: str) -> int:
        """Raise Unauthenticated for any bad claim; else the time (ms) the jti must be remembered."""
        for name in _REQUIRED_CLAIMS:
            if name not in claims:
                raise Unauthenticated(f"assertion lacks the {name!r} claim")
        if claims["sub"] != principal_id:
            raise Unauthenticated("sub must equal iss")
        if not _sole_audience(claims["aud"], self._audience):
            raise Unauthenticated("audience does not match this broker")
        iat, exp = claims["iat"], claims["exp"]
        if not _finite_number(iat) or not _finite_number(exp):
            raise Unauthenticated("iat and exp must be numbers")
        if exp <= iat:
            raise Unauthenticated("assertion expires before it is issued")
        if exp - iat > self._max_lifetime:
            raise Unauthenticated(f"assertion lifetime exceeds {self._max_lifetime} s")
        now = self._clock.now()
        if iat > now + self._leeway:
            raise Unauthenticated("assertion issued in the future")
        if now >= exp + self._leeway:
            raise Unauthenticated("assertion expired")
        if "nbf" in claims:
            nbf = claims["nbf"]
            if not _finite_number(nbf) or nbf > now + self._leeway:
                raise Unauthenticated("assertion not yet valid")
        jti = claims["jti"]
        if not isinstance(jti, str) or not _JTI.fullmatch(jti):
            raise Unauthenticated("jti must be 1 to 128 printable characters without ':'")
        # Relative to the injected clock (not PXAT against Redis's clock): the jti outlives the
        # last moment this verifier would accept the assertion, plus one leeway for other
        # replicas whose clocks run behind.
        return max(1, math.ceil((exp + 2 * self._leeway - now) * 1000))


# --- SPIFFE JWT-SVIDs -----------------------------------------------------------------

SPIFFE_SCHEME = "spiffe://"
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
# The JWT-SVID specification allows these; HS* and none never.
_SVID_ALGS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
_EC_ALG_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
# JWT-SVIDs are bearer credentials reused until they expire (SPIFFE intends it), so their
# remaining lifetime is bounded instead of their jti being single-use.
SVID_MAX_REMAINING_S = 3600
_BUNDLE_CHECK_S = 2.0


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


class SpiffeBundle:
    """The JWT-SVID keys of one SPIFFE trust domain, from a bundle file (a JWKS as SPIRE
    writes it: keys with ``use: jwt-svid`` and a ``kid``; ``x509-svid`` keys are ignored).

    The file is re-read when it changes (checked every two seconds at most), so keys can
    rotate; a broken new version is logged and the previous keys stay in force.
    """

    def __init__(self, path: Path, trust_domain: str) -> None:
        if _TRUST_DOMAIN.fullmatch(trust_domain or "") is None:
            raise ConfigError(f"JITGATE_SPIFFE_TRUST_DOMAIN {trust_domain!r} is not a SPIFFE trust domain name")
        self.path = Path(path)
        self.trust_domain = trust_domain
        self._jws = PyJWS()
        self._checked_at = time.monotonic()
        self._stamp = _stamp(self.path)
        self._keys = self._load()

    @classmethod
    def from_settings(cls, settings: Any) -> "SpiffeBundle | None":
        """The bundle the settings name, or None when SPIFFE is not configured."""
        path = getattr(settings, "spiffe_bundle", None)
        if not path:
            return None
        return cls(path, settings.spiffe_trust_domain)

    def _load(self) -> dict[str, tuple[Any, str]]:
        where = f"JITGATE_SPIFFE_BUNDLE {self.path}"
        check_not_writable(self.path, "SPIFFE trust bundle")
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: not a readable JSON bundle ({exc.__class__.__name__})") from None
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list):
            raise ConfigError(f"{where}: must be a JWKS with a 'keys' list")
        parsed: dict[str, tuple[Any, str]] = {}
        for index, jwk in enumerate(keys):
            if not isinstance(jwk, dict):
                raise ConfigError(f"{where}: keys[{index}] must be a JWK object")
            if jwk.get("use", "jwt-svid") != "jwt-svid":
                continue  # x509-svid roots are for TLS, not for JWT-SVIDs
            kid = jwk.get("kid")
            if not isinstance(kid, str) or not kid:
                raise ConfigError(f"{where}: keys[{index}] is a jwt-svid key without a 'kid'")
            if _PRIVATE_MEMBERS.intersection(jwk):
                raise ConfigError(f"{where}: keys[{index}] holds private key material")
            try:
                pyjwk = jwt.PyJWK({k: v for k, v in jwk.items() if k != "use"})
            except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
                raise ConfigError(f"{where}: keys[{index}] (kid {kid!r}) is not a usable key: {exc}") from None
            if pyjwk.key_type == "RSA":
                if pyjwk.key.key_size < 2048:
                    raise ConfigError(f"{where}: keys[{index}] (kid {kid!r}) is an RSA key under 2048 bits")
                family = "RSA"
            elif pyjwk.key_type == "EC" and pyjwk.key.curve.name in _EC_ALG_BY_CURVE:
                family = _EC_ALG_BY_CURVE[pyjwk.key.curve.name]
            else:
                raise ConfigError(f"{where}: keys[{index}] (kid {kid!r}) must be an RSA or EC (P-256/384/521) key")
            parsed[kid] = (pyjwk.key, family)
        if not parsed:
            raise ConfigError(f"{where}: holds no jwt-svid keys")
        return parsed

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < _BUNDLE_CHECK_S:
            return
        self._checked_at = now
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._keys = self._load()
        except ConfigError as exc:
            log.error("SPIFFE bundle reload refused, keeping the previous keys: %s", exc.detail)

    @staticmethod
    def claims_if_svid(token: str) -> dict | None:
        """The unverified claims when ``token`` looks like a JWT-SVID (``sub`` is a spiffe:// id)."""
        try:
            _header, claims = split_jws(token)
        except JoseError:
            return None
        sub = claims.get("sub")
        return claims if isinstance(sub, str) and sub.startswith(SPIFFE_SCHEME) else None

    def verify(self, token: str, registry: Registry, audience: str, now: float, leeway_s: int = 30) -> tuple[Agent, dict]:
        """The registered agent a JWT-SVID names (its SPIFFE id), after checking signature,
        trust domain, audience and times; Unauthenticated otherwise.

        The SPIFFE id must be listed in the agents file (which gives it its owner and team)
        and not under ``denied_spiffe_ids``: a valid SVID of an unlisted workload is refused.
        """
        self._refresh()
        try:
            header, claims = split_jws(token)
        except JoseError:
            raise Unauthenticated("malformed JWT-SVID") from None
        try:
            alg = check_header(header, _SVID_ALGS)
        except HeaderNotAllowed as exc:
            raise Unauthenticated(f"JWT-SVID {exc}") from None
        sub = claims.get("sub")
        problem = spiffe_id_problem(sub)
        if problem:
            raise Unauthenticated(f"JWT-SVID sub {problem}")
        domain = trust_domain_of(sub)
        if domain != self.trust_domain:
            raise Unauthenticated(f"JWT-SVID is from trust domain '{domain}', not the trusted '{self.trust_domain}'")
        kid = header.get("kid")
        if kid is None and len(self._keys) == 1:
            kid = next(iter(self._keys))
        entry = self._keys.get(kid) if isinstance(kid, str) else None
        if entry is None:
            raise Unauthenticated(BAD_SVID)
        key, family = entry
        if not (alg == family or (family == "RSA" and alg[:2] in ("RS", "PS"))):
            raise Unauthenticated(BAD_SVID)
        try:
            self._jws.decode_complete(token, key, algorithms=[alg])
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthenticated(BAD_SVID) from None
        aud = claims.get("aud")
        if not (aud == audience or (isinstance(aud, list) and audience in aud)):
            raise Unauthenticated("JWT-SVID audience does not include this broker")
        exp = claims.get("exp")
        if not _finite_number(exp):
            raise Unauthenticated("JWT-SVID lacks a numeric 'exp'")
        if now >= exp + leeway_s:
            raise Unauthenticated("JWT-SVID expired")
        if exp - now > SVID_MAX_REMAINING_S:
            raise Unauthenticated(f"JWT-SVID lives longer than {SVID_MAX_REMAINING_S} s")
        for name in ("iat", "nbf"):
            if name in claims and (not _finite_number(claims[name]) or claims[name] > now + leeway_s):
                raise Unauthenticated(f"JWT-SVID {name} is in the future")
        # Only a registered, undenied SPIFFE id is an agent: a workload the trust domain vouches
        # for but the agents file does not list (or lists under denied_spiffe_ids) is refused,
        # in the same words as a bad signature, so the answer does not say which ids are listed.
        agent = registry.agent(sub)
        if agent is None:
            log.warning("refused a valid JWT-SVID for %s: %s", sub,
                        "denied in the agents file" if registry.is_denied(sub) else "not registered in the agents file")
            raise Unauthenticated(BAD_SVID)
        return agent, claims


# --- delegation chains ----------------------------------------------------------------

MAX_DELEGATION_LIFETIME_S = 7 * 86400
_SCOPE_ENTRY = re.compile(r"[A-Za-z0-9._:/@-]{1,200}\*?|\*")
_MAX_SCOPE_ENTRIES = 50
_MAX_DELEGATION_REASON = 500


class InvalidDelegation(InvalidRequest):
    """A delegation chain that does not hold; ``detail`` names the bad link."""

    code, title = "invalid-delegation", "Invalid delegation chain"


@dataclass(frozen=True)
class DelegationLink:
    """One verified link: ``delegator`` let ``delegate`` ask for ``actions`` on ``targets``."""

    index: int  # 1-based, as people count
    delegator: str
    delegate: str
    actions: tuple[str, ...]
    targets: tuple[str, ...]
    issued_at: int
    expires_at: int
    jti: str
    reason: str | None = None

    def to_dict(self) -> dict:
        d = {"link": self.index, "delegator": self.delegator, "delegate": self.delegate,
             "actions": list(self.actions), "targets": list(self.targets),
             "issued_at": self.issued_at, "expires_at": self.expires_at, "jti": self.jti}
        if self.reason:
            d["reason"] = self.reason
        return d


def _scope(claims: dict, name: str, where: str) -> tuple[str, ...]:
    value = claims.get(name)
    if not isinstance(value, list) or not value or len(value) > _MAX_SCOPE_ENTRIES:
        raise InvalidDelegation(f"{where}: '{name}' must be a list of 1 to {_MAX_SCOPE_ENTRIES} names")
    for item in value:
        if not isinstance(item, str) or not _SCOPE_ENTRY.fullmatch(item):
            raise InvalidDelegation(f"{where}: '{name}' holds {item!r}, which is not a name or a prefix ending in '*'")
    return tuple(value)


def verify_delegation_chain(
    chain: Iterable[str],
    *,
    registry: Registry,
    requester: str,
    action: str,
    target: str,
    audience: str,
    now: float,
    max_depth: int,
    leeway_s: int = 30,
) -> list[DelegationLink]:
    """Verify a delegation chain, root first, whose last link delegates to ``requester``.

    Every link must be signed by its delegator's registered key (``typ``
    jitgate-delegation+jwt, ``aud`` this broker), the delegator registered with
    ``can_delegate: true``, unexpired, the delegator of each link the delegate of the one
    before, no agent twice (no cycles), each link's actions and targets within the
    previous link's, at most ``max_depth`` links, and the request's action and target
    within the last link. Raises :class:`InvalidDelegation` naming the first bad link.
    Cedar's ``delegate`` decision per link is the lifecycle's to ask.
    """
    chain = list(chain)
    if len(chain) > max_depth:
        raise InvalidDelegation(f"delegation link {max_depth + 1}: the chain is deeper than the {max_depth} links allowed")
    links: list[DelegationLink] = []
    seen: set[str] = set()
    for index, token in enumerate(chain, start=1):
        where = f"delegation link {index}"
        try:
            header, claims = split_jws(token, "link")
        except JoseError:
            raise InvalidDelegation(f"{where}: not a compact JWS") from None
        if header.get("typ") != DELEGATION_TYP:
            raise InvalidDelegation(f"{where}: typ must be {DELEGATION_TYP}")
        try:
            alg = check_header(header)
        except HeaderNotAllowed as exc:
            raise InvalidDelegation(f"{where}: {exc}") from None
        iss, sub = claims.get("iss"), claims.get("sub")
        if not isinstance(iss, str) or not ID_PATTERN.fullmatch(iss):
            raise InvalidDelegation(f"{where}: 'iss' must name the delegating agent")
        if not isinstance(sub, str) or not ID_PATTERN.fullmatch(sub):
            raise InvalidDelegation(f"{where}: 'sub' must name the agent delegated to")
        where = f"delegation link {index} ({iss} -> {sub})"
        delegator = registry.agent(iss)
        # Unknown, keyless, other algorithm or kid, bad signature: one answer (and a signature
        # check either way), so a chain cannot be used to learn which agent ids exist.
        known = (delegator is not None and delegator.public_jwk is not None and alg == delegator.alg
                 and ("kid" not in header or header["kid"] == delegator.kid))
        if not verify_jws_signature(delegator._key if known else _dummy_key(alg), alg, token) or not known:
            raise InvalidDelegation(f"{where}: signature does not verify against '{iss}''s registered key")
        if not delegator.can_delegate:
            raise InvalidDelegation(f"{where}: agent '{iss}' may not delegate (can_delegate is not set in the agents file)")
        if not _sole_audience(claims.get("aud"), audience):
            raise InvalidDelegation(f"{where}: audience is not this broker (aud must be its issuer alone, a string)")
        iat, exp, jti = claims.get("iat"), claims.get("exp"), claims.get("jti")
        if not _finite_number(iat) or not _finite_number(exp) or exp <= iat:
            raise InvalidDelegation(f"{where}: needs numeric 'iat' and 'exp', exp after iat")
        if exp - iat > MAX_DELEGATION_LIFETIME_S:
            raise InvalidDelegation(f"{where}: lives longer than {MAX_DELEGATION_LIFETIME_S} s")
        if iat > now + leeway_s:
            raise InvalidDelegation(f"{where}: issued in the future")
        if now >= exp:
            raise InvalidDelegation(f"{where}: expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(exp))}")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 128:
            raise InvalidDelegation(f"{where}: needs a 'jti'")
        reason = claims.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > _MAX_DELEGATION_REASON):
            raise InvalidDelegation(f"{where}: 'reason' must be a string of at most {_MAX_DELEGATION_REASON} characters")
        actions, targets = _scope(claims, "actions", where), _scope(claims, "targets", where)

        if links and iss != links[-1].delegate:
            raise InvalidDelegation(f"{where}: delegator '{iss}' is not the delegate of link {index - 1} ('{links[-1].delegate}')")
        if not links:
            seen.add(iss)
        if sub in seen:
            raise InvalidDelegation(f"{where}: cycle, '{sub}' already appears earlier in the chain")
        seen.add(sub)
        if links:
            wider = uncovered(list(links[-1].actions), list(actions))
            if wider is not None:
                raise InvalidDelegation(f"{where}: widens the actions: '{wider}' is not within link {index - 1}'s {list(links[-1].actions)}")
            wider = uncovered(list(links[-1].targets), list(targets))
            if wider is not None:
                raise InvalidDelegation(f"{where}: widens the targets: '{wider}' is not within link {index - 1}'s {list(links[-1].targets)}")
        links.append(DelegationLink(index, iss, sub, actions, targets, int(iat), int(exp), jti, reason))

    if links:
        last = links[-1]
        where = f"delegation link {last.index} ({last.delegator} -> {last.delegate})"
        if last.delegate != requester:
            raise InvalidDelegation(f"{where}: delegates to '{last.delegate}', not to the requesting agent '{requester}'")
        if uncovered(list(last.actions), [action]) is not None:
            raise InvalidDelegation(f"{where}: the action '{action}' is outside the delegated actions {list(last.actions)}")
        if uncovered(list(last.targets), [target]) is not None:
            raise InvalidDelegation(f"{where}: the target '{target}' is outside the delegated targets {list(last.targets)}")
    return links
