"""The Cedar gate: loading, obligations, deny reasons, fail-closed behaviour."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cedarpy
import pytest

from broker import policy as policy_module
from broker.directory import Approver, Directory, Target
from broker.errors import InvalidRequest, PolicyError
from broker.context import build_context
from broker.policy import Decision, PolicyGate, PrincipalInfo

REPO = Path(__file__).resolve().parents[2]

SCHEMA = """
namespace Jitgate {
  entity Team;
  entity Agent in [Team] = { owner: String, team: String };
  entity Group;
  entity Approver in [Group];
  entity Env;
  entity Target in [Env] = { name: String, sensitivity?: String };
  type Proposal = {
    confidence: Long, duration_s: Long, posture: String, evidence_count: Long,
    delegation_depth: Long, hour_utc: Long, break_glass: Bool, stage: String,
    approval_count: Long, approval_groups: Set<String>, approval_people: Set<String>,
    approval_desks: Set<String>, approval_first_at: Long, approval_last_at: Long,
    seconds_since_first_approval: Long, seconds_since_last_approval: Long, seconds_since_approved: Long,
    agent_grants_active: Long, agent_grants_active_env: Long, agent_grants_last_hour: Long,
  };
  action "changes";
  action "read" appliesTo { principal: [Agent, Approver], resource: [Target], context: Proposal };
  action "deploy", "restart" in ["changes"]
    appliesTo { principal: [Agent, Approver], resource: [Target], context: Proposal };
}
"""

AGENTS = [
    PrincipalInfo("deploy-bot", owner="alice", team="platform"),
    PrincipalInfo("lone-bot", owner=None, team=None),
]


def directory() -> Directory:
    return Directory(
        approvers=[
            Approver("alice", frozenset({"sre", "on-call"}), slack="U1", teams=None, email=None),
            Approver("bob", frozenset({"sre"}), slack="U2", teams=None, email=None),
        ],
        targets=[
            Target("prod/payments-api", "prod", {"sensitivity": "high"}),
            Target("prod/orders-db", "prod", {}),
            Target("staging/payments-api", "staging", {}),
        ],
    )


def ctx(**overrides) -> dict:
    base = build_context(confidence=80, duration_s=600, posture="normal", evidence_count=1, delegation_depth=0,
                         now=12 * 3600)
    base.update(overrides)
    return base


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def make_gate(tmp_path: Path, files: dict[str, str], agents=AGENTS) -> PolicyGate:
    return PolicyGate.load(write(tmp_path / "policies", files), directory(), agents)


def decide(gate: PolicyGate, action: str = "deploy", target: str = "prod/payments-api",
           agent: str = "deploy-bot", **context) -> Decision:
    return gate.decide(agent_id=agent, action=action, target=target, context=ctx(**context))


def bump_mtime(path: Path) -> None:
    """Move a file's mtime forward so a change is seen even within one timestamp tick."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


PROD_DEPLOY = """
@id("prod-deploy") @approvals("2") @approver_group("sre") @max_duration("900")
permit(principal, action == Jitgate::Action::"deploy", resource in Jitgate::Env::"prod")
when { context.confidence >= 70 };
"""
STAGING_READ = """
@id("staging-read") @approvals("0") @max_duration("3600")
permit(principal in Jitgate::Team::"platform", action == Jitgate::Action::"read", resource in Jitgate::Env::"staging");
"""
NO_EXPORT = """
@id("no-deploy-in-incident")
forbid(principal, action == Jitgate::Action::"deploy", resource) when { context.posture == "incident" };
"""


# ----------------------------------------------------------------- outcomes and obligations


def test_auto_grant_envelope(tmp_path):
    """A permit with @approvals("0") grants at once, with its max duration and no approver group."""
    gate = make_gate(tmp_path, {"p.cedar": STAGING_READ})
    d = decide(gate, action="read", target="staging/payments-api")
    assert d.outcome == "auto_grant"
    assert d.approvals_required == 0
    assert d.max_duration_s == 3600
    assert d.policies == ("staging-read",)
    assert "staging-read" in d.reason


def test_auto_grant_only_for_the_team_in_the_envelope(tmp_path):
    """An agent outside the platform team falls outside the envelope and is denied by default."""
    gate = make_gate(tmp_path, {"p.cedar": STAGING_READ})
    assert decide(gate, action="read", target="staging/payments-api", agent="lone-bot").outcome == "deny"


def test_two_approval_obligations(tmp_path):
    """The prod-deploy example (policies/) requires 2 approvals from sre for at most 900 s."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    d = decide(gate)
    assert d == Decision(
        outcome="require_approval", policies=("prod-deploy",), approvals_required=2, approver_group="sre",
        max_duration_s=900, channel=None, backup_group=None,
        reason="needs 2 approvals from sre; decided by policy prod-deploy",
    )


def test_strictest_obligations_win(tmp_path):
    """With two determining permits: most approvals, shortest duration, group/channel from the stricter one."""
    gate = make_gate(tmp_path, {"p.cedar": """
        @id("b-broad") @approvals("1") @approver_group("platform") @max_duration("600") @channel("#general")
        permit(principal, action == Jitgate::Action::"deploy", resource);
        @id("a-strict") @approvals("3") @approver_group("sre") @max_duration("1800")
        @channel("#prod-access") @backup_group("on-call")
        permit(principal, action == Jitgate::Action::"deploy", resource in Jitgate::Env::"prod");
    """})
    d = decide(gate)
    assert d.outcome == "require_approval"
    assert d.approvals_required == 3
    assert d.max_duration_s == 600
    assert (d.approver_group, d.channel, d.backup_group) == ("sre", "#prod-access", "on-call")
    assert set(d.policies) == {"a-strict", "b-broad"}
    assert d.reason == "needs 3 approvals from sre; decided by policies b-broad, a-strict"


def test_tie_on_approvals_takes_lowest_policy_id(tmp_path):
    """When two permits ask for as many approvals, the alphabetically lowest id sets the group."""
    gate = make_gate(tmp_path, {"p.cedar": """
        @id("zulu") @approvals("2") @approver_group("platform")
        permit(principal, action == Jitgate::Action::"deploy", resource);
        @id("alpha") @approvals("2") @approver_group("sre")
        permit(principal, action == Jitgate::Action::"deploy", resource);
    """})
    assert decide(gate).approver_group == "sre"


def test_missing_approvals_annotation_means_one(tmp_path):
    """A permit without @approvals requires one approval, not zero."""
    gate = make_gate(tmp_path, {"p.cedar": """
        @id("plain") @approver_group("sre")
        permit(principal, action == Jitgate::Action::"deploy", resource);
    """})
    d = decide(gate)
    assert (d.outcome, d.approvals_required, d.max_duration_s) == ("require_approval", 1, None)


def test_no_approver_group_is_noted_in_reason(tmp_path):
    """Approvals without any approver group still require approval, and the reason says so."""
    gate = make_gate(tmp_path, {"p.cedar": """
        @id("nobody") @approvals("1")
        permit(principal, action == Jitgate::Action::"deploy", resource);
    """})
    d = decide(gate)
    assert d.outcome == "require_approval"
    assert d.approver_group is None
    assert "no approver group set by policy" in d.reason


def test_forbid_beats_permit_with_reason_and_ids(tmp_path):
    """A matching forbid denies even when a permit matches; the reason and policies name the forbid."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY + NO_EXPORT})
    assert decide(gate).outcome == "require_approval"
    d = decide(gate, posture="incident")
    assert d.outcome == "deny"
    assert d.policies == ("no-deploy-in-incident",)
    assert d.reason == "denied by policy no-deploy-in-incident"
    assert d.approvals_required == 0 and d.approver_group is None


def test_default_deny_when_no_permit_matches(tmp_path):
    """No matching permit is a deny whose reason names the action and target and says default deny."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    d = decide(gate, action="restart", target="prod/orders-db")
    assert d.outcome == "deny"
    assert d.policies == ()
    assert d.reason == "no policy permits restart on prod/orders-db (default deny)"


def test_confidence_threshold(tmp_path):
    """prod-deploy requires context.confidence >= 70: 69 is denied, 70 is allowed."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    assert decide(gate, confidence=69).outcome == "deny"
    assert decide(gate, confidence=70).outcome == "require_approval"


def test_unknown_target_is_default_denied(tmp_path):
    """A target absent from targets.yaml has no Env parent, so env-scoped permits do not match."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    d = decide(gate, target="prod/not-in-targets-file")
    assert d.outcome == "deny"
    assert "default deny" in d.reason


def test_unknown_target_still_has_its_name(tmp_path):
    """An unknown target is an entity with attribute name, so policies may match on it without erroring."""
    gate = make_gate(tmp_path, {"p.cedar": """
        @id("by-name") @approvals("1") @approver_group("sre")
        permit(principal, action == Jitgate::Action::"deploy", resource)
        when { resource.name like "scratch/*" };
    """})
    assert decide(gate, target="scratch/tmp-1").outcome == "require_approval"
    assert decide(gate, target="prod/x").outcome == "deny"


def test_agent_attributes_and_team_parent(tmp_path):
    """The agent principal carries owner and team attributes ("" when unknown) and its Team parent."""
    gate = make_gate(tmp_path, {"p.cedar": """
        @id("owned") @approvals("0")
        permit(principal, action == Jitgate::Action::"read", resource) when { principal.owner == "alice" };
        @id("unowned") @approvals("1") @approver_group("sre")
        permit(principal, action == Jitgate::Action::"deploy", resource) when { principal.team == "" };
    """})
    assert decide(gate, action="read").outcome == "auto_grant"
    assert decide(gate, action="read", agent="lone-bot").outcome == "deny"
    assert decide(gate, action="deploy", agent="lone-bot").outcome == "require_approval"
    assert decide(gate, action="deploy").outcome == "deny"


def test_target_attributes_reach_policies(tmp_path):
    """Attributes from targets.yaml are resource attributes (here: sensitivity)."""
    gate = make_gate(tmp_path, {"p.cedar": PROD_DEPLOY + """
        @id("sensitive") forbid(principal, action, resource)
        when { resource has sensitivity && resource.sensitivity == "high" && context.evidence_count == 0 };
    """})
    assert decide(gate, evidence_count=0).outcome == "deny"
    assert decide(gate, target="prod/orders-db", evidence_count=0).outcome == "require_approval"


def test_approver_principal_for_break_glass(tmp_path):
    """With approver_principal the principal is Jitgate::Approver, a member of its groups."""
    gate = make_gate(tmp_path, {"p.cedar": """
        @id("break-glass") @approvals("0") @max_duration("1800")
        permit(principal in Jitgate::Group::"on-call", action == Jitgate::Action::"restart", resource)
        when { context.break_glass };
    """})
    glass = ctx(break_glass=True)
    d = gate.decide(agent_id="deploy-bot", action="restart", target="prod/orders-db", context=glass,
                    approver_principal="alice")
    assert (d.outcome, d.policies, d.max_duration_s) == ("auto_grant", ("break-glass",), 1800)
    # bob is not on call; the agent itself is not an approver at all
    assert gate.decide(agent_id="deploy-bot", action="restart", target="prod/orders-db", context=glass,
                       approver_principal="bob").outcome == "deny"
    assert gate.decide(agent_id="deploy-bot", action="restart", target="prod/orders-db",
                       context=glass).outcome == "deny"


def test_unknown_approver_principal_has_no_groups(tmp_path):
    """An approver id absent from approvers.yaml is in no group, so group-scoped permits do not match."""
    gate = make_gate(tmp_path, {"p.cedar": """
        @id("break-glass") @approvals("0")
        permit(principal in Jitgate::Group::"on-call", action, resource);
    """})
    assert gate.decide(agent_id="deploy-bot", action="restart", target="x", context=ctx(),
                       approver_principal="mallory").outcome == "deny"


def test_delegate_resource_is_an_agent(tmp_path):
    """For action delegate the resource is Jitgate::Agent::"<target>", with its team."""
    gate = make_gate(tmp_path, {"p.cedar": """
        @id("team-delegation") @approvals("0")
        permit(principal, action == Jitgate::Action::"delegate", resource is Jitgate::Agent)
        when { resource.team == principal.team && principal.team != "" };
    """}, agents=AGENTS + [PrincipalInfo("helper-bot", "bob", "platform")])
    assert decide(gate, action="delegate", target="helper-bot").outcome == "auto_grant"
    assert decide(gate, action="delegate", target="lone-bot").outcome == "deny"


def test_set_agents_rebuilds_entities(tmp_path):
    """After set_agents the new team membership is what the policies see."""
    gate = make_gate(tmp_path, {"p.cedar": STAGING_READ})
    assert decide(gate, action="read", target="staging/payments-api", agent="lone-bot").outcome == "deny"
    gate.set_agents([PrincipalInfo("lone-bot", owner="bob", team="platform")])
    assert decide(gate, action="read", target="staging/payments-api", agent="lone-bot").outcome == "auto_grant"


def test_set_directory_rebuilds_entities(tmp_path):
    """After set_directory a target's new environment is what the policies see."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    assert decide(gate, target="new/api").outcome == "deny"
    gate.set_directory(Directory(targets=[Target("new/api", "prod", {})]))
    assert decide(gate, target="new/api").outcome == "require_approval"


# ----------------------------------------------------------------- schema


def test_unknown_action_denied_with_schema(tmp_path):
    """With a schema, an undeclared action is denied as "unknown action" without an evaluation error."""
    gate = make_gate(tmp_path, {"jitgate.cedarschema": SCHEMA, "prod.cedar": PROD_DEPLOY})
    d = decide(gate, action="format-disk")
    assert d.outcome == "deny"
    assert d.reason == "unknown action 'format-disk'"
    assert d.policies == ()
    assert decide(gate).outcome == "require_approval"


def test_without_schema_unknown_action_is_default_deny(tmp_path):
    """Without a schema every action is allowed to reach Cedar, which denies it by default."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    assert gate.schema_actions is None
    assert decide(gate, action="format-disk").reason.endswith("(default deny)")


def test_schema_invalid_policy_refuses_to_load(tmp_path):
    """A policy that does not validate against the schema is refused, naming file and policy id."""
    bad = """
        @id("typo-in-context") @approvals("1")
        permit(principal, action == Jitgate::Action::"deploy", resource) when { context.confidnce > 1 };
    """
    with pytest.raises(PolicyError) as err:
        make_gate(tmp_path, {"jitgate.cedarschema": SCHEMA, "prod.cedar": PROD_DEPLOY, "bad.cedar": bad})
    assert "bad.cedar" in err.value.detail
    assert "typo-in-context" in err.value.detail
    assert "confidnce" in err.value.detail


def test_schema_undeclared_action_in_policy_refuses_to_load(tmp_path):
    """A policy naming an action the schema does not declare is refused at load."""
    bad = '@id("ghost") permit(principal, action == Jitgate::Action::"teleport", resource);'
    with pytest.raises(PolicyError, match="ghost"):
        make_gate(tmp_path, {"jitgate.cedarschema": SCHEMA, "bad.cedar": bad})


def test_action_groups_from_schema(tmp_path):
    """`action in Action::"changes"` matches the schema's member actions (entities carry the schema's actions)."""
    gate = make_gate(tmp_path, {"jitgate.cedarschema": SCHEMA, "p.cedar": """
        @id("changes") @approvals("1") @approver_group("sre")
        permit(principal, action in Jitgate::Action::"changes", resource in Jitgate::Env::"prod");
    """})
    assert decide(gate, action="restart").outcome == "require_approval"
    assert decide(gate, action="read").outcome == "deny"


def test_json_schema_is_accepted(tmp_path):
    """A *.cedarschema.json schema is loaded like the Cedar-syntax one."""
    string = {"type": "String"}
    json_schema = json.dumps({"Jitgate": {
        "entityTypes": {
            "Team": {}, "Group": {}, "Env": {}, "Approver": {"memberOfTypes": ["Group"]},
            "Agent": {"memberOfTypes": ["Team"], "shape": {"type": "Record", "attributes": {
                "owner": string, "team": string}}},
            "Target": {"memberOfTypes": ["Env"], "shape": {"type": "Record", "attributes": {
                "name": string, "sensitivity": {**string, "required": False}}}},
        },
        "actions": {"read": {"appliesTo": {
            "principalTypes": ["Agent"], "resourceTypes": ["Target"],
            "context": {"type": "Record", "attributes": {
                **{k: {"type": "Long"} for k in ("confidence", "duration_s", "evidence_count",
                                                  "delegation_depth", "hour_utc", "approval_count",
                                                  "approval_first_at", "approval_last_at",
                                                  "seconds_since_first_approval", "seconds_since_last_approval",
                                                  "seconds_since_approved", "agent_grants_active",
                                                  "agent_grants_active_env", "agent_grants_last_hour")},
                **{k: {"type": "Set", "element": string} for k in ("approval_groups", "approval_people",
                                                                   "approval_desks")},
                "posture": string, "stage": string, "break_glass": {"type": "Boolean"}}}}}},
    }})
    gate = make_gate(tmp_path, {"s.cedarschema.json": json_schema, "p.cedar":
                                '@id("r") @approvals("0") permit(principal, action == Jitgate::Action::"read", resource);'})
    assert gate.schema_actions == frozenset({"read"})
    assert decide(gate, action="read").outcome == "auto_grant"
    assert decide(gate, action="deploy").reason == "unknown action 'deploy'"


def test_two_schema_files_refuse_to_load(tmp_path):
    """Two schemas in one folder are ambiguous and refused."""
    with pytest.raises(PolicyError, match="more than one schema"):
        make_gate(tmp_path, {"a.cedarschema": SCHEMA, "b.cedarschema": SCHEMA, "p.cedar": PROD_DEPLOY})


def test_broken_schema_names_the_file(tmp_path):
    """A schema that does not parse refuses start-up and names the schema file."""
    with pytest.raises(PolicyError, match="jitgate.cedarschema"):
        make_gate(tmp_path, {"jitgate.cedarschema": "namespace Jitgate { entity A \n }", "p.cedar": PROD_DEPLOY})


def test_target_attribute_not_in_schema_is_refused(tmp_path):
    """Entities are checked against the schema; the error names the offending target."""
    folder = write(tmp_path / "policies", {"jitgate.cedarschema": SCHEMA, "p.cedar": PROD_DEPLOY})
    odd = Directory(targets=[Target("prod/odd", "prod", {"tier": 1})])
    with pytest.raises(PolicyError, match='Jitgate::Target::"prod/odd"'):
        PolicyGate.load(folder, odd, AGENTS)


# ----------------------------------------------------------------- loading errors


def test_broken_policy_file_names_file_and_line(tmp_path):
    """A parse error refuses to load and names the file and the line of the error."""
    broken = (
        '@id("fine")\n'                                               # line 1
        'permit(principal, action, resource);\n'                      # line 2
        '\n'                                                          # line 3
        '// a comment; with a semicolon\n'                            # line 4
        '@id("broken")\n'                                             # line 5
        'permit(principal, action == Jitgate::Action::"x", resource)\n'  # line 6
        'when { context.confidence === 1 };\n'                        # line 7
    )
    with pytest.raises(PolicyError) as err:
        make_gate(tmp_path, {"a-good.cedar": PROD_DEPLOY, "broken.cedar": broken})
    assert "broken.cedar:7:" in err.value.detail
    assert "a-good.cedar" not in err.value.detail


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # a stray ';' inside the condition, on the last line of the policy
        ('permit(principal, action, resource);\n\npermit(principal, action, resource)\n  when { 1 == 1 ;\n', 4),
        # a semantic error only found after the whole policy parsed
        ('permit(principal, action, resource);\n\npermit(\n  principal,\n  actoin,\n  resource\n);\n', 5),
        # a missing ';' between two policies: the second one starts where the error is
        ('permit(principal, action, resource)\n\npermit(principal, action, resource);\n', 3),
        # an unterminated last policy points at where it starts
        ('permit(principal, action, resource);\n\n@id("open")\npermit(principal, action, resource)\n', 3),
        # a string with a ';' and a comment do not confuse the location
        ('permit(principal, action, resource) when { context.posture == "a;b" }; // x;\n'
         'permit(principal, action, resource) when { context.x ++ 1 };\n', 2),
    ],
)
def test_parse_error_line_variants(tmp_path, text, line):
    """The reported line is the line of the error for syntax, semantic and termination errors."""
    with pytest.raises(PolicyError) as err:
        make_gate(tmp_path, {"broken.cedar": text})
    assert f"broken.cedar:{line}:" in err.value.detail


def test_empty_policy_dir_refuses_to_load(tmp_path):
    """A folder without policies is refused (fail closed), not loaded as deny-everything silently."""
    with pytest.raises(PolicyError, match="no policies found"):
        make_gate(tmp_path, {"README.txt": "nothing here", "only-comments.cedar": "// todo\n"})


def test_missing_policy_dir_refuses_to_load(tmp_path):
    """A policy folder that does not exist refuses start-up."""
    with pytest.raises(PolicyError, match="does not exist"):
        PolicyGate.load(tmp_path / "nope", directory(), AGENTS)


def test_duplicate_id_across_files(tmp_path):
    """The same @id in two files is refused, naming both files."""
    with pytest.raises(PolicyError) as err:
        make_gate(tmp_path, {"a.cedar": PROD_DEPLOY, "b.cedar": PROD_DEPLOY})
    assert "prod-deploy" in err.value.detail
    assert "a.cedar" in err.value.detail and "b.cedar" in err.value.detail


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ('@approvals("11")', "@approvals"),
        ('@approvals("two")', "@approvals"),
        ('@approvals("-1")', "@approvals"),
        ('@max_duration("0")', "@max_duration"),
        ('@max_duration("15m")', "@max_duration"),
        ('@approver_group("")', "@approver_group"),
        ('@approval("2")', "unknown annotation"),
        ("@id", "@id"),
    ],
)
def test_bad_annotations_refuse_to_load(tmp_path, annotations, expected):
    """Obligation annotations are checked at load: approvals 0..10, a positive max_duration, known names."""
    text = f'{annotations}\npermit(principal, action == Jitgate::Action::"deploy", resource);\n'
    with pytest.raises(PolicyError, match=expected) as err:
        make_gate(tmp_path, {"bad.cedar": text})
    assert "bad.cedar" in err.value.detail


def test_templates_are_refused(tmp_path):
    """A template (?principal slot) authorizes nothing until linked; jitgate refuses it rather than ignore it."""
    with pytest.raises(PolicyError, match="templates"):
        make_gate(tmp_path, {"t.cedar": "permit(principal == ?principal, action, resource);"})


def test_policies_without_id_use_positional_ids(tmp_path):
    """A policy without @id is reported by Cedar's positional id, counted across files in name order."""
    gate = make_gate(tmp_path, {
        "a.cedar": PROD_DEPLOY,
        "b.cedar": 'forbid(principal, action, resource) when { context.hour_utc < 6 };',
    })
    d = decide(gate, hour_utc=3)
    assert d.policies == ("policy1",)
    assert gate.policy_ids == ("prod-deploy", "policy1")


# ----------------------------------------------------------------- reload


def test_reload_picks_up_new_file(tmp_path):
    """reload_if_changed loads a newly added policy file and reports True once."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    assert gate.reload_if_changed() is False
    assert decide(gate, action="read", target="staging/payments-api").outcome == "deny"
    write(tmp_path / "policies", {"staging.cedar": STAGING_READ})
    assert gate.reload_if_changed() is True
    assert decide(gate, action="read", target="staging/payments-api").outcome == "auto_grant"
    assert gate.reload_if_changed() is False


def test_reload_keeps_old_policies_on_broken_file(tmp_path):
    """A broken new version raises PolicyError (naming the file) and the old policies stay in force."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    path = tmp_path / "policies" / "prod.cedar"
    path.write_text(PROD_DEPLOY.replace("permit(", "permit((", 1))
    bump_mtime(path)
    with pytest.raises(PolicyError, match="prod.cedar:3:"):
        gate.reload_if_changed()
    assert decide(gate).outcome == "require_approval"
    # still broken: reported again rather than silently accepted
    with pytest.raises(PolicyError):
        gate.reload_if_changed()
    path.write_text(PROD_DEPLOY.replace('@approvals("2")', '@approvals("3")'))
    bump_mtime(path)
    assert gate.reload_if_changed() is True
    assert decide(gate).approvals_required == 3


def test_reload_sees_removed_file(tmp_path):
    """Removing a policy file is a change: its permits stop applying."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY, "staging.cedar": STAGING_READ})
    (tmp_path / "policies" / "staging.cedar").unlink()
    assert gate.reload_if_changed() is True
    assert decide(gate, action="read", target="staging/payments-api").outcome == "deny"


# ----------------------------------------------------------------- fail closed


def test_erroring_forbid_denies(tmp_path):
    """Cedar skips a forbid whose condition errors; the gate denies instead of letting the permit through."""
    gate = make_gate(tmp_path, {"p.cedar": PROD_DEPLOY + """
        @id("needs-tier") forbid(principal, action, resource) when { resource.tier > 2 };
    """})
    d = decide(gate)
    assert d.outcome == "deny"
    assert d.policies == ("needs-tier",)
    assert "needs-tier" in d.reason and "policy0" not in d.reason


def test_erroring_permit_does_not_allow(tmp_path):
    """A permit whose condition errors does not allow; the deny reason carries the shortened error."""
    gate = make_gate(tmp_path, {"p.cedar": """
        @id("tiered") @approvals("0") permit(principal, action, resource) when { resource.tier > 2 };
    """})
    d = decide(gate)
    assert d.outcome == "deny"
    assert "default deny" in d.reason
    assert "tiered" in d.reason and "tier" in d.reason


def test_cedar_exception_denies(tmp_path, monkeypatch):
    """Any exception from cedarpy while deciding is a deny with reason "policy evaluation failed"."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})

    def explode(*args, **kwargs):
        raise RuntimeError("engine on fire")

    monkeypatch.setattr(policy_module.cedarpy, "is_authorized", explode)
    d = decide(gate)
    assert (d.outcome, d.reason) == ("deny", "policy evaluation failed")


def test_request_not_fitting_schema_denies(tmp_path):
    """A request Cedar refuses to build (here: principal type not allowed for the action) is a deny."""
    schema = SCHEMA.replace('action "read" appliesTo { principal: [Agent, Approver]',
                            'action "read" appliesTo { principal: [Agent]')
    gate = make_gate(tmp_path, {"jitgate.cedarschema": schema, "p.cedar":
                                '@id("r") @approvals("0") permit(principal, action == Jitgate::Action::"read", resource);'})
    assert decide(gate, action="read").outcome == "auto_grant"
    d = gate.decide(agent_id="deploy-bot", action="read", target="prod/orders-db", context=ctx(),
                    approver_principal="alice")
    assert d.outcome == "deny"
    assert "schema" in d.reason


# ----------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    "bad",
    [
        {"confidence": 0.8},
        {"confidence": True},
        {"confidence": 101},
        {"hour_utc": 24},
        {"break_glass": 1},
        {"posture": "relaxed"},
        {"duration_s": "600"},
    ],
)
def test_context_types_are_checked(tmp_path, bad):
    """The context must hold exact types and ranges (a 0..1 float confidence is the caller's bug)."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    with pytest.raises(PolicyError):
        decide(gate, **bad)


def test_context_keys_are_exact(tmp_path):
    """A missing or unexpected context key is refused."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    missing = ctx()
    del missing["hour_utc"]
    with pytest.raises(PolicyError, match="hour_utc"):
        gate.decide(agent_id="deploy-bot", action="deploy", target="prod/x", context=missing)
    with pytest.raises(PolicyError, match="extra"):
        gate.decide(agent_id="deploy-bot", action="deploy", target="prod/x", context={**ctx(), "extra": 1})


@pytest.mark.parametrize("field", ["action", "target"])
@pytest.mark.parametrize("value", ["", "x" * 201, "evil\nname", "rtl\u202ename"])
def test_bad_ids_are_invalid_requests(tmp_path, field, value):
    """Action and target come from the agent: empty, overlong or control-character ids are a 400."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    kwargs = {"agent_id": "deploy-bot", "action": "deploy", "target": "prod/x", "context": ctx(), field: value}
    with pytest.raises(InvalidRequest):
        gate.decide(**kwargs)


def test_decision_dict_round_trip():
    """to_dict has exactly the contract keys and from_dict restores the same Decision."""
    d = Decision("require_approval", ("a", "b"), 2, "sre", 900, "#prod", "on-call", "needs 2 approvals from sre")
    data = d.to_dict()
    assert set(data) == {"outcome", "policies", "approvals_required", "approver_group", "max_duration_s",
                         "channel", "backup_group", "reason"}
    assert data["policies"] == ["a", "b"]
    assert Decision.from_dict(data) == d


def test_decision_from_dict_rejects_garbage():
    """A malformed stored decision raises PolicyError instead of becoming a grant."""
    good = Decision.deny("no").to_dict()
    with pytest.raises(PolicyError):
        Decision.from_dict({**good, "outcome": "yes please"})
    with pytest.raises(PolicyError):
        Decision.from_dict({k: v for k, v in good.items() if k != "reason"})


# ----------------------------------------------------------------- explain and the examples


def test_explain_lists_every_policy(tmp_path):
    """explain reports each policy's effect, whether it was satisfied and whether it decided."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY + NO_EXPORT, "staging.cedar": STAGING_READ})
    report = gate.explain(agent_id="deploy-bot", action="deploy", target="prod/payments-api",
                          context=ctx(posture="incident"))
    assert report["decision"]["outcome"] == "deny"
    rows = {row["id"]: row for row in report["policies"]}
    assert (rows["prod-deploy"]["satisfied"], rows["prod-deploy"]["determining"]) == (True, False)
    assert (rows["no-deploy-in-incident"]["satisfied"], rows["no-deploy-in-incident"]["determining"]) == (True, True)
    assert rows["no-deploy-in-incident"]["effect"] == "forbid"
    assert (rows["staging-read"]["satisfied"], rows["staging-read"]["file"]) == (False, "staging.cedar")
    assert report["request"]["principal"] == {"type": "Jitgate::Agent", "id": "deploy-bot"}


def test_explain_reports_errors_with_policy_ids(tmp_path):
    """Evaluation errors in explain name the policy by its @id."""
    gate = make_gate(tmp_path, {"p.cedar": PROD_DEPLOY + """
        @id("tiered") @approvals("0") permit(principal, action, resource) when { resource.tier > 2 };
    """})
    report = gate.explain(agent_id="deploy-bot", action="deploy", target="prod/payments-api", context=ctx())
    rows = {row["id"]: row for row in report["policies"]}
    assert "tiered" in rows["tiered"]["error"]
    assert any("tiered" in e for e in report["errors"])


def test_example_policies_load_and_validate():
    """The shipped policies/ folder loads, validates against its schema and decides the DESIGN examples."""
    examples = Directory.load(REPO / "examples" / "approvers.yaml", REPO / "examples" / "targets.yaml")
    gate = PolicyGate.load(REPO / "policies", examples, [PrincipalInfo("deploy-bot", "alice", "platform")])
    assert gate.schema_actions == frozenset(
        {"read", "deploy", "restart", "db.export", "delegate", "scale", "rollback", "refund"})
    assert {"prod-deploy", "prod-restart", "no-export-in-incident", "staging-read"} <= set(gate.policy_ids)

    deploy = decide(gate)
    assert (deploy.outcome, deploy.approvals_required, deploy.approver_group, deploy.max_duration_s) == (
        "require_approval", 2, "sre", 900)
    assert decide(gate, action="read", target="staging/payments-api").outcome == "auto_grant"
    export = decide(gate, action="db.export", target="prod/orders-db", posture="incident")
    assert (export.outcome, export.policies) == ("deny", ("no-export-in-incident",))
    assert decide(gate, duration_s=14401, action="read", target="staging/payments-api").outcome == "deny"
    assert decide(gate, delegation_depth=4, action="read", target="staging/payments-api").outcome == "deny"
    assert decide(gate, action="teleport").reason == "unknown action 'teleport'"
    glass = gate.decide(agent_id="deploy-bot", action="restart", target="prod/orders-db",
                        context=ctx(break_glass=True), approver_principal="alice")
    assert (glass.outcome, glass.policies) == ("auto_grant", ("break-glass-on-call",))


def test_pre_parsed_handles_are_reused(tmp_path, monkeypatch):
    """Deciding never parses policy text: only the pre-built PolicySet is handed to Cedar."""
    gate = make_gate(tmp_path, {"prod.cedar": PROD_DEPLOY})
    seen = []
    real = cedarpy.is_authorized

    def spy(request, policies, entities, schema=None, verbose=False):
        seen.append((type(policies), type(entities)))
        return real(request, policies, entities, schema=schema, verbose=verbose)

    monkeypatch.setattr(policy_module.cedarpy, "is_authorized", spy)
    decide(gate)
    decide(gate, target="not/in/file")
    assert seen == [(cedarpy.PolicySet, cedarpy.Entities)] * 2


NEW_KEYS_SCHEMA = SCHEMA.replace("agent_grants_last_hour: Long,",
                                 "agent_grants_last_hour: Long, recent_denials: Long, linked_attempts: Long,")
LINKED_FORBID = """
@id("no-way-round") forbid(principal, action, resource) when { context.linked_attempts >= 2 };
"""


def test_a_schema_from_before_the_alternate_path_counts_keeps_deciding(tmp_path):
    """Issue 19, item 3: a schema written before recent_denials and linked_attempts (with the
    approval state of issue 16) keeps deciding; they are simply left out of its context."""
    gate = make_gate(tmp_path, {"jitgate.cedarschema": SCHEMA, "p.cedar": PROD_DEPLOY})
    assert decide(gate, recent_denials=3, linked_attempts=2).outcome == "require_approval"


def test_the_alternate_path_counts_reach_policies_when_the_schema_declares_them(tmp_path):
    """Issue 19, item 3: Cedar's context gets recent_denials and linked_attempts (Long)."""
    gate = make_gate(tmp_path, {"jitgate.cedarschema": NEW_KEYS_SCHEMA, "p.cedar": PROD_DEPLOY + LINKED_FORBID})
    assert decide(gate, linked_attempts=1).outcome == "require_approval"
    refused = decide(gate, recent_denials=1, linked_attempts=2)
    assert refused.outcome == "deny" and "no-way-round" in refused.policies


def test_the_generations_are_probed_without_names_in_the_errors(tmp_path, monkeypatch):
    """Older cedarpy names no refused key: the generations are tried, largest first, so a schema
    of issue 16 still gets its approval-state keys (without the alternate-path counts)."""
    import re  # noqa: PLC0415

    import broker.policy as policy  # noqa: PLC0415

    monkeypatch.setattr(policy, "_REFUSED_KEY", re.compile(r"(?!x)x"))
    gate = make_gate(tmp_path, {"jitgate.cedarschema": SCHEMA, "p.cedar": PROD_DEPLOY})
    assert decide(gate, recent_denials=3).outcome == "require_approval"
    gate = make_gate(tmp_path / "new", {"jitgate.cedarschema": NEW_KEYS_SCHEMA, "p.cedar": PROD_DEPLOY + LINKED_FORBID})
    assert decide(gate, linked_attempts=2).outcome == "deny"
