"""Seed active grants through the real lifecycle, in a process of its own.

``python -m bench.seed N AGENTS OUT`` (with a broker's environment): ``N`` proposals
granted at once by policy and collected — ``Lifecycle.submit`` then ``Lifecycle.collect``,
the code the HTTP handlers call, minus HTTP and the assertion check — by the agents
``AGENTS`` (comma-separated) in turn, 64 at a time; the request ids go to ``OUT``, one a
line (and with a fourth argument ``TOKENS``, their tokens to that file, in the same order). Notifications wait in the outbox for the serving broker, as with the operator CLI.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

import redis.asyncio as aioredis

from broker.app import build, shutdown
from broker.config import Settings

from .procs import run_async
from broker.model import Proposal

PROPOSAL = {
    "action": "read", "target": "staging/payments-api", "justification": "nightly consistency check",
    "duration_s": 600,
    "evidence": [{"kind": "ticket", "title": "OPS-9", "url": "https://tickets.example.com/OPS-9"}],
}


async def seed(n: int, agent_ids: list[str], tokens: list[str] | None = None) -> list[str]:
    settings = Settings.from_env()
    client = aioredis.from_url(settings.redis_url)
    broker = await build(settings, redis=client, notifiers=[], desks=[], start_background=False)
    life = broker.lifecycle
    turn = itertools.cycle([broker.registry.agent(a) for a in agent_ids])
    proposal = Proposal.parse(PROPOSAL)
    ids: list[str] = []
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            agent = next(turn)
            req, _ = await life.submit(agent, proposal)
            if req.status != "approved":
                raise RuntimeError(f"expected an auto-grant, got {req.status}")
            issued = await life.collect(req.id, agent)
            ids.append(req.id)
            if tokens is not None:
                tokens.append(issued.access_token)

    try:
        await asyncio.gather(*(worker() for _ in range(64)))
    finally:
        await shutdown(broker)
    return ids


def main() -> None:
    n, agents, out = int(sys.argv[1]), sys.argv[2].split(","), Path(sys.argv[3])
    tokens: list[str] | None = [] if len(sys.argv) > 4 else None
    out.write_text("\n".join(run_async(seed(n, agents, tokens))) + "\n")
    if tokens is not None:
        Path(sys.argv[4]).write_text("\n".join(tokens) + "\n")


if __name__ == "__main__":
    main()
