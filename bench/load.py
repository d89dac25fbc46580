"""A bounded closed-loop load generator (asyncio + aiohttp) and the statistics it reports.

``concurrency`` workers each run one operation after another (an operation may be
several HTTP calls, e.g. propose → token → complete) until the time budget or the
operation budget runs out, whichever comes first. Every call's latency is recorded per
endpoint; the first ``warmup_s`` seconds are run but not recorded.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import aiohttp


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, nearest-rank; NaN if empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(values: list[float]) -> dict:
    """p50, p99, max and count of latencies given in seconds, reported in milliseconds."""
    v = sorted(values)
    return {
        "n": len(v),
        "p50_ms": round(percentile(v, 50) * 1000, 3),
        "p99_ms": round(percentile(v, 99) * 1000, 3),
        "max_ms": round(v[-1] * 1000, 3) if v else math.nan,
    }


class HarnessError(RuntimeError):
    """The harness could not do what it set out to do (a failed call, a server gone)."""


@dataclass
class Recorder:
    """Latencies per endpoint and failures of one measured phase."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    recording: bool = True
    ops_total: int = 0  # completed operations, warm-up included

    def add(self, endpoint: str, seconds: float) -> None:
        if self.recording:
            self.latencies[endpoint].append(seconds)

    def fail(self, what: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(what)
        else:
            self.errors.append("…")
            del self.errors[20:-1]


class Client:
    """One aiohttp session with a connection pool sized to the concurrency."""

    def __init__(self, concurrency: int, timeout_s: float = 90) -> None:
        self.connector = aiohttp.TCPConnector(limit=concurrency * 2, limit_per_host=concurrency * 2, ttl_dns_cache=None,
                                              keepalive_timeout=120)
        self.session = aiohttp.ClientSession(connector=self.connector, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                             json_serialize=None)

    async def close(self) -> None:
        await self.session.close()

    async def call(self, rec: Recorder, endpoint: str, method: str, url: str, *, expect: int | tuple = 200,
                   data: bytes | None = None, headers: dict | None = None) -> bytes:
        """One timed HTTP call; an unexpected status is recorded as a failure and raised."""
        started = time.perf_counter()
        async with self.session.request(method, url, data=data, headers=headers) as resp:
            body = await resp.read()
        rec.add(endpoint, time.perf_counter() - started)
        ok = resp.status in (expect if isinstance(expect, tuple) else (expect,))
        if not ok:
            rec.fail(f"{endpoint}: HTTP {resp.status} {body[:200]!r}")
            raise HarnessError(f"{endpoint}: HTTP {resp.status}")
        return body


async def closed_loop(
    operation: Callable[[Recorder], Awaitable[None]],
    *,
    concurrency: int,
    duration_s: float,
    max_ops: int,
    warmup_s: float = 0.5,
    max_errors: int = 10,
) -> tuple[Recorder, int, float]:
    """Run ``operation`` from ``concurrency`` workers; returns (recorder, measured ops, measured seconds).

    Bounded three ways: ``duration_s`` after the warm-up, ``max_ops`` in all, and
    ``max_errors`` failures (then :class:`HarnessError`).
    """
    rec = Recorder(recording=False)
    started = time.perf_counter()
    warm_end = started + warmup_s
    end = warm_end + duration_s
    budget = max_ops
    done = 0
    measured_start: float | None = None
    measured_end: float | None = None

    async def worker() -> None:
        nonlocal budget, done, measured_start, measured_end
        while budget > 0:
            now = time.perf_counter()
            if now >= end:
                return
            if not rec.recording and now >= warm_end:
                rec.recording = True
                measured_start = now
            budget -= 1
            counted = rec.recording
            try:
                await operation(rec)
            except HarnessError:
                if len(rec.errors) >= max_errors:
                    raise
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                rec.fail(f"{e.__class__.__name__}: {e}")
                if len(rec.errors) >= max_errors:
                    raise HarnessError(f"too many failed calls: {rec.errors[:3]}") from e
                continue
            rec.ops_total += 1
            if counted:
                done += 1
                measured_end = time.perf_counter()

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*workers)
    finally:  # one failed: stop the others before their client goes away
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if measured_start is None or measured_end is None or done == 0:
        raise HarnessError("no operation completed after the warm-up (raise max_ops or duration_s)")
    return rec, done, measured_end - measured_start
