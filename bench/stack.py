"""The system under test: one Redis, the bench agents, and broker processes on demand."""

from __future__ import annotations

import asyncio
import re
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from .agents import Agents
from .procs import ROOT, Processes, broker_env, broker_server, kek, start_redis

PREFIX = "jitgate:"
# redis-py 8's asyncio pool refuses a connection beyond 100 (MaxConnectionsError, which the
# broker answers with 503) instead of waiting for one. At 64 concurrent agents the request
# handlers and the outbox's concurrent deliveries together pass 100, so the bench raises the
# pool size through the URL; README "Findings" has the numbers and the proposed core fix.
POOL = 1024


def _script_commands() -> frozenset[str]:
    """Commands jitgate runs inside Lua scripts, except GET/SET/DEL which its clients send too."""
    names = set()
    for f in list((ROOT / "broker" / "lua").glob("*.lua")) + list((ROOT / "broker").glob("*.py")):
        names.update(m.lower() for m in re.findall(r"redis\.call\(['\"]([A-Z]+)['\"]", f.read_text()))
    return frozenset(names - {"get", "set", "del"})


SCRIPT_COMMANDS = _script_commands()


class Stack:
    """Redis (server core), bench agents, and brokers started with :meth:`brokers`."""

    def __init__(self, ps: Processes, work: Path, plan: dict, agents: int = 4) -> None:
        self.ps = ps
        self.work = work
        self.plan = plan
        self.redis_server = ps.add(start_redis(plan["server"]))
        self.redis_url = self.redis_server.url
        self.agents = Agents(work / "agents.yaml", agents)
        self.kek = kek()

    @property
    def redis_pid(self) -> int:
        return self.redis_server.proc.pid

    def env(self, **extra: str) -> dict:
        return broker_env(self.work, f"{self.redis_url}?max_connections={POOL}", PREFIX, self.kek, **extra)

    def client(self) -> aioredis.Redis:
        return aioredis.from_url(self.redis_url, max_connections=POOL)

    async def flush(self) -> None:
        """Start a scenario from an empty Redis."""
        r = self.client()
        try:
            await r.flushall()
        finally:
            await r.aclose()

    async def commandstats(self) -> dict[str, tuple[int, int]]:
        """Redis ``INFO commandstats``: command -> (calls, CPU µs), since the server started."""
        r = self.client()
        try:
            raw = await r.info("commandstats")
        finally:
            await r.aclose()
        return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in raw.items()}

    async def drain_outbox(self, timeout: float = 60) -> None:
        """Wait until the brokers delivered every queued notification."""
        from .load import HarnessError  # noqa: PLC0415

        r = self.client()
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while await r.xlen(PREFIX + "outbox") > 0:
                if asyncio.get_running_loop().time() > deadline:
                    raise HarnessError(f"the outbox did not drain within {timeout:.0f} s")
                await asyncio.sleep(0.05)
        finally:
            await r.aclose()

    @staticmethod
    def per_op(before: dict, after: dict, ops: int) -> dict:
        """Redis commands and Redis CPU per operation between two commandstats readings,
        split into the client's round trips and the commands run inside Lua scripts
        (commandstats counts both; the split goes by which commands jitgate's scripts use,
        so it is close, not exact)."""
        trips, inside, usec, cost = {}, {}, 0, {}
        evalsha = after.get("evalsha", (0, 0))[0] - before.get("evalsha", (0, 0))[0]
        for cmd, (c, u) in after.items():
            c0, u0 = before.get(cmd, (0, 0))
            if c > c0 and cmd not in ("info", "ping"):
                if cmd == "hgetall":
                    # Both: the scripts that change a request return it (one HGETALL each, at
                    # most one per EVALSHA), and the broker reads a request before changing it.
                    in_scripts = min(c - c0, evalsha)
                    if in_scripts:
                        inside[cmd] = round(in_scripts / ops, 2)
                    if c - c0 > in_scripts:
                        trips[cmd] = round((c - c0 - in_scripts) / ops, 2)
                        usec += (u - u0) * (c - c0 - in_scripts) / (c - c0)
                        cost[cmd] = round((u - u0) * (c - c0 - in_scripts) / (c - c0) / ops, 1)
                    continue
                in_script = cmd in SCRIPT_COMMANDS
                (inside if in_script else trips)[cmd] = round((c - c0) / ops, 2)
                if not in_script:  # a script's commands are counted in EVALSHA's time already
                    usec += u - u0
                    cost[cmd] = round((u - u0) / ops, 1)

        def ordered(d: dict) -> dict:
            return dict(sorted(d.items(), key=lambda kv: -kv[1]))

        return {"round_trips": ordered(trips), "round_trips_total": round(sum(trips.values()), 1),
                "in_scripts": ordered(inside), "in_scripts_total": round(sum(inside.values()), 1),
                "redis_us": round(usec / ops, 1),
                # Redis CPU by command (EVALSHA's includes the commands its script runs).
                "redis_us_by_command": ordered(cost)}

    @asynccontextmanager
    async def brokers(self, n: int = 1, cpus: set[int] | None = None, **extra: str):
        """``n`` broker processes on ``cpus`` (default: the server core), stopped afterwards.

        Started from threads, so this event loop keeps serving meanwhile (the Slack
        stand-in answers the desk's ``auth.test`` during start-up)."""
        cpus = self.plan["server"] if cpus is None else cpus
        servers = [self.ps.add(broker_server(self.env(**extra), cpus, name=f"broker-{i}")) for i in range(n)]
        try:
            await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers))
            yield servers
        finally:
            for s in servers:
                await asyncio.to_thread(self.ps.stop, s)
