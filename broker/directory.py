"""Who may approve and what can be touched: ``approvers.yaml`` and ``targets.yaml``.

The directory is read at start and re-read when a file changes. Both files are
operator-written configuration, so every entry is checked strictly and a mistake
refuses the whole file with a message naming the file and the entry: a typo in a
group name or a chat binding must not silently hand out (or take away) the right
to approve.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


from .errors import ConfigError
from .watched import Watched, load_yaml, read_trusted

MAX_ID_LEN = 200
# An operator file larger than this is a mistake (or an attack on the parser), not a directory.
MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_ENTRIES = 10_000
MAX_ATTR_LIST = 100
_CEDAR_LONG_MAX = 2**63 - 1
# Cc: control characters; Cf: invisible format characters (bidi overrides, zero-width joiners)
# that make two different ids look identical in a chat message; Zl/Zp: line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})

_APPROVER_KEYS = frozenset({"id", "groups", "slack", "teams", "email", "suspended"})
# An entry with ``slack_usergroups`` binds the members of Slack user groups, not one person.
_SLACK_BINDING_KEYS = frozenset({"id", "groups", "slack_usergroups"})
# The approver id of someone bound only through a Slack user group: ``slack:U0123ABCD``.
# Reserved, so no entry in the file can take (or be mistaken for) such a person's id.
GROUP_BOUND_PREFIX = "slack:"
_USERGROUP_ID = re.compile(r"^S[A-Z0-9]{2,30}$")
_TARGET_KEYS = frozenset({"id", "env", "attributes", "credential", "tools", "datasets"})
# ``tools:`` / ``datasets:``: what a proposal on the target may name (absent: anything).
MAX_TARGET_NAMES = 100
# ``name`` is set by the policy gate from the target id; an attribute may not shadow it.
_RESERVED_TARGET_ATTRS = frozenset({"name"})


# What jitgate binds by e-mail: an ASCII address, dot-atom local part, host-name labels.
_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)


def email_key(value: object) -> str | None:
    """The form in which e-mail addresses are compared, or None for one jitgate never binds.

    The normalisation is exactly this: the address must be ASCII (local part of
    ``A-Z a-z 0-9`` and ``!#$%&'*+/=?^_`{|}~.-``, a domain of host-name labels, at most
    254 characters), and is then lower-cased, ASCII letters only. Anything else (non-ASCII
    such as the Kelvin sign U+212A that ``str.lower()`` folds into ``k``, quoted local parts,
    spaces, comments) is refused, never folded into something that might match.
    """
    if not isinstance(value, str) or not value.isascii() or len(value) > 254 or not _EMAIL.fullmatch(value):
        return None
    return value.lower()


def id_problem(value: object) -> str | None:
    """Why ``value`` is not an acceptable identifier, or ``None`` when it is.

    Identifiers are non-empty strings of at most 200 characters without control or
    invisible format characters and without surrounding whitespace.
    """
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__} (quote it in YAML)"
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_LEN:
        return f"must be at most {MAX_ID_LEN} characters"
    if value != value.strip():
        return "must not start or end with whitespace"
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value):
        return "must not contain control characters"
    return None


def is_valid_id(value: object) -> bool:
    """True when ``value`` is an acceptable identifier (see :func:`id_problem`)."""
    return id_problem(value) is None


@dataclass(frozen=True)
class Approver:
    """A person who may approve requests, with their groups and chat identities."""

    id: str
    groups: frozenset[str]
    slack: str | None = None
    teams: str | None = None
    email: str | None = None
    # ``suspended: true`` in the approvers file: the person is known (and named in the audit
    # log) but may not decide, revoke or pull the kill switch until the line is removed.
    suspended: bool = False


@dataclass(frozen=True)
class SlackGroupBinding:
    """Everyone in these Slack user groups may act, as themselves, with these jitgate groups.

    Membership is Slack's to say (asked when someone clicks); such a person's approver id is
    their explicit entry's id when they have one, else ``slack:<their Slack user id>``.
    """

    id: str
    groups: frozenset[str]
    usergroups: tuple[str, ...]


def group_bound_id(slack_user_id: str) -> str:
    """The approver id of a person known to jitgate only through a Slack user group."""
    return GROUP_BOUND_PREFIX + slack_user_id


def aliases(approver: Approver) -> frozenset[str]:
    """Every approver id this person acts, or has acted, under: their own id and, when they have
    a Slack account, ``slack:<its id>`` (the id a member of a bound Slack user group gets before
    the file names them). The owner rule and "one person counts once" compare these sets."""
    ids = {approver.id}
    if approver.slack:
        ids.add(group_bound_id(approver.slack))
    return frozenset(ids)


@dataclass(frozen=True)
class Target:
    """A system an agent may ask to touch. ``attributes`` is read-only by convention."""

    id: str
    env: str | None = None
    # A dict cannot be hashed; the id (plus env) identifies a target anyway.
    attributes: dict = field(default_factory=dict, hash=False)
    # The credential plugin and its action→privileges mapping (broker/credentials), or None.
    credential: dict | None = field(default=None, hash=False, compare=False)
    # The tools and datasets a proposal on this target may name; None: any (the key is absent).
    tools: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None


def _read_list(path: Path, key: str) -> list:
    """The list under ``key`` in the YAML file at ``path``; a missing file is an empty list."""
    return _read_lists(path, key)[key]


def _read_lists(path: Path, key: str, *optional: str) -> dict[str, list]:
    """The list under ``key`` and under each ``optional`` key of the YAML file at ``path`` (each
    an empty list when absent; a missing file is all empty)."""
    keys = (key, *optional)
    empty: dict[str, list] = {k: [] for k in keys}
    text = read_trusted(path, f"{key} file", max_bytes=MAX_FILE_BYTES)
    if text is None:
        return empty
    doc = load_yaml(text, str(path))
    if doc is None:
        return empty
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping with a '{key}:' list at the top")
    unknown = set(doc) - set(keys)
    if unknown:
        expected = " and ".join(f"'{k}'" for k in keys)
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(map(str, unknown))}; expected only {expected}")
    out = dict(empty)
    for k in keys:
        entries = doc.get(k)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: '{k}' must be a list")
        if len(entries) > MAX_ENTRIES:
            raise ConfigError(f"{path}: more than {MAX_ENTRIES} entries under '{k}'")
        out[k] = entries
    return out


_GROUP_KEYS = frozenset({"id", "step_up"})
# What a group entry may require of every approval its members give (``step_up: webauthn``).
STEP_UP_KINDS = frozenset({"webauthn"})


def _parse_group(entry: object, where: str) -> tuple[str, str | None]:
    """One ``groups:`` entry of the approvers file: a group's id and the step-up it requires."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping with 'id' (and 'step_up')")
    unknown = set(entry) - _GROUP_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(map(str, unknown))}; allowed: {sorted(_GROUP_KEYS)}")
    group = _check_id(entry.get("id"), "id", where)
    step_up = entry.get("step_up")
    if step_up is not None and step_up not in STEP_UP_KINDS:
        raise ConfigError(f"{where}: step_up must be one of {sorted(STEP_UP_KINDS)}, got {step_up!r}")
    return group, step_up


def _where(path: Path | str, index: int, entry: object) -> str:
    """Name an entry for an error message: file, position and id when it has one."""
    name = entry.get("id") if isinstance(entry, dict) else None
    label = f"entry {index + 1}"
    if isinstance(name, str) and is_valid_id(name):
        label += f" (id {name!r})"
    return f"{path}: {label}"


def _check_id(value: object, what: str, where: str) -> str:
    problem = id_problem(value)
    if problem:
        raise ConfigError(f"{where}: {what} {problem}")
    return value  # type: ignore[return-value]


def _optional_id(entry: dict, key: str, where: str) -> str | None:
    value = entry.get(key)
    return None if value is None else _check_id(value, key, where)


def _id_list(entry: dict, key: str, where: str) -> list[str]:
    value = entry.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    if len(value) > MAX_ATTR_LIST:
        raise ConfigError(f"{where}: {key} has more than {MAX_ATTR_LIST} items")
    return [_check_id(item, f"each of {key}", where) for item in value]


def _parse_approver(entry: object, where: str) -> Approver:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping with at least 'id'")
    unknown = set(entry) - _APPROVER_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(map(str, unknown))}; allowed: {sorted(_APPROVER_KEYS)}")
    email = _optional_id(entry, "email", where)
    if email is not None and email_key(email) is None:
        raise ConfigError(f"{where}: email {email!r} is not an ASCII e-mail address jitgate can bind "
                          "(see docs/security.md, e-mail binding)")
    approver_id = _check_id(entry.get("id"), "id", where)
    if approver_id.startswith(GROUP_BOUND_PREFIX):
        raise ConfigError(f"{where}: ids starting with {GROUP_BOUND_PREFIX!r} are reserved for people bound "
                          "through a Slack user group")
    return Approver(
        id=approver_id,
        groups=frozenset(_id_list(entry, "groups", where)),
        slack=_optional_id(entry, "slack", where),
        teams=_optional_id(entry, "teams", where),
        email=email,
        suspended=_suspended(entry, where),
    )


def _suspended(entry: dict, where: str) -> bool:
    value = entry.get("suspended", False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: suspended must be true or false")  # never a string read as false
    return value


def _parse_slack_binding(entry: dict, where: str) -> SlackGroupBinding:
    unknown = set(entry) - _SLACK_BINDING_KEYS
    if unknown:
        raise ConfigError(f"{where}: an entry with slack_usergroups binds the members of Slack user groups, not one "
                          f"person, so it takes only {sorted(_SLACK_BINDING_KEYS)}; unexpected: {sorted(map(str, unknown))} "
                          "(give a person their own entry)")
    binding_id = _check_id(entry.get("id"), "id", where)
    if binding_id.startswith(GROUP_BOUND_PREFIX):
        raise ConfigError(f"{where}: ids starting with {GROUP_BOUND_PREFIX!r} are reserved for people bound "
                          "through a Slack user group")
    groups = frozenset(_id_list(entry, "groups", where))
    if not groups:
        raise ConfigError(f"{where}: a Slack user group binding needs 'groups' (what its members may do)")
    usergroups = _id_list(entry, "slack_usergroups", where)
    if not usergroups:
        raise ConfigError(f"{where}: slack_usergroups must list at least one Slack user group id")
    for ug in usergroups:
        if not _USERGROUP_ID.match(ug):
            raise ConfigError(f"{where}: {ug!r} is not a Slack user group id (like S0123ABCD; not the @handle)")
    return SlackGroupBinding(id=binding_id, groups=groups, usergroups=tuple(dict.fromkeys(usergroups)))


def _parse_entry(entry: object, where: str) -> Approver | SlackGroupBinding:
    """One ``approvers:`` entry: a person, or (with ``slack_usergroups``) a Slack user group binding."""
    if isinstance(entry, dict) and "slack_usergroups" in entry:
        return _parse_slack_binding(entry, where)
    return _parse_approver(entry, where)


def _attr_value(value: object, key: str, where: str) -> object:
    """Attribute values Cedar can hold without ambiguity: strings, whole numbers, booleans, lists of them."""
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not -_CEDAR_LONG_MAX - 1 <= value <= _CEDAR_LONG_MAX:
            raise ConfigError(f"{where}: attribute {key!r} is out of range for a Cedar Long")
        return value
    if isinstance(value, list):
        if len(value) > MAX_ATTR_LIST:
            raise ConfigError(f"{where}: attribute {key!r} has more than {MAX_ATTR_LIST} items")
        items = tuple(_attr_value(item, key, where) for item in value)
        if any(isinstance(item, tuple) for item in items):
            raise ConfigError(f"{where}: attribute {key!r} may not nest lists")
        return items
    # Floats have no Cedar type; maps would be read by Cedar as entity references when
    # they carry ``__entity`` keys, so they are refused rather than guessed at.
    raise ConfigError(
        f"{where}: attribute {key!r} must be a string, an integer, a boolean or a list of those, "
        f"got {type(value).__name__}"
    )


def _parse_target(entry: object, where: str) -> Target:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping with at least 'id'")
    unknown = set(entry) - _TARGET_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(map(str, unknown))}; allowed: {sorted(_TARGET_KEYS)}")
    target_id = _check_id(entry.get("id"), "id", where)
    raw_attrs = entry.get("attributes")
    if raw_attrs is None:
        raw_attrs = {}
    if not isinstance(raw_attrs, dict):
        raise ConfigError(f"{where}: attributes must be a mapping")
    attributes: dict = {}
    for key, value in raw_attrs.items():
        _check_id(key, "attribute name", where)
        if key in _RESERVED_TARGET_ATTRS:
            raise ConfigError(f"{where}: attribute {key!r} is reserved (it is set from the target id)")
        attributes[key] = _attr_value(value, key, where)
    credential = entry.get("credential")
    if credential is not None and (not isinstance(credential, dict) or not isinstance(credential.get("plugin"), str)):
        raise ConfigError(f"{where}: credential must be a mapping naming its plugin (e.g. plugin: postgresql)")
    return Target(id=target_id, env=_optional_id(entry, "env", where), attributes=attributes, credential=credential,
                  tools=_names(entry, "tools", where), datasets=_names(entry, "datasets", where))


def _names(entry: dict, key: str, where: str) -> tuple[str, ...] | None:
    """A target's ``tools`` or ``datasets``: a list of distinct names (ids), or None when absent.
    An empty list allows none: a proposal on the target may not name one."""
    if key not in entry:
        return None
    raw = entry[key]
    if not isinstance(raw, list) or len(raw) > MAX_TARGET_NAMES:
        raise ConfigError(f"{where}: {key} must be a list of at most {MAX_TARGET_NAMES} names")
    names = tuple(_check_id(item, f"{key} entry", where) for item in raw)
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: {key} names one entry twice")
    return names


@dataclass(frozen=True)
class _Snapshot:
    """One consistent view of both files; swapped whole so readers never see half a reload."""

    approvers: tuple[Approver, ...]
    targets: tuple[Target, ...]
    by_id: Mapping[str, Approver]
    targets_by_id: Mapping[str, Target]
    by_slack: Mapping[str, Approver]
    by_teams: Mapping[str, Approver]
    by_email: Mapping[str, Approver]
    slack_bindings: tuple[SlackGroupBinding, ...] = ()
    # The approvers file's ``groups:``: the groups whose every approval needs step-up, and which.
    step_up: Mapping[str, str] = field(default_factory=dict)


def _index(approvers: Iterable[Approver], targets: Iterable[Target], approvers_src: str, targets_src: str,
           slack_bindings: Iterable[SlackGroupBinding] = (), step_up: Mapping[str, str] | None = None) -> _Snapshot:
    """Build the lookup tables; two entries claiming the same id or chat identity are an error."""
    approvers, targets, slack_bindings = tuple(approvers), tuple(targets), tuple(slack_bindings)
    by_id: dict[str, Approver] = {}
    bindings: dict[str, dict[str, Approver]] = {"slack": {}, "teams": {}, "email": {}}
    for n, approver in enumerate(approvers):
        where = f"{approvers_src}: entry {n + 1} (id {approver.id!r})"
        if approver.id in by_id:
            raise ConfigError(f"{where}: duplicate approver id")
        if approver.id.startswith(GROUP_BOUND_PREFIX):
            raise ConfigError(f"{where}: ids starting with {GROUP_BOUND_PREFIX!r} are reserved")
        by_id[approver.id] = approver
        # One chat identity bound to two approvers would let one person act as either.
        for kind, value in (("slack", approver.slack), ("teams", approver.teams), ("email", approver.email)):
            if value is None:
                continue
            key = value if kind == "slack" else email_key(value) if kind == "email" else value.lower()
            if key is None:
                raise ConfigError(f"{where}: email {value!r} is not an ASCII e-mail address jitgate can bind")
            other = bindings[kind].get(key)
            if other is not None:
                raise ConfigError(f"{where}: {kind} identity {value!r} is already bound to approver {other.id!r}")
            bindings[kind][key] = approver
    binding_ids: set[str] = set()
    for binding in slack_bindings:
        if binding.id in by_id or binding.id in binding_ids:
            raise ConfigError(f"{approvers_src}: Slack user group binding {binding.id!r}: duplicate id")
        binding_ids.add(binding.id)
    targets_by_id: dict[str, Target] = {}
    for n, target in enumerate(targets):
        if target.id in targets_by_id:
            raise ConfigError(f"{targets_src}: entry {n + 1} (id {target.id!r}): duplicate target id")
        targets_by_id[target.id] = target
    return _Snapshot(approvers, targets, by_id, targets_by_id, bindings["slack"], bindings["teams"], bindings["email"],
                     slack_bindings, dict(step_up or {}))


class Directory:
    """Approvers and targets, with lookups by id, group and chat identity.

    Build from files with :meth:`load` (and call :meth:`reload_if_changed` to follow
    edits), or directly from entries in tests.
    """

    def __init__(
        self,
        approvers: Iterable[Approver] = (),
        targets: Iterable[Target] = (),
        *,
        approvers_path: Path | None = None,
        targets_path: Path | None = None,
        slack_bindings: Iterable[SlackGroupBinding] = (),
        step_up: Mapping[str, str] | None = None,
    ) -> None:
        """Index the given entries; raise :class:`ConfigError` on duplicate ids or chat bindings.
        ``step_up`` maps a group to the step-up every approval from its members needs."""
        self._approvers_path = approvers_path
        self._targets_path = targets_path
        self._lock = threading.Lock()
        self._snap = _index(approvers, targets, str(approvers_path or "approvers"), str(targets_path or "targets"),
                            slack_bindings, step_up)
        self._watched = Watched(lambda: (approvers_path, targets_path))
        if approvers_path is not None and targets_path is not None:
            self._watched.stamp = self._watched.now()

    @classmethod
    def load(cls, approvers_path: Path, targets_path: Path) -> "Directory":
        """Read both files; a missing file is an empty list, anything malformed raises :class:`ConfigError`."""
        approvers_path, targets_path = Path(approvers_path), Path(targets_path)
        watched = Watched(lambda: (approvers_path, targets_path))
        approvers, targets, slack_bindings, step_up = watched.load(lambda: cls._read(approvers_path, targets_path))
        directory = cls(approvers, targets, approvers_path=approvers_path, targets_path=targets_path,
                        slack_bindings=slack_bindings, step_up=step_up)
        directory._watched = watched  # its fingerprint was taken before reading
        return directory

    @staticmethod
    def _read(approvers_path: Path, targets_path: Path) -> tuple[list[Approver], list[Target], list[SlackGroupBinding],
                                                                 dict[str, str]]:
        lists = _read_lists(approvers_path, "approvers", "groups")
        entries = [
            _parse_entry(entry, _where(approvers_path, n, entry))
            for n, entry in enumerate(lists["approvers"])
        ]
        step_up: dict[str, str] = {}
        seen: set[str] = set()
        for n, entry in enumerate(lists["groups"]):
            where = f"{approvers_path}: groups entry {n + 1}"
            group, kind = _parse_group(entry, where)
            if group in seen:
                raise ConfigError(f"{where}: group {group!r} is listed twice")
            seen.add(group)
            if kind is not None:
                step_up[group] = kind
        targets = [
            _parse_target(entry, _where(targets_path, n, entry))
            for n, entry in enumerate(_read_list(targets_path, "targets"))
        ]
        approvers = [e for e in entries if isinstance(e, Approver)]
        return approvers, targets, [e for e in entries if isinstance(e, SlackGroupBinding)], step_up

    def reload_if_changed(self) -> bool:
        """Re-read the files when their modification time, size or existence changed.

        Returns True when new data was loaded. A broken new version raises
        :class:`ConfigError` and the previous data stays in use; the next call tries
        again, so the error keeps being reported until the file is fixed.
        """
        if self._approvers_path is None or self._targets_path is None:
            return False
        with self._lock:
            def read() -> _Snapshot:
                approvers, targets, slack_bindings, step_up = self._read(self._approvers_path, self._targets_path)
                return _index(approvers, targets, str(self._approvers_path), str(self._targets_path), slack_bindings,
                              step_up)

            snap = self._watched.reload(read)
            if snap is None:
                return False
            self._snap = snap
            return True

    @property
    def approvers(self) -> tuple[Approver, ...]:
        """All approvers, in file order."""
        return self._snap.approvers

    @property
    def targets(self) -> tuple[Target, ...]:
        """All targets, in file order."""
        return self._snap.targets

    def approver(self, approver_id: str) -> Approver | None:
        """The approver with this id, or None."""
        return self._snap.by_id.get(approver_id)

    def target(self, target_id: str) -> Target | None:
        """The target with this id, or None."""
        return self._snap.targets_by_id.get(target_id)

    def step_up_of(self, group: str) -> str | None:
        """The step-up (``webauthn``) the approvers file requires of every approval from ``group``, or None."""
        return self._snap.step_up.get(group)

    def members(self, group: str) -> tuple[Approver, ...]:
        """The approvers in ``group``, in file order."""
        return tuple(a for a in self._snap.approvers if group in a.groups)

    @property
    def slack_bindings(self) -> tuple[SlackGroupBinding, ...]:
        """The Slack user group bindings, in file order (they are not approvers themselves)."""
        return self._snap.slack_bindings

    def slack_alias_problem(self, email_binding: bool) -> str | None:
        """Why a person could count twice through Slack user group bindings, or None.

        A member of a bound Slack user group whom the file does not name by Slack id acts as
        ``slack:<id>``. So while such bindings exist, every person in the file must be
        recognisable in Slack before anyone is given a new identity there: by their ``slack:``
        id, or (with JITGATE_EMAIL_BINDING on) by their ``email:`` as Slack confirms it.
        """
        if not self._snap.slack_bindings:
            return None
        for person in self._snap.approvers:
            if person.slack or (email_binding and person.email):
                continue
            groups = ", ".join(ug for b in self._snap.slack_bindings for ug in b.usergroups)
            fix = "their e-mail address ('email:', matched as Slack confirms it)" if email_binding else \
                "JITGATE_EMAIL_BINDING=1 and their e-mail address ('email:')"
            return (f"{self._approvers_path or 'approvers'}: approver {person.id!r} has no 'slack:' id while Slack user "
                    f"groups are bound ({groups}): as a member of one, {person.id} would count as a second person "
                    f"(slack:<their Slack id>). Add 'slack: U…' to {person.id}'s entry, or {fix}")
        return None

    def slack_unbound_people(self) -> bool:
        """True when someone in the file has no ``slack:`` id (so Slack users must be told apart by e-mail)."""
        return any(not person.slack for person in self._snap.approvers)

    def slack_usergroups_for(self, group: str) -> tuple[str, ...]:
        """The Slack user groups whose members are in jitgate ``group`` through a binding."""
        out = [ug for b in self._snap.slack_bindings if group in b.groups for ug in b.usergroups]
        return tuple(dict.fromkeys(out))

    def by_slack(self, user_id: str) -> Approver | None:
        """The approver bound to this Slack user id (exact match), or None."""
        return self._snap.by_slack.get(user_id)

    def by_teams(self, aad_object_id: str) -> Approver | None:
        """The approver bound to this Entra object id (GUIDs compare case-insensitively), or None."""
        return self._snap.by_teams.get(aad_object_id.lower())

    def by_email(self, email: str) -> Approver | None:
        """The approver with this e-mail address, compared after :func:`email_key`'s
        normalisation (an address it refuses matches nobody), or None.

        Callers use this only when e-mail binding is enabled in the settings, and only with an
        address the platform verified for a full member of its own workspace or tenant.
        """
        key = email_key(email)
        return self._snap.by_email.get(key) if key is not None else None
