"""``jitgate policy test DIR``: test cases in YAML next to the policies, run against the policy
set (with its schema) the broker would load, with a readable diff for every case that fails.

A test file (``DIR/tests/*.yaml`` by default) holds the agents its cases name and the cases::

    agents:                          # owner and team, as agents.yaml gives them
      deploy-bot: {owner: dave, team: platform}
    defaults:                        # merged into every case (context is merged key by key)
      context: {posture: normal}
    cases:
      - name: a confident prod deploy needs two SREs
        principal: deploy-bot        # the agent (or `approver: alice` for break-glass for oneself)
        action: deploy
        resource: prod/payments-api  # the target, from the targets file
        context: {confidence: 90}    # the rest of the context has neutral defaults
        expect:
          outcome: require_approval  # auto_grant | require_approval | deny
          approvals: 2
          group: sre
          max_duration_s: 900
          policies: [prod-deploy]    # the policies that decided (any order)

A case's context may also hold ``tool``, ``dataset`` and ``arguments`` (JSON as a proposal sends
it; mapped to Cedar as the broker maps it, :func:`broker.policy.proposal_context`).

Only the expectations a case states are checked: ``outcome``, ``approvals``, ``approvals_from``
(a mixed quorum, e.g. ``{sre: 1, security: 1}``), ``group``,
``backup_group``, ``channel``, ``max_duration_s``, ``step_up`` (``webauthn``, or null for none),
``policies``, ``reason_contains``.
Exit status: 0 all passed, 1 a case failed (or, with ``--require-coverage``, a policy never
decided any case), 2 a test file or the policy set is broken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .directory import Directory
from .errors import BrokerError
from .policy import CONTEXT_KEYS, Decision, PolicyGate, PrincipalInfo, cedar_arguments
from .watched import load_yaml

# Neutral values for the context keys a case leaves out; keys added later default by type.
CONTEXT_DEFAULTS: dict[str, Any] = {
    "confidence": 90, "duration_s": 300, "posture": "normal", "evidence_count": 1, "delegation_depth": 0,
    "hour_utc": 12, "break_glass": False, "stage": "submit",
}
# expectation key -> what it is compared with
EXPECTATIONS = {
    "outcome": lambda d: d.outcome,
    "approvals": lambda d: d.approvals_required,
    "approvals_from": lambda d: dict(d.approvals_from) if d.approvals_from else None,
    "group": lambda d: d.approver_group,
    "backup_group": lambda d: d.backup_group,
    "channel": lambda d: d.channel,
    "max_duration_s": lambda d: d.max_duration_s,
    "step_up": lambda d: d.step_up,
    "policies": lambda d: sorted(d.policies),
    "reason_contains": lambda d: d.reason,
}
CASE_KEYS = {"name", "principal", "approver", "action", "resource", "context", "expect"}


class SuiteError(BrokerError):
    code, status, title = "policy-test-error", 400, "Broken policy test"


@dataclass
class CaseResult:
    file: str
    name: str
    diffs: list[str] = field(default_factory=list)
    decision: Decision | None = None

    @property
    def ok(self) -> bool:
        return not self.diffs


@dataclass
class Report:
    results: list[CaseResult]
    policy_ids: tuple[str, ...]

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.ok]

    @property
    def uncovered(self) -> list[str]:
        decisive = {p for r in self.results if r.decision for p in r.decision.policies}
        return [p for p in self.policy_ids if p not in decisive]

    def render(self, *, verbose: bool = False) -> str:
        lines: list[str] = []
        current = None
        for r in self.results:
            if r.ok and not verbose:
                continue
            if r.file != current:
                lines.append(r.file)
                current = r.file
            lines.append(f"  {'ok  ' if r.ok else 'FAIL'}  {r.name}")
            for diff in r.diffs:
                lines.append(f"        {diff}")
            if not r.ok and r.decision is not None:
                lines.append(f"        decided by: {', '.join(r.decision.policies) or 'no policy'}; "
                             f"reason: {r.decision.reason}")
        n, bad = len(self.results), len(self.failed)
        covered = len(self.policy_ids) - len(self.uncovered)
        summary = f"{n} case{'s' if n != 1 else ''}: {n - bad} passed, {bad} failed; " \
                  f"policies that decided a case: {covered} of {len(self.policy_ids)}"
        if self.uncovered:
            summary += f" (never: {', '.join(self.uncovered)})"
        lines.append(summary)
        return "\n".join(lines)


def test_files(policy_dir: Path, tests: Path | None = None) -> list[Path]:
    """The test files: ``tests`` (a file or a folder), else ``policy_dir/tests``."""
    where = tests if tests is not None else policy_dir / "tests"
    if where.is_file():
        return [where]
    files = sorted(p for pattern in ("*.yaml", "*.yml") for p in where.glob(pattern) if p.is_file())
    if not files:
        raise SuiteError(f"no test files (*.yaml) in {where}")
    return files


def _load(path: Path) -> dict:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as e:
        raise SuiteError(f"{path}: {e}") from None
    except BrokerError as e:
        raise SuiteError(str(e)) from None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list) or not data["cases"]:
        raise SuiteError(f"{path}: a test file is a mapping with a non-empty 'cases' list")
    unknown = set(data) - {"agents", "defaults", "cases"}
    if unknown:
        raise SuiteError(f"{path}: unknown top-level key(s): {', '.join(sorted(unknown))}")
    return data


def _agents(path: Path, data: dict) -> list[PrincipalInfo]:
    agents = data.get("agents") or {}
    if not isinstance(agents, dict):
        raise SuiteError(f"{path}: 'agents' maps an agent id to its owner and team")
    out = []
    for agent_id, info in agents.items():
        info = info or {}
        if not isinstance(info, dict) or set(info) - {"owner", "team"}:
            raise SuiteError(f"{path}: agent {agent_id!r} takes 'owner' and 'team' only")
        out.append(PrincipalInfo(str(agent_id), info.get("owner"), info.get("team")))
    return out


def _context(given: object, where: str) -> dict:
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise SuiteError(f"{where}: 'context' must be a mapping")
    out = {}
    for key, (type_, low, _high) in CONTEXT_KEYS.items():
        out[key] = CONTEXT_DEFAULTS.get(key, low if type_ is int and low is not None else type_())
    out.update(given)
    if "arguments" in out:
        try:
            out["arguments"] = cedar_arguments(out["arguments"])
        except BrokerError as e:
            raise SuiteError(f"{where}: context.arguments: {e.detail}") from None
    return out


def _check_case(path: Path, n: int, case: object, defaults: dict) -> dict:
    where = f"{path}: case {n + 1}"
    if not isinstance(case, dict):
        raise SuiteError(f"{where}: a case is a mapping")
    unknown = set(case) - CASE_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")
    merged = {**{k: v for k, v in defaults.items() if k != "context"}, **case}
    merged["context"] = {**(defaults.get("context") or {}), **(case.get("context") or {})}
    for key in ("action", "resource", "expect"):
        if key not in merged:
            raise SuiteError(f"{where} ({merged.get('name', 'unnamed')}): '{key}' is required")
    if (merged.get("principal") is None) == (merged.get("approver") is None):
        raise SuiteError(f"{where}: name either a 'principal' (an agent) or an 'approver' (break-glass)")
    expect = merged["expect"]
    if not isinstance(expect, dict) or not expect:
        raise SuiteError(f"{where}: 'expect' is a mapping of expectations")
    bad = set(expect) - set(EXPECTATIONS)
    if bad:
        raise SuiteError(f"{where}: unknown expectation(s) {', '.join(sorted(bad))}; "
                         f"known: {', '.join(EXPECTATIONS)}")
    merged["name"] = str(merged.get("name") or f"case {n + 1}")
    return merged


def _diffs(expect: dict, decision: Decision) -> list[str]:
    out = []
    for key, want in expect.items():
        got = EXPECTATIONS[key](decision)
        if key == "policies":
            want = sorted(want) if isinstance(want, list) else want
        if key == "reason_contains":
            if str(want) not in got:
                out.append(f"reason: expected to contain {want!r}, got {got!r}")
        elif got != want:
            out.append(f"{key}: expected {want!r}, got {got!r}")
    return out


def run(policy_dir: Path, directory: Directory, files: list[Path]) -> Report:
    """Run every case of ``files`` against the policy set in ``policy_dir``."""
    suites = [(path, _load(path)) for path in files]
    agents: dict[str, PrincipalInfo] = {}
    for path, data in suites:  # one agent may appear in several files, the same each time
        for a in _agents(path, data):
            if agents.setdefault(a.id, a) != a:
                raise SuiteError(f"{path}: agent {a.id!r} has another owner or team in an earlier file")
    try:
        gate = PolicyGate.load(policy_dir, directory, agents.values())
    except BrokerError as e:
        raise SuiteError(f"the policy set does not load: {e}") from None
    results = []
    for path, data in suites:
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise SuiteError(f"{path}: 'defaults' must be a mapping")
        cases = [_check_case(path, n, case, defaults) for n, case in enumerate(data["cases"])]
        for case in cases:
            result = CaseResult(str(path), case["name"])
            context = _context(case["context"], f"{path}: {case['name']}")
            principal = case.get("approver") or case["principal"]
            try:
                decision = gate.decide(agent_id=str(principal), action=str(case["action"]),
                                       target=str(case["resource"]), context=context,
                                       approver_principal=case.get("approver"))
            except BrokerError as e:
                result.diffs.append(f"could not be decided: {e}")
            else:
                result.decision = decision
                result.diffs = _diffs(case["expect"], decision)
            results.append(result)
    return Report(results, gate.policy_ids)
