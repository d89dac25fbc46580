"""The Cedar gate: one ``is_authorized`` call per proposal, and the obligations it implies.

Policies are ``*.cedar`` files in one folder, optionally with a Cedar schema. They are
parsed once into a ``cedarpy.PolicySet`` (and the agents, approvers and targets into a
``cedarpy.Entities``); every decision reuses those handles. Everything here fails
closed: a policy folder that does not load refuses start-up, and anything unexpected
while deciding is a deny.

The vocabulary (namespace ``Jitgate``) is fixed by docs/policies.md:
principal ``Agent`` (attrs ``owner``, ``team``; parent ``Team``) or, for break-glass
for oneself, ``Approver`` (parents ``Group``); action ``Action::"<action>"``; resource
``Target`` (attr ``name`` plus the targets file's attributes; parent ``Env``) — or
``Agent`` for ``delegate``; a context with exactly the keys in :data:`CONTEXT_KEYS`, plus
what the proposal says the agent will do (:data:`PROPOSAL_CONTEXT_KEYS`, :func:`proposal_context`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

from .context import STAGES
from .directory import Directory, id_problem
from .errors import ConfigError, InvalidRequest, PolicyError
from .filemodes import check_not_writable
from .watched import fingerprint as files_fingerprint
from .model import INTERNAL_ACTIONS, check_arguments, number_value
from .rules import POSTURES, quorum_words
from .tracing import traced_step

log = logging.getLogger(__name__)

NAMESPACE = "Jitgate"
AGENT = f"{NAMESPACE}::Agent"
TEAM = f"{NAMESPACE}::Team"
APPROVER = f"{NAMESPACE}::Approver"
GROUP = f"{NAMESPACE}::Group"
ACTION = f"{NAMESPACE}::Action"
TARGET = f"{NAMESPACE}::Target"
ENV = f"{NAMESPACE}::Env"

OUTCOMES = ("auto_grant", "require_approval", "deny")
MAX_APPROVALS = 10
_LONG_MAX = 2**63 - 1
# name -> (type, low, high); ints are Cedar Longs, so no floats and no bools posing as ints.
CONTEXT_KEYS: Mapping[str, tuple[type, int | None, int | None]] = {
    "confidence": (int, 0, 100),
    "duration_s": (int, 0, _LONG_MAX),
    "posture": (str, None, None),
    "evidence_count": (int, 0, _LONG_MAX),
    "delegation_depth": (int, 0, _LONG_MAX),
    "hour_utc": (int, 0, 23),
    "break_glass": (bool, None, None),
    # Approval state and use (issue 16, item 2; built by broker/context.py build_context).
    # A list is a Cedar Set<String>. -1 means "not yet" for the seconds-since keys.
    "stage": (str, None, None),
    "approval_count": (int, 0, _LONG_MAX),
    "approval_groups": (list, None, None),
    "approval_people": (list, None, None),
    "approval_desks": (list, None, None),
    "approval_first_at": (int, 0, _LONG_MAX),
    "approval_last_at": (int, 0, _LONG_MAX),
    "seconds_since_first_approval": (int, -1, _LONG_MAX),
    "seconds_since_last_approval": (int, -1, _LONG_MAX),
    "seconds_since_approved": (int, -1, _LONG_MAX),
    "agent_grants_active": (int, 0, _LONG_MAX),
    "agent_grants_active_env": (int, 0, _LONG_MAX),
    "agent_grants_last_hour": (int, 0, _LONG_MAX),
    # Alternate paths (issue 19, item 3; broker/context.py).
    "recent_denials": (int, 0, _LONG_MAX),
    "linked_attempts": (int, 0, _LONG_MAX),
}
# What the proposal says the agent will do, as Cedar sees it (:func:`proposal_context`):
# ``tool`` and ``dataset`` ("" when not given) and ``arguments`` (a record, {} when not given).
# A caller may leave them out of a context (break-glass, delegation links name no tool):
# they then read as not given.
PROPOSAL_CONTEXT_KEYS: tuple[str, ...] = ("tool", "dataset", "arguments")
_PROPOSAL_DEFAULTS: Mapping[str, Any] = {"tool": "", "dataset": "", "arguments": {}}
# The context keys of the first release: every schema declares them. Keys added since (the
# approval state and use of issue 16 item 2, the proposal's tool, dataset and arguments) are
# left out of the context for an action whose schema does not declare them, so a policy folder
# with a schema written before them keeps deciding (its policies cannot name them anyway).
_FIRST_CONTEXT_KEYS = ("confidence", "duration_s", "posture", "evidence_count", "delegation_depth", "hour_utc",
                       "break_glass")
# The keys of issue 19, item 3: a schema from before them (with the approval state and use of
# issue 16) keeps deciding without them (:func:`_declared_proposal_keys` probes them apart).
_DENIAL_CONTEXT_KEYS = ("recent_denials", "linked_attempts")
_MAX_SET = 100  # members of a set in the context (approvers, their groups, desks)
# Actions whose resource is another agent rather than a target (the schema says the same):
# the broker's internal ones, which no proposal may name (model.INTERNAL_ACTIONS).
AGENT_RESOURCE_ACTIONS = INTERNAL_ACTIONS
# Obligation annotations, plus ``description`` for humans. Anything else is refused at load:
# a misspelt ``@approval("2")`` would otherwise silently fall back to one approval.
ANNOTATIONS = frozenset({"id", "approvals", "approver_group", "approvals_from", "max_duration", "channel", "backup_group",
                         "step_up", "description"})
# ``@step_up("webauthn")``: an approval counts only once its approver proved presence with a
# security key or platform authenticator (issue 19, item 6). The one kind there is.
STEP_UP_KINDS = frozenset({"webauthn"})
# ``@approvals_from("sre:1,security:1")``: a mixed quorum, each group's count met by distinct people.
_QUORUM_ITEM = re.compile(r"([^:,\s]+):([0-9]{1,2})")
_REASON_ERRORS_MAX = 300
_EVALUATION_FAILED = "policy evaluation failed"

_CEDAR_POLICY_REF = re.compile(r"`(policy\d+)`")
_ERROR_POLICY = re.compile(r"policy `([^`]+)`")
_VALIDATION_PREFIX = re.compile(r"^for policy `[^`]*`,\s*")


# --------------------------------------------------------------------------- public values


@dataclass(frozen=True)
class Decision:
    """What the gate decided about one proposal, and the obligations attached to a yes."""

    outcome: str
    policies: tuple[str, ...]
    approvals_required: int
    approver_group: str | None
    max_duration_s: int | None
    channel: str | None
    backup_group: str | None
    reason: str
    # A mixed quorum (``@approvals_from``): (group, count) in the order policy named them. Its
    # counts add up to ``approvals_required`` and its first group is ``approver_group``; None
    # for the plain form (``approvals_required`` from ``approver_group``).
    approvals_from: tuple[tuple[str, int], ...] | None = None
    # ``@step_up("webauthn")`` on a permit that decided: every approval needs that proof.
    step_up: str | None = None
    # What the shadow set (``shadow/``, issue 23 item 2) would have decided, when it differs
    # (:func:`shadow_summary`); never part of :meth:`to_dict` and never compared.
    shadow: Mapping[str, Any] | None = field(default=None, compare=False)
    # The content hash of the policy set that made this decision (:func:`set_hash`); not in
    # :meth:`to_dict` (the decision object of the contract), recorded beside it instead.
    policy_set_hash: str | None = field(default=None, compare=False)

    @property
    def allowed(self) -> bool:
        """True unless the outcome is ``deny``."""
        return self.outcome != "deny"

    @classmethod
    def deny(cls, reason: str, policies: Iterable[str] = ()) -> "Decision":
        """A deny carrying ``reason`` and the ids of the policies behind it."""
        return cls("deny", tuple(policies), 0, None, None, None, None, reason)

    def to_dict(self) -> dict:
        """A JSON-ready dict with exactly the keys of the external contract (``approvals_from``
        only for a mixed quorum, so other decisions read exactly as before it existed)."""
        return {
            "outcome": self.outcome,
            "policies": list(self.policies),
            "approvals_required": self.approvals_required,
            "approver_group": self.approver_group,
            "max_duration_s": self.max_duration_s,
            "channel": self.channel,
            "backup_group": self.backup_group,
            "reason": self.reason,
            **({"approvals_from": dict(self.approvals_from)} if self.approvals_from else {}),
            **({"step_up": self.step_up} if self.step_up else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Decision":
        """Rebuild from :meth:`to_dict` output; raise :class:`PolicyError` when it is malformed."""
        try:
            outcome, reason = d["outcome"], d["reason"]
            policies = d["policies"]
            approvals = d["approvals_required"]
            fields = {k: d.get(k) for k in ("approver_group", "channel", "backup_group")}
            max_duration = d.get("max_duration_s")
            quorum = d.get("approvals_from")  # absent in records made before mixed quorums
            step_up = d.get("step_up")  # absent unless a policy asked for it
        except (KeyError, TypeError) as exc:
            raise PolicyError(f"malformed decision: missing {exc}") from None
        pairs = None
        if quorum is not None:
            if (not isinstance(quorum, Mapping) or not quorum
                    or any(id_problem(g) or type(n) is not int or not 1 <= n <= MAX_APPROVALS for g, n in quorum.items())
                    or sum(quorum.values()) != approvals or next(iter(quorum)) != fields["approver_group"]):
                raise PolicyError("malformed decision: approvals_from")
            pairs = tuple(quorum.items())
        ok = (
            outcome in OUTCOMES
            and isinstance(reason, str)
            and isinstance(policies, (list, tuple))
            and all(isinstance(p, str) for p in policies)
            and type(approvals) is int
            and 0 <= approvals <= MAX_APPROVALS
            and (max_duration is None or (type(max_duration) is int and max_duration > 0))
            and all(v is None or isinstance(v, str) for v in fields.values())
            and (step_up is None or step_up in STEP_UP_KINDS)
        )
        if not ok:
            raise PolicyError("malformed decision")
        return cls(outcome, tuple(policies), approvals, fields["approver_group"], max_duration,
                   fields["channel"], fields["backup_group"], reason, pairs, step_up)


@dataclass(frozen=True)
class PrincipalInfo:
    """What the gate needs to know about an agent."""

    id: str
    owner: str | None = None
    team: str | None = None


# --------------------------------------------------------------------------- loading policies


@dataclass(frozen=True)
class _Policy:
    """One loaded policy: Cedar's positional id, our name for it, where it came from, its obligations."""

    cedar_id: str
    name: str
    effect: str
    file: str
    position: int
    approvals: int
    max_duration: int | None
    approver_group: str | None
    channel: str | None
    backup_group: str | None
    quorum: tuple[tuple[str, int], ...] | None = None  # @approvals_from, in the order written
    step_up: str | None = None  # @step_up("webauthn")


@dataclass(frozen=True)
class _Rules:
    """A parsed policy folder. Immutable; a reload builds a new one."""

    directory: Path
    policy_set: Any
    # The same policies with every effect turned into ``permit``: one evaluation of this
    # twin tells which policies' conditions hold (used only by ``explain``).
    probe_set: Any
    policies: Mapping[str, _Policy]  # by Cedar's positional id
    schema: Any | None
    schema_file: str | None
    actions: frozenset[str] | None  # declared in the schema; None without a schema
    fingerprint: tuple
    # Per declared action, the PROPOSAL_CONTEXT_KEYS its context type declares (a schema
    # written before they existed declares none; they are then left out, as before). Without
    # a schema, or for an action not listed, every key is passed.
    proposal_keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # (file name, sha256 hex of its bytes) for every file read, sorted by name; and their
    # :func:`set_hash`: the policy set's version.
    files: tuple[tuple[str, str], ...] = ()
    set_hash: str = ""

    def name(self, cedar_id: str) -> str:
        policy = self.policies.get(cedar_id)
        return policy.name if policy else cedar_id

    def rename(self, text: str) -> str:
        """Replace Cedar's positional ids (`` `policy3` ``) in a message by the policies' ``@id``."""
        return _CEDAR_POLICY_REF.sub(lambda m: f"`{self.name(m.group(1))}`", text)


_POLICY_GLOB = "*.cedar"
_SCHEMA_GLOBS = ("*.cedarschema", "*.cedarschema.json")


def _policy_files(policy_dir: Path) -> tuple[list[Path], list[Path]]:
    policies = sorted(p for p in policy_dir.glob(_POLICY_GLOB) if p.is_file())
    schemas = sorted(p for pattern in _SCHEMA_GLOBS for p in policy_dir.glob(pattern) if p.is_file())
    return policies, schemas


def _dir_fingerprint(policy_dir: Path) -> tuple:
    """The :func:`broker.watched.fingerprint` of every file the gate reads from ``policy_dir``."""
    if not policy_dir.is_dir():
        return ()
    policies, schemas = _policy_files(policy_dir)
    return files_fingerprint(policies + schemas)


def _read_text(path: Path, hashes: dict[str, str] | None = None) -> str:
    """The UTF-8 text of ``path``; with ``hashes``, also records the sha256 of the very bytes read."""
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if hashes is not None:
        hashes[path.name] = hashlib.sha256(raw).hexdigest()
    return text


def set_hash(files: Iterable[tuple[str, str]]) -> str:
    """A policy set's content hash: sha256 over ``"<file name>\\0<sha256 hex of its bytes>\\n"``
    per file, sorted by name (policies and schema; the annotations are in their bytes). Built
    from the per-file hashes so an auditor recomputes it from a ``policy.loaded`` entry alone."""
    h = hashlib.sha256()
    for name, digest in sorted(files):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def folder_hash(policy_dir: Path) -> tuple[tuple[tuple[str, str], ...], str]:
    """(file hashes, set hash) of the files the gate would read from ``policy_dir`` now, without
    parsing them (what a ``policy.load_failed`` entry names); unreadable files are left out."""
    if not Path(policy_dir).is_dir():
        return (), set_hash(())
    policies, schemas = _policy_files(Path(policy_dir))
    files = []
    for path in policies + schemas:
        try:
            files.append((path.name, hashlib.sha256(path.read_bytes()).hexdigest()))
        except OSError:
            continue
    files.sort()
    return tuple(files), set_hash(files)


def _scan(text: str) -> tuple[list[int], list[int]]:
    """Offsets of the ``;`` that end statements and of the newlines outside string literals.

    Cedar has ``"..."`` strings with backslash escapes and ``//`` line comments; a ``;``
    anywhere else ends a policy.
    """
    semis: list[int] = []
    cuts: list[int] = []
    in_string = in_comment = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if in_comment:
            if ch == "\n":
                in_comment = False
                cuts.append(i)
        elif in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "/" and text.startswith("//", i):
            in_comment = True
            i += 1
        elif ch == ";":
            semis.append(i)
        elif ch == "\n":
            cuts.append(i)
        i += 1
    return semis, cuts


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _parse_error(text: str) -> str | None:
    try:
        cedarpy.PolicySet.from_str(text)
    except ValueError as exc:
        return str(exc)
    return None


def _locate_parse_error(text: str) -> int | None:
    """The 1-based line of the first parse error in ``text``, or None when it cannot be found.

    cedarpy reports parse errors without a position, so the position is recovered:
    the text is cut into statements at each ``;`` and the first statement that does
    not parse alone holds the error. Within it, the shortest prefix ending at a line
    break that fails with something other than "unexpected end of input" ends on the
    offending line. Errors Cedar finds only after parsing a whole policy (an unknown
    variable, a duplicate annotation) are located by the token the message quotes.
    """
    semis, cuts = _scan(text)
    bounds = [0] + [s + 1 for s in semis] + [len(text)]
    for start, end in zip(bounds, bounds[1:]):
        chunk = text[start:end]
        message = _parse_error(chunk)
        if message is None:
            continue
        for cut in cuts:
            if start <= cut < end:
                prefix_error = _parse_error(text[start:cut])
                if prefix_error is not None and prefix_error != "unexpected end of input":
                    return _line_of(text, cut)
        code_start = start + len(chunk) - len(chunk.lstrip())
        # Skip leading comment lines so "the policy starts here" points at code.
        while text.startswith("//", code_start):
            newline = text.find("\n", code_start)
            if newline == -1:
                break
            rest = text[newline + 1:end]
            code_start = newline + 1 + len(rest) - len(rest.lstrip())
        if message.startswith(("unexpected token", "invalid token")):
            return _line_of(text, end - 1)  # after the last line break of the statement
        if message == "unexpected end of input":
            return _line_of(text, code_start)  # an unterminated policy: point at its start
        # e.g. "`foo` is not a valid function", "invalid variable in the policy scope: actoin"
        quoted = re.findall(r"`([^`]+)`", message)
        if quoted:
            token = quoted[0]
        elif ": " in message:
            token = message.rsplit(": ", 1)[-1].strip()
        else:
            token = ""
        if token:
            found = text.find(token, code_start, end)
            if found != -1:
                return _line_of(text, found)
        return _line_of(text, code_start)
    return None


def _annotation_int(policy_label: str, key: str, raw: object, low: int, high: int) -> int:
    # Strict digits: "+2", " 2" or "2.0" are typos we would rather hear about than guess.
    if not isinstance(raw, str) or not re.fullmatch(r"[0-9]{1,19}", raw) or not low <= int(raw) <= high:
        raise PolicyError(f"{policy_label}: @{key} must be a whole number from {low} to {high}, got {raw!r}")
    return int(raw)


def _annotation_name(policy_label: str, key: str, raw: object) -> str:
    problem = id_problem(raw)
    if problem:
        raise PolicyError(f"{policy_label}: @{key} {problem}")
    return raw  # type: ignore[return-value]


def _annotation_quorum(policy_label: str, raw: object) -> tuple[tuple[str, int], ...]:
    """``"sre:1,security:1"``: groups (each once) with a count of 1 or more, at most
    :data:`MAX_APPROVALS` in all. Strict, as the other annotations: no spaces, no empty items."""
    usage = f'{policy_label}: @approvals_from must look like "sre:1,security:1" (group:count, comma-separated)'
    if not isinstance(raw, str) or not raw:
        raise PolicyError(f"{usage}, got {raw!r}")
    out: list[tuple[str, int]] = []
    for item in raw.split(","):
        match = _QUORUM_ITEM.fullmatch(item)
        if match is None:
            raise PolicyError(f"{usage}, got {raw!r}")
        group, count = match.group(1), int(match.group(2))
        problem = id_problem(group)
        if problem:
            raise PolicyError(f"{policy_label}: @approvals_from group {problem}")
        if not 1 <= count <= MAX_APPROVALS:
            raise PolicyError(f"{policy_label}: @approvals_from count for {group!r} must be from 1 to {MAX_APPROVALS}")
        if any(g == group for g, _ in out):
            raise PolicyError(f"{policy_label}: @approvals_from names {group!r} twice")
        out.append((group, count))
    if sum(n for _, n in out) > MAX_APPROVALS:
        raise PolicyError(f"{policy_label}: @approvals_from asks for more than {MAX_APPROVALS} approvals in all")
    return tuple(out)


def _policy_from_est(cedar_id: str, position: int, est: dict, file: str) -> _Policy:
    """Check one policy's annotations and turn them into obligations."""
    annotations: dict = est.get("annotations") or {}
    label = f"{file}: policy #{position + 1}"
    if "id" in annotations:
        name = annotations["id"]
        problem = id_problem(name)
        if problem:
            raise PolicyError(f"{label}: @id {problem}")
        label = f"{file}: policy {name!r}"
    else:
        name = cedar_id
    unknown = set(annotations) - ANNOTATIONS
    if unknown:
        raise PolicyError(f"{label}: unknown annotation(s) {sorted('@' + k for k in unknown)}; known: "
                          f"{sorted('@' + k for k in ANNOTATIONS)}")
    approvals = 1
    if "approvals" in annotations:
        approvals = _annotation_int(label, "approvals", annotations["approvals"], 0, MAX_APPROVALS)
    max_duration = None
    if "max_duration" in annotations:
        max_duration = _annotation_int(label, "max_duration", annotations["max_duration"], 1, _LONG_MAX)
    names = {
        key: _annotation_name(label, key, annotations[key]) if key in annotations else None
        for key in ("approver_group", "channel", "backup_group")
    }
    quorum = None
    if "approvals_from" in annotations:
        # It says both how many and from whom: with @approvals or @approver_group as well,
        # one of the two would silently lose.
        both = sorted("@" + k for k in ("approvals", "approver_group") if k in annotations)
        if both:
            raise PolicyError(f"{label}: @approvals_from already sets the count and the groups; remove {', '.join(both)}")
        quorum = _annotation_quorum(label, annotations["approvals_from"])
        approvals = sum(n for _, n in quorum)
        names["approver_group"] = quorum[0][0]
    step_up = None
    if "step_up" in annotations:
        raw = annotations["step_up"]
        if raw not in STEP_UP_KINDS:
            raise PolicyError(f"{label}: @step_up must be one of {sorted(STEP_UP_KINDS)}, got {raw!r}")
        if est["effect"] != "permit" or approvals == 0:
            # A proof asked of approvals that never happen would read as a protection it is not.
            raise PolicyError(f"{label}: @step_up applies to a permit that requires approval "
                              "(not to a forbid or to @approvals(\"0\"))")
        step_up = raw
    return _Policy(
        cedar_id=cedar_id, name=name, effect=est["effect"], file=file, position=position,
        approvals=approvals, max_duration=max_duration, quorum=quorum, step_up=step_up, **names,
    )


def _load_schema(path: Path, hashes: dict[str, str] | None = None) -> Any:
    text = _read_text(path, hashes)
    try:
        if path.name.endswith(".json"):
            return cedarpy.Schema.from_json_str(text)
        return cedarpy.Schema.from_str(text)
    except ValueError as exc:
        raise PolicyError(f"{path}: invalid Cedar schema: {exc}") from None


def _declared_actions(schema: Any) -> frozenset[str]:
    """The ``Jitgate::Action`` ids a schema declares.

    cedarpy has no schema introspection, but an entity set built with a schema
    contains the schema's action entities, and renders back to JSON.
    """
    rendered = json.loads(str(cedarpy.Entities.from_json_str("[]", schema)))
    return frozenset(e["uid"]["id"] for e in rendered if e["uid"]["type"] == ACTION)


def _load_rules(policy_dir: Path) -> _Rules:
    """Parse, check and validate a policy folder. Raises :class:`PolicyError` naming file and line."""
    policy_dir = Path(policy_dir)
    if not policy_dir.is_dir():
        raise PolicyError(f"policy directory {policy_dir} does not exist")
    fingerprint = _dir_fingerprint(policy_dir)
    files, schema_files = _policy_files(policy_dir)
    try:  # re-read on every change: nobody else may write the folder or its files
        check_not_writable(policy_dir, "policy folder")
        for path in (*files, *schema_files):
            check_not_writable(path, "policy file")
    except ConfigError as exc:
        raise PolicyError(exc.detail) from None

    texts: list[str] = []
    hashes: dict[str, str] = {}
    file_of: list[str] = []  # per global policy position, the file it came from
    for path in files:
        text = _read_text(path, hashes)
        try:
            est = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            line = _locate_parse_error(text)
            where = f"{path}:{line}" if line else str(path)
            raise PolicyError(f"{where}: {exc}") from None
        if est.get("templates"):
            raise PolicyError(f"{path}: policy templates (?principal / ?resource slots) are not supported")
        texts.append(text if text.endswith("\n") else text + "\n")
        file_of.extend([path.name] * len(est.get("staticPolicies", {})))
    if not file_of:
        raise PolicyError(f"no policies found in {policy_dir} (every request would be denied)")

    # One set from the concatenated text, so Cedar's positional ids (policy0, ...) run in
    # file order and match the per-file counts above.
    combined = "".join(texts)
    try:
        policy_set = cedarpy.PolicySet.from_str(combined)
        est = json.loads(cedarpy.policies_to_json_str(combined))
    except ValueError as exc:  # each file parsed alone; a failure here is unexpected
        raise PolicyError(f"{policy_dir}: policies do not parse together: {exc}") from None
    statics: dict = est.get("staticPolicies", {})
    if len(statics) != len(file_of) or len(policy_set) != len(file_of):
        raise PolicyError(f"{policy_dir}: policy count mismatch while loading; refusing to guess")

    policies: dict[str, _Policy] = {}
    by_name: dict[str, _Policy] = {}
    for position in range(len(file_of)):
        cedar_id = f"policy{position}"
        if cedar_id not in statics:
            raise PolicyError(f"{policy_dir}: unexpected policy numbering from cedarpy; refusing to guess")
        policy = _policy_from_est(cedar_id, position, statics[cedar_id], file_of[position])
        other = by_name.get(policy.name)
        if other is not None:
            raise PolicyError(f"duplicate policy id {policy.name!r} in {other.file} and {policy.file}")
        policies[cedar_id] = by_name[policy.name] = policy

    schema = schema_file = actions = None
    proposal_keys: dict[str, frozenset[str]] = {}
    if len(schema_files) > 1:
        raise PolicyError(f"{policy_dir}: more than one schema file ({', '.join(p.name for p in schema_files)})")
    if schema_files:
        schema_file = schema_files[0].name
        schema = _load_schema(schema_files[0], hashes)
        result = cedarpy.validate_policies(combined, schema)
        if not result.validation_passed:
            problems = []
            for error in result.errors[:5]:
                policy = policies.get(error.policy_id)
                where = f"{policy.file}: policy {policy.name!r}" if policy else policy_dir.name
                problems.append(f"{where}: {_VALIDATION_PREFIX.sub('', error.error)}")
            more = f" (and {len(result.errors) - 5} more)" if len(result.errors) > 5 else ""
            raise PolicyError(f"policies do not validate against {schema_file}: " + "; ".join(problems) + more)
        actions = _declared_actions(schema)
        proposal_keys = _declared_proposal_keys(schema, actions)

    probe = {"staticPolicies": {k: {**v, "effect": "permit"} for k, v in statics.items()},
             "templates": {}, "templateLinks": []}
    probe_set = cedarpy.PolicySet.from_json_str(json.dumps(probe))
    file_hashes = tuple(sorted(hashes.items()))
    return _Rules(policy_dir, policy_set, probe_set, policies, schema, schema_file, actions, fingerprint, proposal_keys,
                  file_hashes, set_hash(file_hashes))


_NOT_DECLARED = "should not exist according to the schema"
_REFUSED_KEY = re.compile(r"attribute `([^`]+)` should not exist according to the schema")


def _later_keys() -> tuple[str, ...]:
    """The context keys added after the first release (see ``_FIRST_CONTEXT_KEYS``)."""
    return tuple(k for k in CONTEXT_KEYS if k not in _FIRST_CONTEXT_KEYS) + PROPOSAL_CONTEXT_KEYS


def _probe_value(key: str) -> Any:
    if key in _PROPOSAL_DEFAULTS:
        return _PROPOSAL_DEFAULTS[key]
    type_, low, _high = CONTEXT_KEYS[key]
    if type_ is str:
        return STAGES[0] if key == "stage" else ""
    if type_ is list:
        return []
    return max(low or 0, 0) if type_ is int else type_()


def _declared_proposal_keys(schema: Any, actions: frozenset[str]) -> dict[str, frozenset[str]]:
    """Which context keys added since the first release (:func:`_later_keys`: the approval
    state and use, :data:`PROPOSAL_CONTEXT_KEYS`) each action's context type declares.

    cedarpy cannot list a type's attributes, so requests are tried against the schema with an
    empty policy set. Recent cedarpy names a key the type refuses ("should not exist"): it is
    dropped and the request tried again until it fits. Older releases only say that the request
    does not fit: then the generations of keys are tried, largest first (the approval state and
    use with or without the alternate-path counts, or none; each subset of the proposal keys), and the first that fits is taken. When
    nothing fits every key is kept (the real request then fails the same way and is denied)."""
    base = {"confidence": 0, "duration_s": 1, "posture": POSTURES[0], "evidence_count": 0, "delegation_depth": 0,
            "hour_utc": 0, "break_glass": False}
    later = _later_keys()
    empty = cedarpy.PolicySet.from_str("")
    entities = cedarpy.Entities.from_json_str("[]", schema)

    def errors_of(action: str, keys: Iterable[str]) -> str | None:
        resource = AGENT if action in AGENT_RESOURCE_ACTIONS else TARGET
        request = {"principal": _uid(AGENT, "probe"), "action": _uid(ACTION, action), "resource": _uid(resource, "probe"),
                   "context": {**base, **{key: _probe_value(key) for key in keys}}}
        try:
            return " ".join(cedarpy.is_authorized(request, empty, entities, schema=schema).diagnostics.errors)
        except Exception:  # noqa: BLE001 - a probe that cannot run decides nothing
            return None

    state_keys = [k for k in later if k not in PROPOSAL_CONTEXT_KEYS and k not in _DENIAL_CONTEXT_KEYS]
    proposal_subsets = sorted((tuple(k for i, k in enumerate(PROPOSAL_CONTEXT_KEYS) if mask >> i & 1)
                               for mask in range(2 ** len(PROPOSAL_CONTEXT_KEYS))), key=len, reverse=True)
    # Generations of the state keys, newest first: with the alternate-path counts, without, none.
    generations: tuple[list[str], ...] = (state_keys + list(_DENIAL_CONTEXT_KEYS), state_keys, [])
    out: dict[str, frozenset[str]] = {}
    for action in actions:
        keys = list(later)
        for _ in range(len(later)):
            errors = errors_of(action, keys)
            refused = _REFUSED_KEY.search(errors or "")
            if errors is None or refused is None or refused.group(1) not in keys:
                break
            keys.remove(refused.group(1))
        if errors_of(action, keys) != "":
            fitting = (list(state) + list(subset) for state in generations for subset in proposal_subsets)
            keys = next((k for k in fitting if errors_of(action, k) == ""), list(later))
        out[action] = frozenset(keys)
    return out


# --------------------------------------------------------------------------- entities


def _uid(type_: str, id_: str) -> dict:
    return {"type": type_, "id": id_}


def _agent_entity(agent_id: str, owner: str | None, team: str | None) -> dict:
    # owner and team are always present (as "" when unknown) so policies and the schema
    # can rely on them without ``has`` guards.
    return {"uid": _uid(AGENT, agent_id), "attrs": {"owner": owner or "", "team": team or ""},
            "parents": [_uid(TEAM, team)] if team else []}


def _target_entity(target_id: str, env: str | None, attributes: Mapping[str, Any]) -> dict:
    return {"uid": _uid(TARGET, target_id), "attrs": {**attributes, "name": target_id},
            "parents": [_uid(ENV, env)] if env else []}


@dataclass(frozen=True)
class _State:
    """Rules plus the entity graph built for them. Swapped whole, so a decision sees one version."""

    rules: _Rules
    entities: Any
    agents: frozenset[str]
    approvers: frozenset[str]
    targets: frozenset[str]


def _build_state(rules: _Rules, agents: tuple[PrincipalInfo, ...], directory: Directory) -> _State:
    """Build the entity graph once. With a schema, it is checked against it and gains the
    schema's action entities (without them ``action in Action::"group"`` never matches)."""
    entities: list[dict] = []
    teams: set[str] = set()
    groups: set[str] = set()
    envs: set[str] = set()
    agent_ids: set[str] = set()
    for agent in agents:
        for what, value in (("id", agent.id), ("owner", agent.owner), ("team", agent.team)):
            if value is not None and (problem := id_problem(value)):
                raise PolicyError(f"agent {agent.id!r}: {what} {problem}")
        if agent.id in agent_ids:
            raise PolicyError(f"duplicate agent id {agent.id!r}")
        agent_ids.add(agent.id)
        entities.append(_agent_entity(agent.id, agent.owner, agent.team))
        if agent.team:
            teams.add(agent.team)
    for approver in directory.approvers:
        entities.append({"uid": _uid(APPROVER, approver.id), "attrs": {},
                         "parents": [_uid(GROUP, g) for g in sorted(approver.groups)]})
        groups.update(approver.groups)
    for target in directory.targets:
        entities.append(_target_entity(target.id, target.env, target.attributes))
        if target.env:
            envs.add(target.env)
    for type_, ids in ((TEAM, teams), (GROUP, groups), (ENV, envs)):
        entities.extend({"uid": _uid(type_, i), "attrs": {}, "parents": []} for i in sorted(ids))
    try:
        handle = cedarpy.Entities.from_json_str(json.dumps(entities), rules.schema)
    except ValueError as exc:
        raise PolicyError(_entity_problem(entities, rules, exc)) from None
    return _State(rules, handle, frozenset(agent_ids), frozenset(a.id for a in directory.approvers),
                  frozenset(t.id for t in directory.targets))


def _entity_problem(entities: list[dict], rules: _Rules, exc: ValueError) -> str:
    """Name the entity that the schema refuses (cedarpy's message does not say which)."""
    if rules.schema is not None:
        for entity in entities:
            try:
                cedarpy.Entities.from_json_str(json.dumps([entity]), rules.schema)
            except ValueError as one:
                uid = entity["uid"]
                return f'{uid["type"]}::"{uid["id"]}" does not match the schema {rules.schema_file}: {one}'
    return f"cannot build the policy entities: {exc}"


# --------------------------------------------------------------------------- context


def normalize_context(context: Mapping[str, Any]) -> dict:
    """Check the proposal context: exactly the keys of :data:`CONTEXT_KEYS`, with exact types.

    Raises :class:`PolicyError`: the caller builds the context, so a wrong one is a bug,
    not a reason to guess (a float confidence must already be a 0-100 integer).
    """
    if not isinstance(context, Mapping):
        raise PolicyError("policy context must be a mapping")
    missing = [k for k in CONTEXT_KEYS if k not in context]
    extra = [k for k in context if k not in CONTEXT_KEYS and k not in PROPOSAL_CONTEXT_KEYS]
    if missing or extra:
        raise PolicyError(f"policy context: missing {missing}, unexpected {sorted(map(str, extra))}")
    out: dict = {}
    for key, (type_, low, high) in CONTEXT_KEYS.items():
        value = context[key]
        if type(value) is not type_:  # exact: True is not a confidence, 0.7 is not 70
            raise PolicyError(f"policy context: {key} must be {type_.__name__}, got {type(value).__name__}")
        if type_ is list and (len(value) > _MAX_SET or not all(isinstance(v, str) for v in value)):
            raise PolicyError(f"policy context: {key} must be a list of at most {_MAX_SET} strings")
        if low is not None and not low <= value <= high:
            raise PolicyError(f"policy context: {key} must be between {low} and {high}, got {value}")
        out[key] = value
    if out["posture"] not in POSTURES:
        raise PolicyError(f"policy context: posture must be one of {list(POSTURES)}, got {out['posture']!r}")
    for key in PROPOSAL_CONTEXT_KEYS:  # already in Cedar's form (proposal_context)
        value = context.get(key, _PROPOSAL_DEFAULTS[key])
        if type(value) is not type(_PROPOSAL_DEFAULTS[key]):
            raise PolicyError(f"policy context: {key} must be {type(_PROPOSAL_DEFAULTS[key]).__name__}")
        out[key] = value
    if out["stage"] not in STAGES:
        raise PolicyError(f"policy context: stage must be one of {list(STAGES)}, got {out['stage']!r}")
    return out


def proposal_context(proposal: Any) -> dict:
    """The context keys :data:`PROPOSAL_CONTEXT_KEYS` for ``proposal`` (a :class:`broker.model.Proposal`):
    ``tool`` and ``dataset`` as given ("" when absent) and ``arguments`` as a Cedar record
    (:func:`cedar_arguments`; {} when absent). The one place a proposal becomes these keys:
    whoever decides a proposal again rebuilds them here."""
    return {
        "tool": proposal.tool or "",
        "dataset": proposal.dataset or "",
        "arguments": cedar_arguments(proposal.arguments or {}),
    }


def cedar_arguments(arguments: Mapping[str, Any]) -> dict:
    """Map a proposal's ``arguments`` (a JSON object, checked by :func:`broker.model.check_arguments`)
    to Cedar's JSON value form: objects become records, lists sets (order and duplicates are
    lost: compare with ``contains``), strings, booleans and integers (64-bit) stay, a number
    with a whole value becomes an integer and another a ``decimal`` (``{"__extn": …}``, four
    decimal places at most). Raises :class:`InvalidRequest` for anything else, so nothing an
    agent sends reaches Cedar as an entity reference or extension value it did not mean."""
    return _cedar_value(check_arguments(dict(arguments)), "arguments")


def _cedar_value(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        return {k: _cedar_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_cedar_value(v, f"{where}[]") for v in value]
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        number = number_value(value)
        if isinstance(number, str):
            return {"__extn": {"fn": "decimal", "arg": number}}
        if number is not None:
            return number
    raise InvalidRequest(f"'{where}' has no policy value")


def _check_name(what: str, value: object) -> str:
    # action, target and agent ids come from the proposal: bad ones are the caller's 400.
    problem = id_problem(value)
    if problem:
        raise InvalidRequest(f"{what} {problem}")
    return value  # type: ignore[return-value]


# --------------------------------------------------------------------------- the gate


def _shorten(text: str, limit: int = _REASON_ERRORS_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _decided_by(names: list[str]) -> str:
    return ("policy " if len(names) == 1 else "policies ") + ", ".join(names)


@dataclass(frozen=True)
class _Evaluation:
    decision: Decision
    request: dict | None
    result: Any | None  # cedarpy.AuthzResult when Cedar was asked


class PolicyGate:
    """Decides proposals with pre-parsed Cedar policies and entities. Build with :meth:`load`."""

    def __init__(self, rules: _Rules, directory: Directory, agents: Iterable[PrincipalInfo]) -> None:
        """Use :meth:`load`; this takes already-loaded rules."""
        self._write_lock = threading.Lock()  # writers only; readers take ``self._state`` once
        self._agents = tuple(agents)
        self._directory = directory
        self._state = _build_state(rules, self._agents, directory)
        self._shadow: _Rules | None = None  # the shadow set (issue 23 item 2), never enforcing
        self._shadow_seen: tuple | None = None
        self.shadow_error: str | None = None
        self.on_shadow: Callable[[Decision], None] | None = None  # told each disagreement (metrics)

    @classmethod
    def load(cls, policy_dir: Path, directory: Directory, agents: Iterable[PrincipalInfo]) -> "PolicyGate":
        """Load every ``*.cedar`` file (sorted by name) and the schema in ``policy_dir``.

        Raises :class:`PolicyError` naming the file (and line, for a parse error) when
        anything is wrong, including an empty folder: the broker must not start then.
        """
        gate = cls(_load_rules(Path(policy_dir)), directory, agents)
        gate.reload_shadow_if_changed()
        return gate

    # -- keeping the inputs current

    def set_agents(self, agents: Iterable[PrincipalInfo]) -> None:
        """Rebuild the entities for a new list of agents (the old ones stay on error)."""
        agents = tuple(agents)
        with self._write_lock:
            self._state = _build_state(self._state.rules, agents, self._directory)
            self._agents = agents

    def set_directory(self, directory: Directory) -> None:
        """Rebuild the entities from ``directory`` (call after ``directory.reload_if_changed()``)."""
        with self._write_lock:
            self._state = _build_state(self._state.rules, self._agents, directory)
            self._directory = directory

    def reload_if_changed(self) -> bool:
        """Re-read the policy folder when any file was added, removed or modified.

        Returns True when a new version is in use. A broken new version raises
        :class:`PolicyError` and the previous one stays in force; the next call
        tries again, so the error is reported until the folder is fixed.
        """
        with self._write_lock:
            rules = self._state.rules
            if _dir_fingerprint(rules.directory) == rules.fingerprint:
                return False
            self._state = _build_state(_load_rules(rules.directory), self._agents, self._directory)
            return True

    @property
    def policy_set_hash(self) -> str:
        """The content hash of the policy set in force (:func:`set_hash`)."""
        return self._state.rules.set_hash

    @property
    def policy_files(self) -> tuple[tuple[str, str], ...]:
        """(file name, sha256 hex) of every file of the policy set in force, sorted by name."""
        return self._state.rules.files

    @property
    def policy_dir(self) -> Path:
        """The folder the policies are read from."""
        return self._state.rules.directory

    @property
    def policy_ids(self) -> tuple[str, ...]:
        """The ids of the loaded policies, in load order."""
        return tuple(p.name for p in self._state.rules.policies.values())

    @property
    def schema_actions(self) -> frozenset[str] | None:
        """The actions the schema declares, or None when the folder has no schema."""
        return self._state.rules.actions

    # -- the shadow set (issue 23 item 2)

    def reload_shadow_if_changed(self) -> bool:
        """(Re)load the shadow policies (``shadow/`` in the policy folder) when they or the
        enforcing set changed. Never raises: a broken shadow set is logged, kept in
        :attr:`shadow_error` and not evaluated; the enforcing set is never affected. True when
        the shadow set in use changed."""
        rules = self._state.rules
        shadow_dir = rules.directory / SHADOW_DIR
        seen = (rules.fingerprint, _dir_fingerprint(shadow_dir))
        if seen == self._shadow_seen:
            return False
        self._shadow_seen = seen
        try:
            shadow = _load_shadow(shadow_dir, rules)
        except PolicyError as exc:
            log.error("shadow policies not loaded (the enforcing set is unaffected): %s", exc.detail)
            self._shadow, self.shadow_error = None, exc.detail
            return True
        except Exception as exc:  # noqa: BLE001 - a shadow set never stops the broker
            log.exception("shadow policies not loaded (the enforcing set is unaffected)")
            self._shadow, self.shadow_error = None, f"{exc.__class__.__name__}: {exc}"
            return True
        if shadow is not None:
            self._shadow = shadow
            log.info("shadow policies loaded from %s: %s", shadow_dir, ", ".join(self.shadow_ids))
        self._shadow, self.shadow_error = shadow, None
        return True

    @property
    def shadow_ids(self) -> tuple[str, ...]:
        """The ids of the policies in the shadow folder (empty without a shadow set); the shadow
        set is the enforcing one with these laid over it."""
        shadow = self._shadow
        if shadow is None:
            return ()
        return tuple(p.name for p in shadow.policies.values() if p.file.startswith(SHADOW_DIR + "/"))

    def _beside(self, state: _State, shadow: _Rules, decision: Decision, agent_id: str, action: str, target: str,
                context: Mapping[str, Any], approver_principal: str | None) -> Decision:
        """``decision`` carrying what the shadow set decides where it differs; never changes the
        decision itself and never raises."""
        try:
            shadow_state = dataclasses.replace(state, rules=dataclasses.replace(
                shadow, schema=state.rules.schema, schema_file=state.rules.schema_file, actions=state.rules.actions,
                proposal_keys=state.rules.proposal_keys))
            other = self._evaluate(shadow_state, agent_id, action, target, context, approver_principal).decision
            summary = shadow_summary(decision, other)
            if summary is None:
                return decision
            decision = dataclasses.replace(decision, shadow=summary)
            if self.on_shadow is not None:
                self.on_shadow(decision)
        except Exception:  # noqa: BLE001 - the shadow set never decides anything
            log.exception("shadow evaluation failed for %s on %s", action, target)
        return decision

    # -- deciding

    @traced_step("jitgate.decision", lambda d: {"outcome": d.outcome, "policies": d.policies,
                                                "approvals_required": d.approvals_required, "approver_group": d.approver_group})
    def decide(self, *, agent_id: str, action: str, target: str, context: Mapping[str, Any],
               approver_principal: str | None = None) -> Decision:
        """Decide one proposal: deny, grant at once, or require approvals (with obligations).

        ``approver_principal`` makes the principal that approver instead of the agent
        (break-glass for oneself). Never raises because of what Cedar did: anything
        unexpected there is a deny. Raises :class:`PolicyError` for a malformed
        ``context`` and :class:`InvalidRequest` for malformed ids.
        """
        state = self._state
        decision = self._evaluate(state, agent_id, action, target, context, approver_principal).decision
        decision = dataclasses.replace(decision, policy_set_hash=state.rules.set_hash)
        shadow = self._shadow
        if shadow is not None:
            decision = self._beside(state, shadow, decision, agent_id, action, target, context, approver_principal)
        return decision

    def explain(self, *, agent_id: str, action: str, target: str, context: Mapping[str, Any],
                approver_principal: str | None = None) -> dict:
        """The decision plus, for every policy, its effect, whether its conditions held,
        whether it decided, and any evaluation error (for ``jitgate policy check``)."""
        state = self._state
        rules = state.rules
        evaluation = self._evaluate(state, agent_id, action, target, context, approver_principal)
        satisfied: set[str] = set()
        errors: dict[str, str] = {}
        all_errors: list[str] = []
        determining: set[str] = set()
        if evaluation.result is not None:
            determining = set(evaluation.result.diagnostics.reasons)
            all_errors = [rules.rename(e) for e in evaluation.result.diagnostics.errors]
            try:
                probe = cedarpy.is_authorized(evaluation.request, rules.probe_set, self._entities_for(state, evaluation.request),
                                              schema=rules.schema)
                satisfied = set(probe.diagnostics.reasons)
                for error in probe.diagnostics.errors:
                    match = _ERROR_POLICY.search(error)
                    if match:
                        errors[match.group(1)] = rules.rename(error)
            except Exception as exc:  # noqa: BLE001 - explain reports, it does not decide
                all_errors.append(f"probe evaluation failed: {exc}")
        return {
            "decision": evaluation.decision.to_dict(),
            "policy_set_hash": rules.set_hash,
            "request": None if evaluation.request is None else {
                "principal": evaluation.request["principal"],
                "action": evaluation.request["action"],
                "resource": evaluation.request["resource"],
                "context": evaluation.request["context"],
            },
            "schema": rules.schema_file,
            "policies": [
                {
                    "id": p.name, "effect": p.effect, "file": p.file,
                    "satisfied": p.cedar_id in satisfied,
                    "determining": p.cedar_id in determining,
                    "error": errors.get(p.cedar_id),
                    "approvals": p.approvals, "approver_group": p.approver_group,
                    "approvals_from": dict(p.quorum) if p.quorum else None,
                    "max_duration_s": p.max_duration,
                    "step_up": p.step_up,
                }
                for p in rules.policies.values()
            ],
            "errors": all_errors,
        }

    # -- internals

    def _evaluate(self, state: _State, agent_id: str, action: str, target: str, context: Mapping[str, Any],
                  approver_principal: str | None) -> _Evaluation:
        ctx = normalize_context(context)
        declared = state.rules.proposal_keys.get(action)
        if declared is not None:
            for key in _later_keys():
                if key not in declared:
                    ctx.pop(key, None)  # a schema from before these keys: policy cannot name them anyway
        _check_name("agent id", agent_id)
        _check_name("action", action)
        _check_name("target", target)
        if approver_principal is not None:
            _check_name("approver", approver_principal)
        rules = state.rules
        if rules.actions is not None and action not in rules.actions:
            # Cedar would refuse to even build this request; say it plainly instead.
            return _Evaluation(Decision.deny(f"unknown action '{action}'"), None, None)
        if approver_principal is not None:
            principal = _uid(APPROVER, approver_principal)
        else:
            principal = _uid(AGENT, agent_id)
        resource_type = AGENT if action in AGENT_RESOURCE_ACTIONS else TARGET
        request = {"principal": principal, "action": _uid(ACTION, action),
                   "resource": _uid(resource_type, target), "context": ctx}
        try:
            result = cedarpy.is_authorized(request, rules.policy_set, self._entities_for(state, request),
                                           schema=rules.schema)
            decision = self._interpret(rules, result, action, target)
        except BaseException as exc:
            # A Rust panic surfaces as pyo3's PanicException, which is not an Exception.
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            log.exception("policy evaluation failed for %s on %s", action, target)
            return _Evaluation(Decision.deny(_EVALUATION_FAILED), request, None)
        return _Evaluation(decision, request, result)

    @staticmethod
    def _entities_for(state: _State, request: dict) -> Any:
        """The pre-built entities, plus a small delta for a principal or resource they lack.

        An unknown target is still an entity (with only ``name``) so that policies
        reading ``resource.name`` evaluate instead of erroring; only the delta is parsed.
        """
        delta: list[dict] = []
        for uid in (request["principal"], request["resource"]):
            type_, id_ = uid["type"], uid["id"]
            if type_ == AGENT and id_ not in state.agents:
                entity = _agent_entity(id_, None, None)
            elif type_ == TARGET and id_ not in state.targets:
                entity = _target_entity(id_, None, {})
            elif type_ == APPROVER and id_ not in state.approvers:
                entity = {"uid": uid, "attrs": {}, "parents": []}
            else:
                continue
            if entity not in delta:
                delta.append(entity)
        if not delta:
            return state.entities
        return state.entities.with_added_json_str(json.dumps(delta))

    @staticmethod
    def _interpret(rules: _Rules, result: Any, action: str, target: str) -> Decision:
        """Turn Cedar's answer into a Decision. Only a clean Allow becomes a yes."""
        reasons = sorted((rules.policies[r] for r in result.diagnostics.reasons), key=lambda p: p.position)
        errors = list(result.diagnostics.errors)
        error_text = _shorten("; ".join(rules.rename(e) for e in errors))
        if result.decision is not cedarpy.Decision.Allow:
            if reasons:
                return Decision.deny(f"denied by {_decided_by([p.name for p in reasons])}", [p.name for p in reasons])
            if result.decision is cedarpy.Decision.NoDecision:
                return Decision.deny(f"the request does not fit the policy schema: {error_text}")
            reason = f"no policy permits {action} on {target} (default deny)"
            return Decision.deny(f"{reason}; errors: {error_text}" if errors else reason)

        # Cedar skips a policy whose condition errors. For a permit that only means one
        # reason less to allow; for a forbid it could hide a deny, so that is a deny.
        suspect: list[str] = []
        for error in errors:
            match = _ERROR_POLICY.search(error)
            policy = rules.policies.get(match.group(1)) if match else None
            if policy is None or policy.effect != "permit":
                suspect.append(policy.name if policy else "?")
        if suspect:
            named = [n for n in suspect if n != "?"]
            return Decision.deny(f"a forbid policy could not be evaluated; {error_text}", named)
        if not reasons or any(p.effect != "permit" for p in reasons):
            return Decision.deny(_EVALUATION_FAILED)
        return _obligations(reasons)


def _obligations(permits: list[_Policy]) -> Decision:
    """Combine the determining permits' annotations, the strictest winning.

    Approvals: the highest. Duration: the shortest that is set. Step-up: asked when any of
    them asks for it (and approval is needed at all). Group, channel and
    backup group: from the permit asking for the most approvals (ties: lowest id).
    When any of them asks for a mixed quorum (``@approvals_from``), the quorums combine
    instead: every group any of them names, each with the highest count asked of it (a
    plain permit counts as ``approver_group:approvals``); a permit that asks for approvals
    from no group leaves nobody able to approve, as it would alone.
    """
    names = [p.name for p in permits]
    approvals = max(p.approvals for p in permits)
    durations = [p.max_duration for p in permits if p.max_duration is not None]
    lead = min(permits, key=lambda p: (-p.approvals, p.name))
    decided = _decided_by(names)
    group = lead.approver_group
    quorum = _combined_quorum(permits, lead) if approvals and any(p.quorum for p in permits) else None
    if quorum is not None:
        approvals = sum(n for _, n in quorum)
        group = quorum[0][0] if quorum else None
        if approvals > MAX_APPROVALS:
            return Decision.deny(f"the combined quorum asks for more than {MAX_APPROVALS} approvals; decided by {decided}",
                                 names)
        if not quorum:
            quorum, approvals = None, max(p.approvals for p in permits)
    if approvals == 0:
        outcome, reason = "auto_grant", f"pre-approved, no approval needed; decided by {decided}"
    elif group is None:
        outcome = "require_approval"
        reason = f"needs {_plural(approvals, 'approval')} but no approver group set by policy; decided by {decided}"
    elif quorum is not None and len(quorum) > 1:
        outcome = "require_approval"
        reason = f"needs {quorum_words(quorum)}; decided by {decided}"
    else:
        outcome = "require_approval"
        reason = f"needs {_plural(approvals, 'approval')} from {group}; decided by {decided}"
    step_up = next((p.step_up for p in permits if p.step_up), None) if outcome == "require_approval" else None
    if step_up:
        reason = f"{reason}; every approval needs step-up ({step_up})"
    return Decision(
        outcome=outcome,
        policies=tuple(names),
        approvals_required=approvals,
        approver_group=group,
        max_duration_s=min(durations) if durations else None,
        channel=lead.channel,
        backup_group=lead.backup_group,
        reason=reason,
        approvals_from=quorum,
        step_up=step_up,
    )


def _combined_quorum(permits: list[_Policy], lead: _Policy) -> tuple[tuple[str, int], ...]:
    """Every group the permits name with the highest count asked of it, the lead permit's
    groups first; empty when a permit asks for approvals from no group (nobody may approve)."""
    counts: dict[str, int] = {}
    for p in sorted(permits, key=lambda p: (p is not lead, -p.approvals, p.name)):
        if p.approvals == 0:
            continue
        asked = p.quorum or (((p.approver_group, p.approvals),) if p.approver_group else None)
        if asked is None:
            return ()
        for g, n in asked:
            counts[g] = max(counts.get(g, 0), n)
    return tuple(counts.items())


# --------------------------------------------------------------------------- shadow policies (issue 23 item 2)

SHADOW_DIR = "shadow"
# What a disagreement is about: the outcome and the obligations people live with.
COMPARED = ("outcome", "approvals_required", "approver_group", "max_duration_s")
DEFAULT_DENY = "(default deny)"  # the "policy" of a decision no policy made


def differences(enforcing: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    """The :data:`COMPARED` keys on which two decisions (``to_dict`` form) differ."""
    return [k for k in COMPARED if enforcing.get(k) != other.get(k)]


def shadow_summary(enforcing: Decision, shadow: Decision) -> dict | None:
    """What the audit entry records of a shadow decision that differs from the enforcing one:
    the shadow outcome, its obligations, the shadow policies that decided it and what differs;
    None when they agree."""
    mine, theirs = enforcing.to_dict(), shadow.to_dict()
    differ = differences(mine, theirs)
    if not differ:
        return None
    return {"outcome": shadow.outcome, "policies": list(shadow.policies),
            "approvals_required": shadow.approvals_required, "approver_group": shadow.approver_group,
            "max_duration_s": shadow.max_duration_s, "reason": _shorten(shadow.reason), "differs": differ}


def _load_shadow(shadow_dir: Path, enforcing: _Rules) -> _Rules | None:
    """The shadow set: the enforcing policies with the ``*.cedar`` files of ``shadow_dir``
    laid over them (a shadow policy replaces the enforcing policy of the same ``@id`` and
    adds itself otherwise), so a shadow folder holds only what would change. The shadow files
    are checked as the enforcing ones are and validated against the enforcing set's schema
    (the entities are shared). None when there is no such folder or it holds no policy."""
    if not shadow_dir.is_dir() or not any(shadow_dir.glob(_POLICY_GLOB)):
        return None
    shadow = _load_rules(shadow_dir)  # parse, annotations, unique ids, file modes: as for the enforcing set
    if enforcing.schema is not None:
        combined = "".join(_read_text(p) + "\n" for p in _policy_files(shadow_dir)[0])
        result = cedarpy.validate_policies(combined, enforcing.schema)
        if not result.validation_passed:
            problems = []
            for error in result.errors[:5]:
                policy = shadow.policies.get(error.policy_id)
                where = f"{policy.file}: policy {policy.name!r}" if policy else shadow_dir.name
                problems.append(f"{where}: {_VALIDATION_PREFIX.sub('', error.error)}")
            raise PolicyError(f"shadow policies do not validate against {enforcing.schema_file}: " + "; ".join(problems))
    if _dir_fingerprint(enforcing.directory) != enforcing.fingerprint:
        raise PolicyError("the enforcing policy files changed and are not loaded yet; the shadow set waits for them")
    replaced = {p.name for p in shadow.policies.values()}
    layers: list[tuple[str, dict]] = []  # (file, EST of one static policy), enforcing first, in load order
    for folder, prefix in ((enforcing.directory, ""), (shadow_dir, f"{SHADOW_DIR}/")):
        for path in _policy_files(folder)[0]:
            try:
                statics = json.loads(cedarpy.policies_to_json_str(_read_text(path))).get("staticPolicies", {})
            except ValueError as exc:
                raise PolicyError(f"{path}: {exc}") from None
            for key in sorted(statics, key=lambda k: int(k[len("policy"):]) if k[len("policy"):].isdigit() else -1):
                est = statics[key]
                name = (est.get("annotations") or {}).get("id")
                if prefix or name not in replaced:
                    layers.append((prefix + path.name, est))
    ests = {f"policy{i}": est for i, (_, est) in enumerate(layers)}
    policies = {cid: _policy_from_est(cid, i, ests[cid], layers[i][0]) for i, cid in enumerate(ests)}
    names = [p.name for p in policies.values()]
    if len(set(names)) != len(names):
        raise PolicyError("shadow policies: a policy without @id collides with another's positional id; give them @id")
    policy_set = cedarpy.PolicySet.from_json_str(json.dumps({"staticPolicies": ests, "templates": {}, "templateLinks": []}))
    return _Rules(shadow_dir, policy_set, policy_set, policies, enforcing.schema, enforcing.schema_file, enforcing.actions,
                  (), enforcing.proposal_keys)
