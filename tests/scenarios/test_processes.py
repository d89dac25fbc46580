"""Real broker processes: the embedded Redis, two replicas sharing one Redis, a restart
of the process, and the refusal to start without secrets."""

from __future__ import annotations

import asyncio
import base64
import os
import time

import httpx

from broker.identity import make_assertion
from tests.support.harness import ISSUER, write_agents
from tests.support.process import BrokerProcess, jitgate_env, run_cli

PROPOSAL = {
    "action": "deploy", "target": "prod/payments-api", "justification": "fix INC-42", "duration_s": 300,
    "confidence": 0.9, "evidence": [{"kind": "ticket", "title": "INC-42", "url": "https://t.example/INC-42"}],
}


def _kek() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _auth(keys, agent="deploy-bot") -> dict:
    return {"Authorization": "Bearer " + make_assertion(keys[agent], agent_id=agent, audience=ISSUER)}


async def test_two_replicas_long_poll_wakes_across_processes(tmp_path, redis_url, prefix, redis):
    """DESIGN scale: a long poll on one replica wakes within milliseconds when the approval lands on the other."""
    keys = write_agents(tmp_path / "agents.yaml")
    env = jitgate_env(tmp_path, prefix, _kek(), redis_url)
    with BrokerProcess(env) as a, BrokerProcess(env) as b:
        async with httpx.AsyncClient(timeout=30) as http:
            rid = (await http.post(a.url + "/v1/escalations", json=PROPOSAL, headers=_auth(keys))).json()["id"]
            assert run_cli(env, "requests", "approve", rid, "--as", "bob").returncode == 0
            poll = asyncio.create_task(http.get(f"{b.url}/v1/escalations/{rid}?wait=20", headers=_auth(keys)))
            await asyncio.sleep(0.5)
            assert not poll.done()
            started = time.monotonic()
            done = await asyncio.to_thread(run_cli, env, "requests", "approve", rid, "--as", "erin")
            assert done.returncode == 0, done.stderr
            body = (await asyncio.wait_for(poll, 10)).json()
            assert body["status"] == "approved"
            # The CLI process start dominates; the wake-up itself is milliseconds.
            assert time.monotonic() - started < 10
            # The token collected on replica A verifies with the JWKS served by replica B.
            tok = (await http.post(f"{a.url}/v1/escalations/{rid}/token", headers=_auth(keys))).json()
            jwks_b = (await http.get(b.url + "/.well-known/jwks.json")).json()
            import jwt

            kid = jwt.get_unverified_header(tok["access_token"])["kid"]
            assert kid in [k["kid"] for k in jwks_b["keys"]]


async def test_process_restart_loses_nothing(tmp_path, redis_url, prefix, redis):
    """A broker process killed mid-flow and started again continues the same request."""
    keys = write_agents(tmp_path / "agents.yaml")
    env = jitgate_env(tmp_path, prefix, _kek(), redis_url)
    first = BrokerProcess(env).start()
    async with httpx.AsyncClient(timeout=30) as http:
        rid = (await http.post(first.url + "/v1/escalations", json=PROPOSAL, headers=_auth(keys))).json()["id"]
        first.proc.kill()  # a crash, not a clean stop
        first.proc.wait()
        first.stop()
        assert run_cli(env, "requests", "approve", rid, "--as", "bob").returncode == 0
        assert run_cli(env, "requests", "approve", rid, "--as", "erin").returncode == 0
        with BrokerProcess(env) as second:
            body = (await http.get(f"{second.url}/v1/escalations/{rid}", headers=_auth(keys))).json()
            assert body["status"] == "approved" and [a["approver"] for a in body["approvals"]] == ["bob", "erin"]
            assert (await http.post(f"{second.url}/v1/escalations/{rid}/token", headers=_auth(keys))).status_code == 200
    verify = run_cli(env, "audit", "verify")
    assert verify.returncode == 0 and "OK" in verify.stdout


async def test_embedded_redis_when_redis_url_unset(tmp_path, prefix):
    """Two commands: with REDIS_URL unset the broker starts its own Redis (AOF on), and state survives a restart."""
    keys = write_agents(tmp_path / "agents.yaml")
    env = jitgate_env(tmp_path, prefix, _kek(), None)
    async with httpx.AsyncClient(timeout=30) as http:
        with BrokerProcess(env) as proc:
            rid = (await http.post(proc.url + "/v1/escalations", json=PROPOSAL, headers=_auth(keys))).json()["id"]
            listed = run_cli(env, "requests", "list")  # the CLI finds the embedded Redis's socket
            assert rid in listed.stdout, listed.stderr
        redis_dir = tmp_path / "data" / "redis"
        # Redis 6 writes appendonly.aof, Redis 7 an appendonlydir/: either way AOF is on.
        assert (redis_dir / "appendonly.aof").is_file() or (redis_dir / "appendonlydir").is_dir()
        assert not (tmp_path / "data" / "redis" / "redis.sock").exists()  # stopped with the broker
        with BrokerProcess(env) as proc:
            body = (await http.get(f"{proc.url}/v1/escalations/{rid}", headers=_auth(keys))).json()
            assert body["status"] == "pending"


def test_missing_secret_refuses_start(tmp_path, prefix, redis_url):
    """Fail closed: without JITGATE_KEY_ENCRYPTION_KEY the broker refuses to start and names the setting."""
    write_agents(tmp_path / "agents.yaml")
    env = jitgate_env(tmp_path, prefix, "", redis_url)
    out = run_cli(env, "serve", "--port", "0", timeout=30)
    assert out.returncode != 0
    assert "JITGATE_KEY_ENCRYPTION_KEY" in out.stderr


def test_broken_policy_refuses_start(tmp_path, prefix, redis_url):
    """A broken policy refuses start-up, naming the file and line."""
    write_agents(tmp_path / "agents.yaml")
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "ok.cedar").write_text('@id("a") permit(principal, action, resource);\n')
    (pol / "broken.cedar").write_text('@id("b")\npermit(principal, action, resource)\nwhen { context.x == };\n')
    env = jitgate_env(tmp_path, prefix, _kek(), redis_url, JITGATE_POLICY_DIR=str(pol))
    out = run_cli(env, "serve", "--port", "0", timeout=30)
    assert out.returncode != 0
    assert "broken.cedar" in out.stderr and ":3" in out.stderr, out.stderr


def test_chat_credentials_without_a_desk_refuse_start(tmp_path, prefix, redis_url):
    """Fail closed: chat credentials for a desk this version lacks refuse start-up instead of being ignored."""
    write_agents(tmp_path / "agents.yaml")
    env = jitgate_env(tmp_path, prefix, _kek(), redis_url, SLACK_BOT_TOKEN="xoxb-test")
    out = run_cli(env, "serve", "--port", "0", timeout=30)
    assert out.returncode != 0 and "SLACK_" in out.stderr
