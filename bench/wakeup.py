"""Item 2: human-approval wake-up. ``n`` requests pending, their agents long-polling; one
approval each, delivered one after another; the figure is the time from the approval's
answer (the click's HTTP response, or the operator call's return) to the agent's long poll
returning, on the same machine-wide monotonic clock."""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
import time

import orjson

from .autogrant import JSON
from .load import Client, HarnessError, Recorder, summary
from .procs import _preexec, pin

# prod-restart: one approval from sre; the bench agents' owner (dave) is not in sre.
RESTART = orjson.dumps({
    "action": "restart", "target": "prod/payments-api", "justification": "restart the stuck worker pool",
    "duration_s": 300, "evidence": [{"kind": "ticket", "title": "INC-7", "url": "https://tickets.example.com/INC-7"}],
})
APPROVER = "bob"


class OperatorClicker:
    """Approvals through ``lifecycle.approve`` in a separate process (bench/approver.py)."""

    name = "operator"
    channel = "cli"
    describe = "lifecycle.approve in a separate process (the path of `jitgate requests approve`)"

    def __init__(self, env: dict, cpus: set[int] | None) -> None:
        self.env, self.cpus = env, cpus
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.approver", APPROVER, env=self.env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=_preexec(self.cpus))
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            err = await self.proc.stderr.read()
            raise HarnessError(f"approver process did not start: {line!r} {err[-1500:]!r}")
        pin(self.proc.pid, self.cpus)

    async def click(self, rid: str) -> tuple[float, float]:
        """(when the approval began, when it was answered), machine-wide monotonic seconds."""
        self.proc.stdin.write(rid.encode() + b"\n")
        await self.proc.stdin.drain()
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode().split()
        if len(line) != 3 or line[0] != rid:
            raise HarnessError(f"approver process answered {line!r}")
        return float(line[1]), float(line[2])

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _waiters(client: Client, url: str) -> int:
    body = (await client.call(Recorder(), "metrics", "GET", url + "/metrics")).decode()
    m = re.search(r"^jitgate_longpoll_waiters (\S+)$", body, re.M)
    return int(float(m.group(1))) if m else 0


async def measure(stack, propose_url: str, poll_urls: list[str], clicker, n: int, gap_s: float, log,
                  label: str) -> dict:
    """``n`` pending requests proposed on ``propose_url``, polled on ``poll_urls`` (in turn),
    approved one by one through ``clicker`` with ``gap_s`` between approvals."""
    client = Client(max(16, n))
    rec = Recorder()
    agents = itertools.cycle(stack.agents.ids)
    polls: list[asyncio.Task] = []
    try:
        pending: list[tuple[str, str]] = []
        for _ in range(n):
            a = next(agents)
            body = await client.call(rec, "propose", "POST", propose_url + "/v1/escalations", expect=201, data=RESTART,
                                     headers={**JSON, "Authorization": stack.agents.bearer(a)})
            req = orjson.loads(body)
            if req["status"] != "pending":
                raise HarnessError(f"expected pending, got {req['status']}")
            pending.append((req["id"], a))
        if hasattr(clicker, "prepare"):
            await clicker.prepare([rid for rid, _ in pending])
        returned: dict[str, float] = {}
        turn = itertools.cycle(poll_urls)

        async def poll(rid: str, agent: str, url: str) -> None:
            body = await client.call(rec, "poll", "GET", f"{url}/v1/escalations/{rid}?wait=60",
                                     headers={"Authorization": stack.agents.bearer(agent)})
            returned[rid] = time.monotonic()
            req = orjson.loads(body)
            if req["status"] != "approved" or req["approvals"][-1]["channel"] != clicker.channel:
                raise HarnessError(f"long poll of {rid} returned {req['status']} {req['approvals']}")

        polls = [asyncio.create_task(poll(rid, a, next(turn))) for rid, a in pending]
        # Every agent is waiting before the first approval.
        deadline = time.monotonic() + 20
        while sum([await _waiters(client, u) for u in poll_urls]) < n:
            if time.monotonic() > deadline:
                raise HarnessError("the long polls did not all register")
            if any(p.done() for p in polls):
                raise HarnessError("a long poll returned before its approval")
            await asyncio.sleep(0.05)
        clicked: dict[str, tuple[float, float]] = {}
        for rid, _a in pending:
            clicked[rid] = await clicker.click(rid)
            await asyncio.sleep(gap_s)
        await asyncio.wait_for(asyncio.gather(*polls), 60)
    finally:
        for p in polls:
            p.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        await client.close()
    from_answer = [returned[rid] - clicked[rid][1] for rid, _ in pending]
    from_sent = [returned[rid] - clicked[rid][0] for rid, _ in pending]
    row = {"config": label, "approval_path": clicker.describe, "requests": n,
           # The figure: from the approval's answer (the click's HTTP response).
           **summary(from_answer), "min_ms": round(min(from_answer) * 1000, 3),
           # From the moment the click was sent: never shorter, and what the verdict uses.
           "from_sent": {**summary(from_sent), "min_ms": round(min(from_sent) * 1000, 3)},
           "answer": summary([clicked[rid][1] - clicked[rid][0] for rid, _ in pending])}
    log(f"  wake-up {label}: from the answer p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms max {row['max_ms']} ms; "
        f"from the click sent p50 {row['from_sent']['p50_ms']} p99 {row['from_sent']['p99_ms']} ms")
    return row
