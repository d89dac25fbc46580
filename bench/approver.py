"""The operator approval path in its own process: ``lifecycle.approve`` exactly as
``jitgate requests approve`` calls it (same checks, channel ``cli``), without the
process start per approval.

Reads request ids on stdin, one per line; approves each as ``APPROVER`` and answers
``<id> <start> <end>`` on stdout: CLOCK_MONOTONIC seconds when the approve call began
and when it returned. The monotonic clock
is shared by every process on the machine, so the harness can subtract.

Run: ``python -m bench.approver APPROVER`` with the broker's environment.
"""

from __future__ import annotations

import asyncio
import sys
import time

import redis.asyncio as aioredis

from broker.app import build, shutdown
from broker.config import Settings

from .procs import run_async


async def main(approver_id: str) -> None:
    settings = Settings.from_env()
    client = aioredis.from_url(settings.redis_url)
    broker = await build(settings, redis=client, notifiers=[], desks=[], start_background=False)
    life = broker.lifecycle
    approver = life.operator_approver(approver_id)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    try:
        while line := (await reader.readline()).decode().strip():
            began = time.monotonic()
            req = await life.approve(line, approver, channel="cli", platform_user="bench")
            done = time.monotonic()
            if req.status != "approved":
                print(f"{line} error {req.status}", flush=True)
                continue
            print(f"{line} {began:.6f} {done:.6f}", flush=True)
    finally:
        await shutdown(broker)


if __name__ == "__main__":
    run_async(main(sys.argv[1]))
