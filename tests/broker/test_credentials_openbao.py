"""OpenBao tokens per grant (issue 17, item 3), against a real ``bao server -dev``."""

from __future__ import annotations

import hvac
import orjson
import pytest
import yaml

from broker.clock import ManualClock
from tests.support.harness import FIXTURES, Harness, make_settings, write_agents
from tests.support.openbao import ROOT_TOKEN, OpenBaoServer

TARGET = "staging/orders-vault"
SECRET_ENV = "JITGATE_CREDENTIAL_BAO"
POLICY = 'path "secret/data/orders" { capabilities = ["read"] }'


@pytest.fixture(scope="module")
def bao():
    server = OpenBaoServer().start()
    root = hvac.Client(url=server.addr, token=ROOT_TOKEN)
    root.sys.create_or_update_policy("orders-read", POLICY)
    root.secrets.kv.v2.create_or_update_secret("orders", secret={"dsn": "orders-db"})
    root.secrets.kv.v2.create_or_update_secret("payroll", secret={"salary": "1"})
    yield server
    server.stop()


@pytest.fixture
async def bao_harness(tmp_path, redis_url, prefix, redis, bao):
    doc = yaml.safe_load((FIXTURES / "targets.yaml").read_text())
    handle_prefix = "jt" + prefix.split(":")[1][:8] + "-"  # private to this test: the server is shared
    doc["targets"].append({"id": TARGET, "env": "staging", "credential": {
        "plugin": "openbao", "addr": bao.addr, "token_env": SECRET_ENV, "handle_prefix": handle_prefix,
        "actions": {"read": {"policies": ["orders-read"]}}}})
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump(doc))
    settings = make_settings(tmp_path, redis_url, prefix, targets_file=targets,
                             credential_secrets={SECRET_ENV: ROOT_TOKEN}, credential_settle_s=3600.0)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    yield h
    await h.stop()


async def read_grant(h: Harness) -> tuple[str, dict]:
    r = await h.propose(action="read", target=TARGET, duration_s=300)
    rid = r.json()["id"]
    t = await h.collect(rid)
    assert t.status_code == 200, t.text
    return rid, t.json()["credential"]


def root(bao) -> hvac.Client:
    return hvac.Client(url=bao.addr, token=ROOT_TOKEN)


def alive(bao, token: str) -> bool:
    try:
        root(bao).auth.token.lookup(token)
        return True
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
        return False


def reads(bao, token: str, path: str) -> bool:
    try:
        hvac.Client(url=bao.addr, token=token).secrets.kv.v2.read_secret_version(path, raise_on_deleted_version=True)
        return True
    except hvac.exceptions.Forbidden:
        return False


async def test_the_token_reads_exactly_what_its_policies_allow(bao_harness, bao):
    """Issue 17, item 3: a token with the mapped policies only (no default policy), the grant's TTL."""
    rid, cred = await read_grant(bao_harness)
    assert cred["type"] == "openbao" and cred["env"]["BAO_TOKEN"] == cred["token"]
    assert reads(bao, cred["token"], "orders") and not reads(bao, cred["token"], "payroll")
    info = root(bao).auth.token.lookup(cred["token"])["data"]
    assert info["policies"] == ["orders-read"] and 0 < info["ttl"] <= 300 and not info["renewable"]
    assert info["meta"]["jitgate_request"] == rid
    # The server's own audit device (from its configuration) saw the token being made.
    assert '"auth/token/create-orphan"' in bao.audit_log.read_text()


async def test_completion_and_expiry_revoke_the_token(bao_harness, bao):
    """Issue 17, item 3: the token stops working at completion and at expiry."""
    h = bao_harness
    rid, cred = await read_grant(h)
    await h.complete(rid)
    assert await h.broker.credentials.settle() == 1
    assert not alive(bao, cred["token"]) and not reads(bao, cred["token"], "orders")
    rid2, cred2 = await read_grant(h)
    h.clock.advance(301)
    await h.broker.scheduler.sweep()
    assert await h.broker.credentials.settle() == 1
    assert not alive(bao, cred2["token"])
    events = [orjson.loads(f[b"event"]) for _, f in await h.broker.redis.xrange(h.broker.store.audit_stream)]
    assert {e["request_id"] for e in events if e["type"] == "credential.revoked"} == {rid, rid2}
    raw = b"".join(f[b"event"] for _, f in await h.broker.redis.xrange(h.broker.store.audit_stream))
    assert cred["token"].encode() not in raw and cred2["token"].encode() not in raw


async def test_the_reconciler_revokes_tokens_it_made_with_no_grant_behind_them(bao_harness, bao):
    """Issue 17, items 3 and 5: the reconciler lists the accessors of the tokens jitgate made
    and revokes the ones no record names (the record lost, as after a crash)."""
    h = bao_harness
    rid, cred = await read_grant(h)
    await h.broker.redis.delete(h.broker.credentials.issued_key)
    findings = await h.broker.credentials.reconcile()
    assert [f["request_id"] for f in findings] == [rid]
    assert not alive(bao, cred["token"])
    # A token made by someone else, without jitgate's metadata, is not jitgate's to revoke.
    other = hvac.Client(url=bao.addr, token=ROOT_TOKEN).auth.token.create(policies=["orders-read"], ttl="60s")
    assert await h.broker.credentials.reconcile() == []
    assert reads(bao, other["auth"]["client_token"], "orders")


# docs/credentials.md, "Least privilege for jitgate's OpenBao token".
JITGATE_POLICY = """
path "auth/token/create/jitgate" { capabilities = ["update"] }
path "auth/token/accessors" { capabilities = ["list", "sudo"] }
path "auth/token/lookup-accessor" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }
"""


async def test_a_least_privilege_token_and_a_token_role_are_enough(tmp_path, redis_url, prefix, redis, bao):
    """Issue 17, items 3 and 7: jitgate's own token needs only the policy docs/credentials.md
    lists, with an orphan token role allowing the mapped policies; it issues, lists and revokes."""
    r = root(bao)
    r.sys.create_or_update_policy("jitgate-broker", JITGATE_POLICY)
    r.auth.token.create_or_update_role("jitgate", allowed_policies=["orders-read"], orphan=True, renewable=False,
                                       token_explicit_max_ttl=3600)
    own = r.auth.token.create(policies=["jitgate-broker"], no_default_policy=True, ttl="1h")["auth"]["client_token"]
    handle_prefix = "jl" + prefix.split(":")[1][:8] + "-"
    doc = yaml.safe_load((FIXTURES / "targets.yaml").read_text())
    doc["targets"].append({"id": TARGET, "env": "staging", "credential": {
        "plugin": "openbao", "addr": bao.addr, "token_env": SECRET_ENV, "token_role": "jitgate",
        "handle_prefix": handle_prefix, "actions": {"read": {"policies": ["orders-read"]}}}})
    (tmp_path / "targets.yaml").write_text(yaml.safe_dump(doc))
    settings = make_settings(tmp_path, redis_url, prefix, targets_file=tmp_path / "targets.yaml",
                             credential_secrets={SECRET_ENV: own}, credential_settle_s=3600.0)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    try:
        rid, cred = await read_grant(h)
        assert reads(bao, cred["token"], "orders")
        info = r.auth.token.lookup(cred["token"])["data"]
        assert info["orphan"] and info["policies"] == ["orders-read"]
        plugin = h.broker.credentials.bindings[TARGET].plugin
        assert await plugin.list_issued() == [info["display_name"].removeprefix("token-")]
        await h.complete(rid)
        assert await h.broker.credentials.settle() == 1
        assert not alive(bao, cred["token"])
    finally:
        await h.stop()
