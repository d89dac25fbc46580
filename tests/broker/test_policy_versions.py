"""Policy versions (issue 18, item 5): every loaded policy set has a content hash; loading at
start-up and every reload that changes it appends ``policy.loaded``, a refused reload appends
``policy.load_failed`` (once per distinct failure) and keeps the old set, and every decision
records the hash of the set that made it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil

import orjson
import pytest

from broker import audit
from broker.clock import ManualClock, SystemClock
from broker.config import Settings
from broker.policy import set_hash
from tests.support.harness import FIXTURES, Harness, make_settings, write_agents
from tests.support.process import jitgate_env, run_cli

EXTRA = """
@id("staging-restart") @approvals("1") @approver_group("sre")
permit(principal, action == Jitgate::Action::"restart", resource in Jitgate::Env::"staging");
"""
FORBID_PROD_RESTART = """
@id("no-prod-restart")
forbid(principal, action == Jitgate::Action::"restart", resource in Jitgate::Env::"prod");
"""


@pytest.fixture
async def h(tmp_path, redis_url, prefix, redis):
    """A broker on a copy of the fixture policies; its scheduler stopped, so each reload and
    seal happens when the test says."""
    policies = tmp_path / "policies"
    shutil.copytree(FIXTURES / "policies", policies)
    settings = make_settings(tmp_path, redis_url, prefix, policy_dir=policies)
    harness = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await harness.start()
    await harness.broker.scheduler.stop()
    harness.policies = policies
    yield harness
    await harness.stop()


async def _entries(h) -> list[dict]:
    s = h.broker.store
    return [orjson.loads(f[b"event"]) for _, f in await s.redis.xrange(s.audit_stream)]


async def _of(h, kind: str) -> list[dict]:
    return [e for e in await _entries(h) if e["type"] == kind]


async def _reload(h) -> None:
    """One tick of the reload job, and the entries it queued written."""
    h.broker.maybe_reload()
    if h.broker._closing:
        await asyncio.wait(set(h.broker._closing), timeout=10)


def _file_hashes(folder) -> list[dict]:
    return [{"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for p in sorted(folder.iterdir()) if p.suffix == ".cedar"]


def _bump_mtime(path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


async def test_startup_records_the_loaded_set_with_file_hashes(h):
    """Issue 18.5: start-up appends policy.loaded naming each file and its sha256, the set hash
    (recomputable from the entry alone), no previous set, "startup" and the replica."""
    [loaded] = await _of(h, "policy.loaded")
    d = loaded["data"]
    assert d["files"] == _file_hashes(h.policies)
    assert d["policy_set_hash"] == h.broker.gate.policy_set_hash
    assert d["policy_set_hash"] == set_hash((f["name"], f["sha256"]) for f in d["files"])
    assert d["previous_policy_set_hash"] is None
    assert loaded["actor"] == {"by": "startup", "replica": h.broker.scheduler.holder}


async def test_the_set_hash_changes_with_any_byte_and_not_with_a_touch(h):
    """The hash is over content: touching a file (new mtime) reloads but records nothing; one
    changed byte, a new file or a removed file gives a new hash."""
    first = h.broker.gate.policy_set_hash
    _bump_mtime(h.policies / "test.cedar")
    await _reload(h)
    assert h.broker.gate.policy_set_hash == first
    assert len(await _of(h, "policy.loaded")) == 1
    text = (h.policies / "test.cedar").read_text()
    (h.policies / "test.cedar").write_text(text.replace('@max_duration("600")', '@max_duration("601")'))
    _bump_mtime(h.policies / "test.cedar")
    await _reload(h)
    second = h.broker.gate.policy_set_hash
    assert second != first
    (h.policies / "extra.cedar").write_text(EXTRA)
    await _reload(h)
    third = h.broker.gate.policy_set_hash
    assert third not in (first, second)
    loaded = await _of(h, "policy.loaded")
    assert [e["data"]["policy_set_hash"] for e in loaded] == [first, second, third]
    assert [e["data"]["previous_policy_set_hash"] for e in loaded] == [None, first, second]
    assert {e["actor"]["by"] for e in loaded[1:]} == {"reload: file changed"}
    assert [f["name"] for f in loaded[-1]["data"]["files"]] == ["extra.cedar", "test.cedar"]


async def test_a_broken_reload_keeps_the_old_set_and_is_recorded_once(h):
    """Issue 18.5: a reload that fails to parse keeps the old set and appends policy.load_failed
    once per distinct failure (the reload job retries every 2 s on every replica); fixing the
    folder records the new set with the last good one as previous."""
    good = h.broker.gate.policy_set_hash
    (h.policies / "broken.cedar").write_text("permit(principal, action, resource")
    for _ in range(3):
        await _reload(h)
    assert h.broker.gate.policy_set_hash == good
    [failed] = await _of(h, "policy.load_failed")
    d = failed["data"]
    assert "broken.cedar" in d["error"] and d["policy_set_hash"] == good
    assert d["attempted_policy_set_hash"] == set_hash((f["name"], f["sha256"]) for f in d["files"]) != good
    # Still the old set: a proposal is decided by it, and the record says so.
    r = await h.propose(action="read", target="staging/payments-api")
    assert r.status_code == 201 and r.json()["policy_set_hash"] == good
    # A different broken version is a new failure.
    (h.policies / "broken.cedar").write_text("forbid(principal, action, resource")
    await _reload(h)
    assert len(await _of(h, "policy.load_failed")) == 2
    (h.policies / "broken.cedar").write_text(EXTRA)
    await _reload(h)
    latest = (await _of(h, "policy.loaded"))[-1]["data"]
    assert latest["previous_policy_set_hash"] == good and latest["policy_set_hash"] == h.broker.gate.policy_set_hash != good


async def test_every_decision_records_the_set_hash(h):
    """Issue 18.5: the submit decision (API JSON and policy.decision), the re-decision at an
    approval and at collection, and a refusal after a reload each record the hash of the set
    that decided; the audit log still verifies after these entries."""
    first = h.broker.gate.policy_set_hash
    r = await h.propose(action="restart", target="prod/payments-api", duration_s=300)
    rid = r.json()["id"]
    assert r.json()["policy_set_hash"] == first
    assert (await h.status(rid)).json()["policy_set_hash"] == first
    [decision] = [e for e in await _of(h, "policy.decision") if e["request_id"] == rid]
    assert decision["data"]["policy_set_hash"] == first

    (h.policies / "extra.cedar").write_text(EXTRA)  # permits more; refuses nothing open
    await _reload(h)
    second = h.broker.gate.policy_set_hash
    await h.approve(rid, "erin")
    [approval] = [e for e in await _of(h, "approval.recorded") if e["request_id"] == rid]
    assert approval["data"]["policy_set_hash"] == second
    assert (await h.collect(rid)).status_code == 200
    [collected] = [e for e in await _of(h, "token.collected") if e["request_id"] == rid]
    assert collected["data"]["policy_set_hash"] == second
    # The record keeps the hash of the submit decision.
    assert (await h.status(rid)).json()["policy_set_hash"] == first

    (h.policies / "forbid.cedar").write_text(FORBID_PROD_RESTART)
    await _reload(h)
    third = h.broker.gate.policy_set_hash
    assert (await h.life.get(rid)).status == "revoked"
    [batch] = await _of(h, "requests.redecided")
    assert batch["data"]["policy_set_hash"] == third
    assert batch["data"]["requests"][0]["policy_set_hash"] == third

    log = h.broker.lifecycle.audit
    await log.seal(force_checkpoint=True)
    s = h.broker.store
    result = await audit.verify(s.redis, s.audit_stream, s.audit_head, log.key)
    assert result.ok, result


async def test_a_refusal_at_collection_records_the_set_hash(h):
    """A grant refused when collected (re-decision at the collect stage) names the set hash in
    its request.denied entry."""
    rid = (await h.propose(action="restart", target="prod/payments-api", duration_s=300)).json()["id"]
    await h.approve(rid, "erin")
    (h.policies / "forbid.cedar").write_text(FORBID_PROD_RESTART)
    assert h.broker.gate.reload_if_changed()  # loaded, the walk not run: collection decides again
    r = await h.collect(rid)
    assert r.status_code == 403
    [denied] = [e for e in await _of(h, "request.denied") if e["request_id"] == rid]
    assert denied["data"]["stage"] == "collect"
    assert denied["data"]["policy_set_hash"] == h.broker.gate.policy_set_hash


async def test_each_replica_records_its_own_switch_once(h):
    """Two replicas reloading the same change: one policy.loaded per replica (each names
    itself), never one per tick."""
    other = Harness(h.settings, h.keys, h.clock)
    await other.start()
    await other.broker.scheduler.stop()
    try:
        (h.policies / "extra.cedar").write_text(EXTRA)
        for _ in range(3):
            await _reload(h)
            await _reload(other)
        switched = [e for e in await _of(h, "policy.loaded") if e["data"]["previous_policy_set_hash"]]
        assert sorted(e["actor"]["replica"] for e in switched) == sorted(
            [h.broker.scheduler.holder, other.broker.scheduler.holder])
    finally:
        await other.stop()


async def test_an_operator_command_records_its_set_only_when_new(h):
    """Operator commands that decide record the set they loaded (by the CLI) only when it is
    not the set last recorded."""
    versions = h.broker.versions
    assert not await versions.operator("cli: jitgate requests approve (os user x)")
    (h.policies / "extra.cedar").write_text(EXTRA)
    assert h.broker.gate.reload_if_changed()
    assert await versions.operator("cli: jitgate requests approve (os user x)")
    latest = (await _of(h, "policy.loaded"))[-1]
    assert latest["actor"]["by"].startswith("cli: ") and latest["data"]["policy_set_hash"] == h.broker.gate.policy_set_hash


@pytest.fixture
def cli_env(tmp_path, redis_url, prefix, redis):
    """Env for `jitgate` processes on the test prefix (the fixture policies), and agent keys."""
    keys = write_agents(tmp_path / "agents.yaml")
    env = jitgate_env(tmp_path, prefix, base64.urlsafe_b64encode(os.urandom(32)).decode(), redis_url)
    return env, keys


def _fixture_hash() -> str:
    return set_hash((f["name"], f["sha256"]) for f in _file_hashes(FIXTURES / "policies"))


async def test_cli_policy_check_and_audit_policies_show_the_set_hash(cli_env, tmp_path):
    """`jitgate policy check` prints the set hash that decided; an operator's approval records
    the set it decided with (policy.loaded by the CLI, once), and `jitgate audit policies` lists it."""
    env, keys = cli_env
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"agent": "deploy-bot", "action": "restart", "target": "prod/payments-api",
                             "justification": "x", "duration_s": 60}))
    checked = run_cli(env, "policy", "check", str(f))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["policy_set_hash"] == _fixture_hash()

    h = Harness(Settings.from_env(env), keys, SystemClock())
    await h.start(background=False)  # records nothing: not a serving broker, and no CLI command
    try:
        rid = (await h.propose(action="restart", target="prod/payments-api", duration_s=60)).json()["id"]
    finally:
        await h.stop()
    assert run_cli(env, "requests", "approve", rid, "--as", "erin").returncode == 0
    listed = run_cli(env, "audit", "policies")
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if line.startswith("#")]
    assert len(lines) == 1 and _fixture_hash() in lines[0] and "by cli: jitgate requests approve" in lines[0]
    assert f"policy set loaded by this command: {_fixture_hash()}" in listed.stdout
    as_json = json.loads(run_cli(env, "audit", "policies", "--json").stdout)
    assert [e["type"] for e in as_json] == ["policy.loaded"]
    assert run_cli(env, "audit", "verify").returncode == 0
