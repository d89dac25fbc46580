"""Item 6 of issue 16: how long after a revocation a resource server following the broker's
Shared Signals refuses the token. ``n`` tokens are issued over HTTP (proposed, auto-granted,
collected); a :class:`broker.client.TokenVerifier` in this process subscribes to a poll stream
(RFC 8936, as the resource server ``bench-rs``); then the tokens are revoked through
``POST /v1/revoke`` (RFC 7009, as that resource server) at ``rate`` per second.

Lag is, per token, the moment the verifier recorded its ``jti`` as revoked (from then on
``verify`` refuses it) minus the moment its revocation request was sent: it includes the
revocation itself, the fan-out, signing, the long poll's answer and the SET's verification.
``lag_after_answer`` starts at the revocation's HTTP answer instead (the signal's own part),
so a revocation endpoint slowed by a busy machine does not hide what the signal costs.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import jwt

from broker.client import ANY_AUDIENCE, InvalidToken, TokenVerifier
from broker.client.signals import RevokedTokens

from .agents import RESOURCE_SERVER
from .introspect import issue_tokens
from .load import HarnessError, summary
from .procs import ISSUER, CpuMeter

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class TimedRevoked(RevokedTokens):
    """RevokedTokens that remembers when each jti arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}
        self._at_lock = threading.Lock()

    def add(self, jti: str, now: float | None = None) -> None:
        super().add(jti, now)
        with self._at_lock:
            self.at.setdefault(jti, time.time())


async def measure(stack, broker, n: int, rate: float, log, bound_s: float = 30) -> dict:
    log(f"  issuing {n} tokens over HTTP …")
    tokens = await issue_tokens(stack, broker.url, n)
    jtis = [jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens]
    verifier = TokenVerifier(broker.url, issuer=ISSUER, audience=ANY_AUDIENCE)
    verifier.revoked = timed = TimedRevoked()
    sub = await asyncio.to_thread(verifier.subscribe, RESOURCE_SERVER, stack.agents.keys[RESOURCE_SERVER])
    bm = CpuMeter(broker.pid)
    sent: dict[str, float] = {}
    done: dict[str, float] = {}
    failures: list[str] = []
    try:
        # Every token verifies before (the JWKS fetched once here, not inside the measured phase).
        await asyncio.to_thread(verifier.verify, tokens[0])
        pool = stack.agents.mint(RESOURCE_SERVER, n)
        bm.reset()
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=32), timeout=30) as http:

            async def revoke(token: str, jti: str) -> None:
                sent[jti] = time.time()
                r = await http.post(broker.url + "/v1/revoke", content=f"token={token}".encode(),
                                    headers={**FORM, "Authorization": pool.pop()})
                done[jti] = time.time()
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:120]}")

            loop = asyncio.get_running_loop()
            start = loop.time()
            tasks = []
            for i, (token, jti) in enumerate(zip(tokens, jtis)):
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(loop.create_task(revoke(token, jti)))
            await asyncio.gather(*tasks)
        if failures:
            raise HarnessError(f"{len(failures)} revocations failed, e.g. {failures[0]}")
        deadline = time.time() + bound_s
        while len(timed.at) < n and time.time() < deadline:
            await asyncio.sleep(0.05)
        b_cpu, wall = bm.read()
        lags = [timed.at[j] - sent[j] for j in jtis if j in timed.at]
        refused = 0
        for t in tokens[: min(50, n)]:
            try:
                await asyncio.to_thread(verifier.verify, t)
            except InvalidToken:
                refused += 1
        if refused != min(50, n):
            raise HarnessError(f"only {refused} of {min(50, n)} revoked tokens were refused by the verifier")
        result = {
            "tokens": n,
            "revocations_per_s": rate,
            "path": "POST /v1/revoke (RFC 7009) -> grant_ended -> fan-out -> SET -> RFC 8936 long poll -> "
                    "TokenVerifier refuses",
            "signalled": len(lags),
            "not_signalled_within_bound": n - len(lags),
            "lag": summary(lags),
            # The signal's own part: from the revocation's answer (the grant is revoked by then).
            "lag_after_answer": summary([max(0.0, timed.at[j] - done[j]) for j in jtis if j in timed.at and j in done]),
            "revoke_call": summary([done[j] - sent[j] for j in jtis if j in done]),
            "broker_cpu_cores_avg": round(b_cpu / max(wall, 1e-6), 2),
            "target_p99_ms": 1000,
            "met": bool(lags) and len(lags) == n and summary(lags)["p99_ms"] < 1000,
        }
        log(f"  ssf: revocation -> subscribed verifier refuses: p50 {result['lag']['p50_ms']} ms "
            f"p99 {result['lag']['p99_ms']} ms max {result['lag']['max_ms']} ms at {rate:g} revocations/s; "
            f"{result['not_signalled_within_bound']} not signalled")
        return result
    finally:
        await asyncio.to_thread(sub.close, delete=True)
