"""Issue 21, item 9: rolling restarts. SIGTERM drains a broker: waiting long polls are answered
at once with a retryable 503 (not cut when the graceful-shutdown timeout ends), the scheduler
lease is handed over at once, and in-flight calls finish; restarting both replicas one after
the other under load fails no agent operation beyond retryable ones."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import time

import httpx

from broker.identity import make_assertion
from tests.support.harness import ISSUER, write_agents
from tests.support.process import BrokerProcess, jitgate_env

DEPLOY = {"action": "deploy", "target": "prod/payments-api", "justification": "rolling", "duration_s": 60,
          "confidence": 0.9, "evidence": [{"kind": "ticket", "title": "INC-9", "url": "https://t.example/INC-9"}]}
READ = {"action": "read", "target": "staging/payments-api", "justification": "rolling read", "duration_s": 30}


def _auth(keys, agent: str) -> dict:
    return {"Authorization": "Bearer " + make_assertion(keys[agent], agent_id=agent, audience=ISSUER)}


def _env(tmp_path, prefix, redis_url) -> dict:
    return jitgate_env(tmp_path, prefix, base64.urlsafe_b64encode(os.urandom(32)).decode(), redis_url,
                       JITGATE_SWEEP_INTERVAL_S="0.2")


async def test_sigterm_answers_waiting_long_polls_and_hands_the_lease_over(tmp_path, redis_url, prefix, redis):
    """Issue 21.9: a long poll waiting on a broker that gets SIGTERM is answered 503 with
    Retry-After within a second or two (it was cut after the 5 s graceful timeout), the lease is
    released at once, and the process exits cleanly."""
    keys = write_agents(tmp_path / "agents.yaml")
    proc = BrokerProcess(_env(tmp_path, prefix, redis_url)).start()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            rid = (await http.post(proc.url + "/v1/escalations", json=DEPLOY, headers=_auth(keys, "deploy-bot"))).json()["id"]
            poll = asyncio.create_task(http.get(f"{proc.url}/v1/escalations/{rid}?wait=30",
                                                headers=_auth(keys, "deploy-bot")))
            await asyncio.sleep(0.5)
            assert not poll.done()
            assert (await redis.get(prefix + "scheduler:lease")).decode().split(":")[1] == str(proc.proc.pid)
            sent = time.monotonic()
            proc.proc.send_signal(signal.SIGTERM)
            r = await asyncio.wait_for(poll, 10)
            answered = time.monotonic() - sent
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert answered < 3, answered
            assert await asyncio.to_thread(proc.proc.wait, 15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
            # The long polls are answered first; the lease goes once the jobs in flight (the last
            # seal) are done: released by the broker, not left to run out.
            assert await redis.get(prefix + "scheduler:lease") is None
    finally:
        out = proc.stop()
    assert "Traceback" not in out, out[-3000:]
    assert "scheduler lease handed over" in out, out[-3000:]


async def test_restarting_both_replicas_one_after_the_other_fails_nothing(tmp_path, redis_url, prefix, redis):
    """Issue 21.9: under load (auto-grants collected and completed, long polls on pending requests),
    each replica in turn is taken out of rotation, sent SIGTERM and replaced; every agent call
    succeeds or gets a retryable answer (503, or a refused connection to the replica already out
    of rotation); none is cut mid-request and none is a 500."""
    keys = write_agents(tmp_path / "agents.yaml")
    env = _env(tmp_path, prefix, redis_url)
    up = [BrokerProcess(env), BrokerProcess(env)]
    await asyncio.gather(*(asyncio.to_thread(p.start) for p in up))
    rng = random.Random(9)
    outcomes: dict[str, int] = {}
    bad: list[str] = []
    running = True

    def note(what: str) -> None:
        outcomes[what] = outcomes.get(what, 0) + 1

    async def call(http, method, path, agent, **kw) -> httpx.Response | None:
        replica = rng.choice(up)
        try:
            r = await http.request(method, replica.url + path, headers=_auth(keys, agent), **kw)
        except httpx.ConnectError:
            note("connection refused")
            return None
        except httpx.TransportError as e:  # cut mid-request: what a drain must prevent
            bad.append(f"{method} {path}: {e!r}")
            return None
        note(str(r.status_code))
        if r.status_code >= 500 and r.status_code != 503:
            bad.append(f"{method} {path}: {r.status_code} {r.text}")
        return r

    async def worker(n: int) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while running:
                if n % 3 == 0:  # an agent waiting on a decision nobody makes here
                    r = await call(http, "POST", "/v1/escalations", "deploy-bot", json=DEPLOY)
                    if r is not None and r.status_code == 201:
                        await call(http, "GET", f"/v1/escalations/{r.json()['id']}?wait=20", "deploy-bot")
                else:
                    r = await call(http, "POST", "/v1/escalations", "reader-bot", json=READ)
                    if r is not None and r.status_code == 201:
                        rid = r.json()["id"]
                        tok = await call(http, "POST", f"/v1/escalations/{rid}/token", "reader-bot")
                        if tok is not None and tok.status_code == 200:
                            await call(http, "POST", f"/v1/escalations/{rid}/complete", "reader-bot")

    workers = [asyncio.create_task(worker(n)) for n in range(6)]
    try:
        await asyncio.sleep(2)
        for _ in range(2):  # each replica in turn
            old = up[0]
            up.remove(old)  # out of rotation, as a load balancer does first
            old.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(old.proc.wait, 20) in (0, -signal.SIGTERM)
            assert "Traceback" not in old.stop()
            fresh = BrokerProcess(env)
            await asyncio.to_thread(fresh.start)
            up.append(fresh)
            await asyncio.sleep(2)
    finally:
        running = False
        await asyncio.gather(*workers, return_exceptions=True)
        for p in up:
            await asyncio.to_thread(p.stop)
    print("rolling restart outcomes:", outcomes)
    assert not bad, bad[:5]
    assert outcomes.get("201", 0) > 20 and outcomes.get("503", 0) > 0, outcomes  # long polls were drained
