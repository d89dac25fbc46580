"""What the agent will actually do is part of the decision (issue 16, item 4): ``tool``,
``dataset`` and a bounded ``arguments`` object are checked against the targets file, given
to Cedar (context.tool, context.dataset, context.arguments), hashed, and put in the token."""

from __future__ import annotations

import time

from broker.context import build_context

import hashlib

import jwt
import orjson
import pytest

from broker.clock import ManualClock
from broker.directory import Directory
from broker.errors import InvalidRequest
from broker.model import MAX_ARGUMENTS_BYTES, Proposal
from broker.policy import PROPOSAL_CONTEXT_KEYS, PolicyGate, cedar_arguments, proposal_context
from tests.support.harness import Harness, make_settings, write_agents

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBLEM = "application/problem+json"

TARGETS = """
targets:
  - id: prod/payments-api
    env: prod
    attributes: {sensitivity: high}
    tools: [kubectl, payments-cli]
  - id: prod/orders-db
    env: prod
    datasets: [orders]
  - id: staging/payments-api
    env: staging
"""


@pytest.fixture
async def ph(tmp_path, redis_url, prefix, redis):
    """A broker with the shipped policies (and their schema) and targets that list tools and datasets."""
    targets = tmp_path / "targets.yaml"
    targets.write_text(TARGETS)
    settings = make_settings(tmp_path, redis_url, prefix, policy_dir=REPO / "policies", targets_file=targets)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    yield h
    await h.stop()


def _problem(r, code: str) -> dict:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["type"].endswith("/" + code), body
    return body


async def _nothing_stored(h) -> bool:
    return await h.broker.store.scan_requests() == []


async def test_a_small_refund_through_the_payments_cli_is_granted_and_the_token_carries_it(ph):
    """Cedar reads context.arguments.amount; the token's authorization_details carry tool and arguments."""
    args = {"amount": 120, "currency": "EUR"}
    r = await ph.propose(action="refund", tool="payments-cli", arguments=args, duration_s=120)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "approved" and body["decision"]["policies"] == ["payments-refund-small"]
    assert body["proposal"]["arguments"] == args and body["proposal"]["tool"] == "payments-cli"
    tok = await ph.collect(body["id"])
    assert tok.status_code == 200, tok.text
    claims = jwt.decode(tok.json()["access_token"], options={"verify_signature": False})
    detail = claims["authorization_details"][0]
    assert detail["tool"] == "payments-cli" and detail["arguments"] == args


async def test_a_large_refund_needs_the_mixed_quorum(ph):
    """The same action with amount 2500 needs one SRE and one from security (payments-refund-large)."""
    r = await ph.propose(action="refund", tool="payments-cli", arguments={"amount": 2500}, duration_s=120)
    d = r.json()["decision"]
    assert r.json()["status"] == "pending" and d["approvals_from"] == {"sre": 1, "security": 1}
    rid = r.json()["id"]
    await ph.approve(rid, "bob")
    assert (await ph.approve(rid, "carol")).status == "approved"


async def test_a_restart_that_is_not_a_rollout_restart_is_denied_naming_the_policy(ph):
    """"Restart only via kubectl rollout restart": deleting pods is denied, by the policy that says so."""
    r = await ph.propose(action="restart", tool="kubectl", arguments={"subcommand": "delete pod"})
    assert r.status_code == 201 and r.json()["status"] == "denied"
    assert r.json()["denial"]["policies"] == ["payments-restart-only-rollout"]
    ok = await ph.propose(action="restart", tool="kubectl", arguments={"subcommand": "rollout restart"})
    assert ok.json()["status"] == "pending" and ok.json()["decision"]["policies"] == ["prod-restart"]


async def test_an_argument_the_schema_does_not_declare_is_denied(ph):
    """With a schema, arguments are an allow-list of keys: an undeclared one does not fit and is denied."""
    r = await ph.propose(action="refund", tool="payments-cli", arguments={"amount": 10, "to_account": "x"})
    assert r.json()["status"] == "denied" and "does not fit the policy schema" in r.json()["denial"]["reason"]


async def test_a_tool_the_target_does_not_list_is_a_400_and_nothing_is_stored(ph):
    """targets.yaml `tools:` allows exactly those; a proposal naming another (or none) is refused."""
    r = await ph.propose(action="refund", tool="curl", arguments={"amount": 10})
    assert "'curl' is not allowed on target 'prod/payments-api'" in _problem(r, "not-allowed-for-target")["detail"]
    r = await ph.propose(action="refund", arguments={"amount": 10})
    assert "needs a 'tool'" in _problem(r, "not-allowed-for-target")["detail"]
    r = await ph.propose(action="db.export", target="prod/orders-db", dataset="customers")
    assert "dataset 'customers'" in _problem(r, "not-allowed-for-target")["detail"]
    assert await _nothing_stored(ph)


async def test_a_target_without_tools_allows_any(ph):
    """A target whose entry lists no tools or datasets allows any (the policy still decides)."""
    r = await ph.propose(action="read", target="staging/payments-api", tool="anything", dataset="any", duration_s=60)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("arguments, code, needle", [
    ({"blob": "x" * MAX_ARGUMENTS_BYTES}, "arguments-too-large", "bytes as compact JSON"),
    ({"a": {"b": {"c": {"d": {"e": 1}}}}}, "arguments-too-large", "nests deeper than 4"),
    ({"a": [[[[1]]]]}, "arguments-too-large", "nests deeper than 4"),
    ([1, 2], "invalid-arguments", "must be a JSON object"),
    ("amount=1", "invalid-arguments", "must be a JSON object"),
    ({"amount": None}, "invalid-arguments", "null"),
    ({"who": {"__entity": {"type": "Jitgate::Agent", "id": "x"}}}, "invalid-arguments", "reserved by Cedar"),
    ({"__extn": {"fn": "decimal", "arg": "1.0"}}, "invalid-arguments", "reserved by Cedar"),
    ({"amount": 2**63}, "invalid-arguments", "64-bit"),
    ({"amount": 1.23456}, "invalid-arguments", "4 decimal places"),
    ({"note": "a\x00b"}, "invalid-arguments", "control characters"),
])
async def test_bad_arguments_are_a_clear_400_and_nothing_is_stored(ph, arguments, code, needle):
    """Oversized, too deep, non-object, null, Cedar escape keys, out-of-range numbers: 400, nothing stored
    (an agent must not forge entity references or extension values in policy input)."""
    r = await ph.propose(action="refund", tool="payments-cli", arguments=arguments)
    assert needle in _problem(r, code)["detail"]
    assert await _nothing_stored(ph)


def test_arguments_change_the_proposal_hash_and_their_absence_keeps_the_old_one():
    """Arguments are in the proposal hash; a proposal without them hashes as before they existed."""
    base = {"action": "refund", "target": "t", "justification": "j", "duration_s": 60}
    plain = Proposal.parse(base)
    before = {"action": "refund", "target": "t", "tool": None, "dataset": None, "duration_s": 60, "justification": "j",
              "evidence": [], "delegation": []}  # the canonical form before arguments existed
    assert plain.sha256() == hashlib.sha256(orjson.dumps(before, option=orjson.OPT_SORT_KEYS)).hexdigest()
    one, two = Proposal.parse({**base, "arguments": {"amount": 1}}), Proposal.parse({**base, "arguments": {"amount": 2}})
    assert len({plain.sha256(), one.sha256(), two.sha256()}) == 3
    assert Proposal.from_dict(one.to_dict()).sha256() == one.sha256()


def test_json_maps_to_cedar_values_as_documented():
    """Objects → records, lists → sets, whole numbers → Long, others → decimal; proposal_context fills the defaults."""
    mapped = cedar_arguments({"n": 5, "whole": 500.0, "cents": 499.99, "flag": True, "tags": ["a", "b"], "o": {"k": "v"}})
    assert mapped == {"n": 5, "whole": 500, "cents": {"__extn": {"fn": "decimal", "arg": "499.99"}}, "flag": True,
                      "tags": ["a", "b"], "o": {"k": "v"}}
    p = Proposal.parse({"action": "refund", "target": "t", "justification": "j", "duration_s": 60})
    assert proposal_context(p) == {"tool": "", "dataset": "", "arguments": {}}
    assert tuple(proposal_context(p)) == PROPOSAL_CONTEXT_KEYS
    with pytest.raises(InvalidRequest):
        cedar_arguments({"__entity": {"type": "Jitgate::Agent", "id": "x"}})


def test_decimal_arguments_compare_in_cedar(tmp_path):
    """A non-whole amount reaches Cedar as a decimal that policies compare with lessThan."""
    d = tmp_path / "p"
    d.mkdir()
    (d / "a.cedar").write_text('@id("cents") @approvals("0") permit(principal, action, resource) '
                               'when { context.arguments.amount.lessThan(decimal("500.0")) };')
    gate = PolicyGate.load(d, Directory(), [])
    base = build_context(confidence=90, duration_s=60, posture="normal", evidence_count=1, delegation_depth=0,
                         now=time.time())

    def decide(amount):
        p = Proposal.parse({"action": "refund", "target": "t", "justification": "j", "duration_s": 60,
                            "arguments": {"amount": amount}})
        return gate.decide(agent_id="a", action="refund", target="t", context={**base, **proposal_context(p)}).outcome

    assert decide(499.99) == "auto_grant" and decide(500.01) == "deny"


def test_a_schema_from_before_these_keys_still_decides(tmp_path):
    """A custom schema whose context type lacks tool/dataset/arguments, and the approval state and
    use of issue 16 item 2, keeps working (they are left out)."""
    d = tmp_path / "p"
    d.mkdir()
    (d / "s.cedarschema").write_text("""namespace Jitgate { entity Team; entity Agent in [Team] = {owner: String, team: String};
  entity Env; entity Target in [Env] = {name: String};
  type Proposal = {confidence: Long, duration_s: Long, posture: String, evidence_count: Long,
                   delegation_depth: Long, hour_utc: Long, break_glass: Bool};
  action "deploy" appliesTo { principal: [Agent], resource: [Target], context: Proposal }; }""")
    (d / "a.cedar").write_text('@id("ok") @approvals("0") permit(principal, action, resource);')
    gate = PolicyGate.load(d, Directory(), [])
    p = Proposal.parse({"action": "deploy", "target": "t", "justification": "j", "duration_s": 60, "tool": "kubectl"})
    ctx = build_context(confidence=90, duration_s=60, posture="normal", evidence_count=1, delegation_depth=0,
                        now=time.time(), proposal=p)
    assert gate.decide(agent_id="a", action="deploy", target="t", context=ctx).outcome == "auto_grant"
