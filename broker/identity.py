"""Agent identity: the registry of agents and resource servers, and their signed assertions.

Agents hold no shared secret. Each one is registered with a public JWK (Ed25519 or P-256)
and authenticates every call with ``Authorization: Bearer <JWT>`` signed by its private
key: ``iss`` = ``sub`` = its id, ``aud`` = the broker, ``iat``, ``exp`` (at most five
minutes later) and a ``jti`` that may be used once. Resource servers that call
introspection authenticate the same way, from their own section of the agents file.

Verification runs on every API call, so keys are parsed once (when the registry loads),
the token is parsed once before pyjwt checks the signature, and the only I/O is one
``SET NX`` in Redis that remembers the ``jti``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import math
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.api_jws import PyJWS
from redis.exceptions import RedisError

from .clock import SystemClock
from .errors import ConfigError, Unauthenticated, Unavailable

ID_PATTERN = re.compile(r"[A-Za-z0-9._:/@-]{1,128}")
_ID_RULE = "1 to 128 characters of A-Z a-z 0-9 . _ : / @ -"

# JWK members that only a private (or symmetric) key has: RFC 7518 sections 6.2.2, 6.3.2, 6.4.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_ONLY = "agents file must hold public keys only"
# (kty, crv) -> (JWS alg, coordinate members); nothing else is accepted.
_KINDS = {("OKP", "Ed25519"): ("EdDSA", ("x",)), ("EC", "P-256"): ("ES256", ("x", "y"))}
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n"), "oct": ("k", "kty")}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

_AGENT_KEYS = frozenset({"id", "owner", "team", "public_key", "can_delegate"})
_SERVER_KEYS = frozenset({"id", "public_key"})
_TOP_KEYS = frozenset({"agents", "resource_servers"})

ALLOWED_ALGS = frozenset({"EdDSA", "ES256"})
_MAX_TOKEN_CHARS = 8192
# The signature segment may be empty so that ``alg: none`` is refused by name, not as "malformed".
_TOKEN = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")
# No ':' so that "jti:{iss}:{jti}" cannot mean two things (ids may contain ':').
_JTI = re.compile(r"[\x21-\x39\x3b-\x7e]{1,128}")
_REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "exp", "jti")


# --- keys -----------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 section 2); ValueError otherwise."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def jwk_thumbprint(jwk: dict) -> str:
    """The RFC 7638 thumbprint: base64url SHA-256 of the required members, sorted, no spaces.

    Raises ValueError when the key type is unknown or a required member is missing.
    """
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))
    if members is None:
        raise ValueError("unsupported key type for a thumbprint")
    try:
        canonical = {name: jwk[name] for name in members}
    except KeyError as exc:
        raise ValueError(f"JWK lacks the {exc.args[0]!r} member") from None
    data = json.dumps(canonical, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return _b64url(hashlib.sha256(data.encode("utf-8")).digest())


def _parse_public_jwk(jwk: Any) -> tuple[Any, str, str]:
    """(cryptography public key, kid, JWS alg) of a public Ed25519 or P-256 JWK; ValueError otherwise."""
    if not isinstance(jwk, dict):
        raise ValueError("must be a JWK mapping")
    if _PRIVATE_MEMBERS.intersection(jwk):
        raise ValueError(_PUBLIC_ONLY)
    kind = _KINDS.get((jwk.get("kty"), jwk.get("crv")))
    if kind is None:
        raise ValueError("must be an OKP/Ed25519 or EC/P-256 public key")
    alg, coordinates = kind
    raw = {}
    for name in coordinates:
        try:
            raw[name] = _unb64url(jwk.get(name))
        except ValueError:
            raise ValueError(f"{name!r} must be base64url") from None
        if len(raw[name]) != 32:
            raise ValueError(f"{name!r} must encode 32 bytes")
    if "alg" in jwk and jwk["alg"] != alg:
        raise ValueError(f"'alg' must be {alg} for this key type")
    if "use" in jwk and jwk["use"] != "sig":
        raise ValueError("'use' must be 'sig'")
    try:
        if alg == "EdDSA":
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw["x"])
        else:
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(raw["x"], "big"), int.from_bytes(raw["y"], "big"), ec.SECP256R1()
            )
            key = numbers.public_key()  # checks that the point is on the curve
    except ValueError:
        raise ValueError("is not a valid public key") from None
    if "kid" in jwk:
        kid = jwk["kid"]
        if not isinstance(kid, str) or not 1 <= len(kid) <= 256:
            raise ValueError("'kid' must be a string of 1 to 256 characters")
    else:
        kid = jwk_thumbprint(jwk)
    return key, kid, alg


def _alg_of_private_key(private_key: Any) -> str:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, ec.SECP256R1):
        return "ES256"
    raise ConfigError("agent keys must be Ed25519 or P-256")


def generate_key(kind: str = "Ed25519") -> tuple[bytes, dict]:
    """A new agent key pair: (PKCS#8 PEM private key, public JWK with its thumbprint as ``kid``)."""
    if kind == "Ed25519":
        private_key: Any = ed25519.Ed25519PrivateKey.generate()
    elif kind == "P-256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ConfigError(f"key kind must be 'Ed25519' or 'P-256', got {kind!r}")
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, public_jwk(private_key)


def load_private_key(pem: bytes | str) -> Any:
    """The Ed25519 or P-256 private key in an unencrypted PEM; ConfigError for anything else."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError("not an unencrypted PEM private key") from None
    _alg_of_private_key(private_key)
    return private_key


def public_jwk(private_key: Any) -> dict:
    """The public JWK of an Ed25519 or P-256 key (private or public), with ``kid`` = thumbprint."""
    key = private_key.public_key() if hasattr(private_key, "private_bytes") else private_key
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        numbers = key.public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
    else:
        raise ConfigError("agent keys must be Ed25519 or P-256")
    jwk["kid"] = jwk_thumbprint(jwk)
    return jwk


def make_assertion(
    private_key: Any,
    *,
    agent_id: str,
    audience: str,
    now: float | None = None,
    lifetime_s: int = 60,
    jti: str | None = None,
    kid: str | None = None,
    extra: dict | None = None,
) -> str:
    """A signed assertion: ``iss`` = ``sub`` = agent_id, ``aud``, ``iat``, ``exp`` = iat + lifetime, ``jti``.

    ES256 for a P-256 key, EdDSA for Ed25519; ``kid`` goes in the header when given.
    ``extra`` claims are merged last (so they can override the standard ones).
    """
    if isinstance(private_key, (bytes, str)):
        private_key = load_private_key(private_key)
    alg = _alg_of_private_key(private_key)
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": agent_id,
        "sub": agent_id,
        "aud": audience,
        "iat": iat,
        "exp": iat + lifetime_s,
        "jti": secrets.token_urlsafe(16) if jti is None else jti,
    }
    if extra:
        claims.update(extra)
    return jwt.encode(claims, private_key, algorithm=alg, headers={"kid": kid} if kid else None)


# --- registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class Agent:
    """A registered agent; ``kid`` is the JWK's ``kid`` or else its RFC 7638 thumbprint."""

    id: str
    owner: str | None
    team: str | None
    public_jwk: dict = field(hash=False)
    kid: str
    can_delegate: bool = False
    _key: Any = field(default=None, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        if self._key is None:
            object.__setattr__(self, "_key", _parse_public_jwk(self.public_jwk)[0])

    @property
    def alg(self) -> str:
        """The one JWS algorithm this agent's assertions may use."""
        return _KINDS[self.public_jwk["kty"], self.public_jwk["crv"]][0]


@dataclass(frozen=True)
class ResourceServer:
    """A registered resource server (calls introspection); same key rules as an agent."""

    id: str
    public_jwk: dict = field(hash=False)
    kid: str
    _key: Any = field(default=None, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        if self._key is None:
            object.__setattr__(self, "_key", _parse_public_jwk(self.public_jwk)[0])

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


def _checked_shape(entry: Any, allowed: frozenset) -> str:
    """The id of an entry, after checking it is a mapping with known keys and a public_key."""
    if not isinstance(entry, dict):
        raise ValueError("must be a mapping")
    unknown = sorted(str(k) for k in entry if k not in allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    ident = _check_id(entry.get("id"), "'id'")
    if "public_key" not in entry:
        raise ValueError("'public_key' is required")
    return ident


def _entry_key(entry: dict) -> tuple[Any, str]:
    try:
        key, kid, _ = _parse_public_jwk(entry["public_key"])
    except ValueError as exc:
        raise ValueError(f"public_key: {exc}") from None
    return key, kid


def _agent_from_entry(entry: Any) -> Agent:
    ident = _checked_shape(entry, _AGENT_KEYS)
    owner, team = _optional_id(entry, "owner"), _optional_id(entry, "team")
    can_delegate = entry.get("can_delegate", False)
    if not isinstance(can_delegate, bool):
        raise ValueError("'can_delegate' must be true or false")
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


def _server_from_entry(entry: Any) -> ResourceServer:
    ident = _checked_shape(entry, _SERVER_KEYS)
    key, kid = _entry_key(entry)
    return ResourceServer(id=ident, public_jwk=copy.deepcopy(entry["public_key"]), kid=kid, _key=key)


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
            # Two entries sharing a key could sign as each other: almost surely a copy-paste slip.
            thumbprint = jwk_thumbprint(item.public_jwk)
            if thumbprint in keys:
                raise ConfigError(f"{source}: {here}: same public key as {keys[thumbprint]}")
            ids[item.id] = keys[thumbprint] = here


def _load_document(text: str, source: str) -> dict:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
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
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None


class _Snapshot:
    __slots__ = ("agents", "resource_servers", "agent_by_id", "server_by_id")

    def __init__(self, agents: tuple[Agent, ...], servers: tuple[ResourceServer, ...]) -> None:
        self.agents = agents
        self.resource_servers = servers
        self.agent_by_id = {a.id: a for a in agents}
        self.server_by_id = {s.id: s for s in servers}


class Registry:
    """Registered agents and resource servers, with their parsed public keys."""

    def __init__(
        self,
        agents: Iterable[Agent] = (),
        resource_servers: Iterable[ResourceServer] = (),
        *,
        path: Path | None = None,
    ) -> None:
        agents, resource_servers = tuple(agents), tuple(resource_servers)
        _check_unique(str(path or "registry"), agents, resource_servers)
        self.path = path
        self._stamp: tuple | None = None
        # Swapped as one object so a reload never shows half of the old and half of the new file.
        self._snapshot = _Snapshot(agents, resource_servers)

    @classmethod
    def load(cls, path: Path) -> Registry:
        """Read the agents file; a missing file is an empty registry, a malformed one a ConfigError."""
        path = Path(path)
        stamp = _stamp(path)  # before reading, so a change during the read is seen next time
        _, agents, servers = _parse_document(_read(path), str(path))
        registry = cls(agents, servers, path=path)
        registry._stamp = stamp
        return registry

    def reload_if_changed(self) -> bool:
        """Re-read the file when its mtime (or size or inode) changed; True when the data was replaced.

        A broken new version raises ConfigError once and the previous data stays in force; the
        next change of the file is tried again.
        """
        if self.path is None:
            return False
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        _, agents, servers = _parse_document(_read(self.path), str(self.path))
        self._snapshot = _Snapshot(agents, servers)
        return True

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
            if yaml.load(text, Loader=_StrictLoader) == expected:
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


def add_agent(path: Path, *, id: str, owner: str | None, team: str | None, public_jwk: dict) -> Agent:
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


# --- verification ---------------------------------------------------------------------


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_segment(segment: str) -> dict:
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Unauthenticated("malformed assertion") from None
    if not isinstance(value, dict):
        raise Unauthenticated("malformed assertion")
    return value


def _bearer_token(authorization: str | None) -> str:
    if not isinstance(authorization, str) or not authorization.strip():
        raise Unauthenticated("missing bearer assertion")
    parts = authorization.split(None, 1)
    if parts[0].lower() != "bearer":
        raise Unauthenticated("authorization must use the Bearer scheme")
    if len(parts) == 1 or not parts[1].strip():
        raise Unauthenticated("missing bearer assertion")
    return parts[1].strip()


class AssertionVerifier:
    """Checks agent (and resource server) assertions; each ``jti`` is accepted once."""

    def __init__(
        self,
        registry: Registry,
        redis: Any,
        prefix: str,
        *,
        audience: str,
        clock: Any = SystemClock(),  # stateless, so one shared default is fine
        max_lifetime_s: int = 300,
        leeway_s: int = 30,
    ) -> None:
        if not isinstance(audience, str) or not audience:
            raise ConfigError("the assertion audience (the broker's issuer URL) must be set")
        if max_lifetime_s <= 0 or leeway_s < 0:
            raise ConfigError("max_lifetime_s must be positive and leeway_s not negative")
        self._registry = registry
        self._redis = redis
        self._jti_prefix = f"{prefix}jti:"
        self._audience = audience
        self._clock = clock
        self._max_lifetime = max_lifetime_s
        self._leeway = leeway_s
        self._jws = PyJWS()

    async def verify_agent(self, authorization: str | None) -> tuple[Agent, dict]:
        """The agent that signed the bearer assertion and its verified claims; Unauthenticated otherwise."""
        return await self._verify(authorization, self._registry.agent, "unknown agent")

    async def verify_resource_server(self, authorization: str | None) -> tuple[ResourceServer, dict]:
        """The resource server that signed the bearer assertion and its claims; Unauthenticated otherwise."""
        return await self._verify(authorization, self._registry.resource_server, "unknown resource server")

    async def _verify(self, authorization: str | None, lookup: Callable[[str], Any], unknown: str) -> tuple[Any, dict]:
        token = _bearer_token(authorization)
        match = _TOKEN.fullmatch(token) if len(token) <= _MAX_TOKEN_CHARS else None
        if match is None:
            raise Unauthenticated("malformed assertion")
        header = _json_segment(match[1])
        claims = _json_segment(match[2])  # trusted only once the signature below checks out

        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGS:
            raise Unauthenticated("algorithm not allowed")
        if "crit" in header or "b64" in header:
            raise Unauthenticated("unsupported critical header")
        iss = claims.get("iss")
        if iss is None:
            raise Unauthenticated("assertion lacks the 'iss' claim")
        principal = lookup(iss) if isinstance(iss, str) else None
        if principal is None:
            raise Unauthenticated(unknown)
        if alg != principal.alg:
            raise Unauthenticated("algorithm does not match the registered key")
        if "kid" in header and header["kid"] != principal.kid:
            raise Unauthenticated("unknown key id")
        try:
            self._jws.decode_complete(token, principal._key, algorithms=[alg])
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthenticated("invalid signature") from None

        ttl_ms = self._check_claims(claims, principal.id)
        key = f"{self._jti_prefix}{principal.id}:{claims['jti']}"
        try:
            fresh = await self._redis.set(key, b"1", nx=True, px=ttl_ms)
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
        aud = claims["aud"]
        if not (aud == self._audience or (isinstance(aud, list) and self._audience in aud)):
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
