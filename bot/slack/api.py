"""Calls to the Slack Web API with a bounded retry budget.

Slack answers 429 with ``Retry-After`` when a method's rate limit is hit
(``chat.postMessage`` about one per second per channel, ``chat.update`` about 50 a
minute); a 5xx or a dropped connection is worth another try too. Everything else
(``channel_not_found``, ``invalid_blocks``, ...) will not get better by waiting and is
raised at once. The budget bounds the total wait, so a notification never hangs the
outbox: when it is spent the error goes up and the outbox retries the delivery later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

log = logging.getLogger("jitgate.slack.api")

Sleep = Callable[[float], Awaitable[None]]


class SlackApi:
    """Thin retrying wrapper around one :class:`AsyncWebClient`."""

    def __init__(self, client: AsyncWebClient, *, attempts: int = 4, budget_s: float = 20.0,
                 backoff_s: float = 0.5, sleep: Sleep = asyncio.sleep) -> None:
        self.client = client
        self.attempts = attempts
        self.budget_s = budget_s
        self.backoff_s = backoff_s
        self.sleep = sleep

    async def call(self, method: str, **kwargs: Any) -> AsyncSlackResponse:
        """Call ``method`` (e.g. ``chat_postMessage``) with ``kwargs``, retrying what may pass."""
        fn = getattr(self.client, method)
        waited = 0.0
        for attempt in range(1, self.attempts + 1):
            try:
                return await fn(**kwargs)
            except SlackApiError as e:
                status = getattr(e.response, "status_code", 0)
                if status == 429:
                    delay = _retry_after(e.response)
                elif status >= 500:
                    delay = self.backoff_s * 2 ** (attempt - 1)
                else:
                    raise
                why = f"HTTP {status}"
                error: Exception = e
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
                delay = self.backoff_s * 2 ** (attempt - 1)
                why, error = e.__class__.__name__, e
            if attempt == self.attempts or waited + delay > self.budget_s:
                log.warning("Slack %s failed (%s); giving up after %d attempt(s)", method, why, attempt)
                raise error
            log.info("Slack %s: %s; retrying in %.1f s", method, why, delay)
            await self.sleep(delay)
            waited += delay
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(response) -> float:
    headers = getattr(response, "headers", None) or {}
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if raw is None:
        for k, v in dict(headers).items():
            if k.lower() == "retry-after":
                raw = v
    try:
        return max(0.0, float(raw if not isinstance(raw, list) else raw[0]))
    except (TypeError, ValueError):
        return 1.0
