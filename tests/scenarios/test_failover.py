"""Issue 21, item 4: the sweeper fails over within a second.

The replica holding the scheduler lease is killed with ``kill -9``; the survivor expires the
grants that end afterwards within about a second of their end (it waited for the dead holder's
5 s lease before). A restarted broker on the same host takes the lease of its dead predecessor
at once (the holder names a pid that no longer runs).
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import time

import httpx
import jwt
import pytest

from broker.identity import make_assertion
from broker.scheduler import Scheduler, holder_is_dead
from tests.support.harness import ISSUER, write_agents
from tests.support.process import BrokerProcess, jitgate_env

READ = {"action": "read", "target": "staging/payments-api", "justification": "read the config", "duration_s": 4}


def _auth(keys, agent="reader-bot") -> dict:
    return {"Authorization": "Bearer " + make_assertion(keys[agent], agent_id=agent, audience=ISSUER)}


async def test_a_killed_lease_holder_is_replaced_within_a_second(tmp_path, redis_url, prefix, redis):
    """Issue 21.4 ("overdue grants expired 1.5-5.5 s after..."): kill -9 of the lease holder just
    before ten grants end; the survivor expires each within 2 s of its end (target 1 s; 5 s before)."""
    keys = write_agents(tmp_path / "agents.yaml")
    kek = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env = jitgate_env(tmp_path, prefix, kek, redis_url, JITGATE_SWEEP_INTERVAL_S="0.2")
    with BrokerProcess(env) as a, BrokerProcess(env) as b:
        by_pid = {a.proc.pid: a, b.proc.pid: b}
        async with httpx.AsyncClient(timeout=30) as http:
            grants = []
            for _ in range(10):
                rid = (await http.post(a.url + "/v1/escalations", json=READ, headers=_auth(keys))).json()["id"]
                tok = (await http.post(f"{a.url}/v1/escalations/{rid}/token", headers=_auth(keys))).json()
                grants.append((rid, jwt.decode(tok["access_token"], options={"verify_signature": False})["exp"]))
            holder = (await redis.get(prefix + "scheduler:lease")).decode()
            dead = by_pid[int(holder.rsplit(":", 2)[1])]
            survivor = b if dead is a else a
            first_end = min(exp for _, exp in grants)
            await asyncio.sleep(max(0.0, first_end - time.time() - 0.3))
            os.kill(dead.proc.pid, signal.SIGKILL)  # renewed a moment ago: its lease has the most left
            dead.proc.wait()
            lags = {}
            deadline = time.time() + 15
            while len(lags) < len(grants) and time.time() < deadline:
                for rid, exp in grants:
                    if rid not in lags:
                        body = (await http.get(f"{survivor.url}/v1/escalations/{rid}", headers=_auth(keys))).json()
                        if body["status"] == "expired":
                            lags[rid] = time.time() - exp
                await asyncio.sleep(0.05)
    assert len(lags) == len(grants), f"not expired: {set(r for r, _ in grants) - set(lags)}"
    assert max(lags.values()) < 2.0, sorted(lags.values())


async def test_a_restarted_broker_takes_its_dead_predecessors_lease_at_once(harness, redis):
    """Issue 21.4: the lease names host:pid:id; a holder on this host whose pid is gone (or is this
    very pid: a restarted container) is dead, and its lease is taken now, not when it runs out."""
    s = harness.broker.scheduler
    await s.stop()
    gone = _a_pid_that_is_not_running()
    await redis.set(s.lease_key, f"{socket.gethostname()}:{gone}:old", px=60_000)
    assert await s.has_lease()
    assert (await redis.get(s.lease_key)).decode() == s.holder
    await redis.set(s.lease_key, f"{socket.gethostname()}:{os.getpid()}:earlier-incarnation", px=60_000)
    assert await s.has_lease()
    alive = f"{socket.gethostname()}:{os.getppid()}:another-broker"  # a live process: wait for its TTL
    await redis.set(s.lease_key, alive, px=60_000)
    assert not await s.has_lease()
    await redis.set(s.lease_key, f"elsewhere.example:{gone}:x", px=60_000)  # another host: never judged
    assert not await s.has_lease()


@pytest.mark.parametrize("holder, dead", [
    ("h:1234:x", False),  # pid 1234 is alive in the fake table below
    ("h:999999:x", True),
    ("h:42:x", True),  # this process's own pid: an earlier incarnation
    ("other:999999:x", False),
    ("garbage", False),
    ("h:-1:x", False),
])
def test_holder_is_dead(holder, dead, monkeypatch):
    def fake_kill(pid, sig):
        if pid != 1234:
            raise ProcessLookupError
    monkeypatch.setattr(os, "kill", fake_kill)
    assert holder_is_dead(holder, host="h", pid=42) is dead


def test_the_lease_outlives_several_sweeps():
    """The lease is long enough for a few missed renewals, and never below 0.8 s."""
    assert Scheduler.__init__  # the TTL follows the sweep interval
    from broker.scheduler import lease_ttl_ms
    assert lease_ttl_ms(0.2) == 800 and lease_ttl_ms(0.05) == 800 and lease_ttl_ms(1.0) == 4000


def _a_pid_that_is_not_running() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid -= 1
