"""The gateway's configuration file (``jitgate gateway --config FILE``), read strictly.

```yaml
wait_s: 600            # how long a held call waits for people (then withdrawn and refused); default 600
duration_s: 300        # the grant each call asks for; default 300
upstreams:
  notes:                                   # the agent sees its tools as notes__<tool>
    command: [python, notes_server.py]     # stdio: the command line ...
    env: {NOTES_DIR: /srv/notes}           # ... and its environment (optional)
    # url: https://notes.internal/mcp      # or Streamable HTTP
    target: staging/notes                  # the proposals' target (a target of the targets file)
    token_header: Authorization            # HTTP only: send "Bearer <the grant's access token>" in it
    allow: [read_note]                     # read-only tools forwarded without a proposal
    actions: {write_note: notes.write}     # a tool's action (default mcp:notes/<tool>)
```

Anything else (an unknown key, a second transport, a token header on stdio) refuses to start:
what is not understood is not enforced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

# The namespace separator: an upstream's tool "t" is "<upstream>__t" to the agent. Upstream names
# hold no "_", so the first "__" splits unambiguously, and the result stays within the characters
# every MCP client accepts in a tool name.
SEP = "__"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_TOP_KEYS = frozenset({"wait_s", "duration_s", "upstreams"})
_UPSTREAM_KEYS = frozenset({"command", "env", "cwd", "url", "target", "token_header", "allow", "actions"})
MAX_WAIT_S = 86400


@dataclass(frozen=True)
class UpstreamConfig:
    """One upstream MCP server: how to reach it and how its calls become proposals."""

    name: str
    target: str
    command: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    token_header: str | None = None
    allow: frozenset[str] = frozenset()
    actions: dict[str, str] = field(default_factory=dict)
    # An SDK server object to talk to in-process instead (tests and the bench; not from the file).
    server: Any = None

    def action_for(self, tool: str) -> str:
        """The proposal's action for ``tool``: mapped by the file, else ``mcp:<upstream>/<tool>``."""
        return self.actions.get(tool) or f"mcp:{self.name}/{tool}"


@dataclass(frozen=True)
class GatewayConfig:
    upstreams: dict[str, UpstreamConfig]
    wait_s: float = 600.0
    duration_s: int = 300


def load_config(path: str | Path) -> GatewayConfig:
    """Read and check the gateway's YAML file (ConfigError naming the file and the problem)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_config(doc)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.detail}") from None


def parse_config(doc: Any) -> GatewayConfig:
    """The configuration from a parsed document (ConfigError for anything not understood)."""
    if not isinstance(doc, dict):
        raise ConfigError("the gateway file must be a mapping with 'upstreams'")
    _no_unknown(doc, _TOP_KEYS, "the gateway file")
    ups = doc.get("upstreams")
    if not isinstance(ups, dict) or not ups:
        raise ConfigError("'upstreams' must map at least one upstream name to its settings")
    upstreams = {}
    for name, entry in ups.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"upstream name {name!r}: letters, digits and '-' only (at most 32)")
        upstreams[name] = _upstream(name, entry)
    wait_s = _number(doc, "wait_s", 600, 1, MAX_WAIT_S)
    duration_s = int(_number(doc, "duration_s", 300, 1, 7 * 86400))
    return GatewayConfig(upstreams=upstreams, wait_s=wait_s, duration_s=duration_s)


def _upstream(name: str, entry: Any) -> UpstreamConfig:
    where = f"upstream {name!r}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping")
    _no_unknown(entry, _UPSTREAM_KEYS, where)
    command, url = entry.get("command"), entry.get("url")
    if (command is None) == (url is None):
        raise ConfigError(f"{where}: give exactly one of 'command' (stdio) and 'url' (Streamable HTTP)")
    if command is not None and (not isinstance(command, list) or not command
                                or not all(isinstance(c, str) and c for c in command)):
        raise ConfigError(f"{where}: 'command' must be a non-empty list of strings")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise ConfigError(f"{where}: 'url' must be an http(s) URL")
    env = entry.get("env")
    if env is not None and (command is None or not isinstance(env, dict)
                            or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise ConfigError(f"{where}: 'env' is a mapping of strings, for a 'command'")
    cwd = entry.get("cwd")
    if cwd is not None and (command is None or not isinstance(cwd, str)):
        raise ConfigError(f"{where}: 'cwd' is a folder, for a 'command'")
    target = entry.get("target")
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"{where}: 'target' (the proposals' target) is required")
    header = entry.get("token_header")
    if header is not None:
        if url is None:
            raise ConfigError(f"{where}: 'token_header' needs a 'url' (a stdio upstream has no headers)")
        if not isinstance(header, str) or not _HEADER_RE.match(header):
            raise ConfigError(f"{where}: 'token_header' must be an HTTP header name")
    allow = entry.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(t, str) and t for t in allow):
        raise ConfigError(f"{where}: 'allow' must be a list of tool names")
    actions = entry.get("actions", {})
    if not isinstance(actions, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                for k, v in actions.items()):
        raise ConfigError(f"{where}: 'actions' must map tool names to action names")
    return UpstreamConfig(name=name, target=target.strip(), command=tuple(command or ()), env=env, cwd=cwd, url=url,
                          token_header=header, allow=frozenset(allow), actions=dict(actions))


def _no_unknown(doc: dict, known: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in doc if k not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _number(doc: dict, key: str, default: float, low: float, high: float) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"'{key}' must be a number from {low:g} to {high:g}")
    return float(value)
