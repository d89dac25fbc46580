"""What Slack's listeners and ``/jit`` are given when the desk builds them (never the desk,
so nothing in ``bot.slack`` but the package imports ``desk.py``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

from slack_sdk.web.async_client import AsyncWebClient

from broker.directory import Approver
from broker.notify import DeskContext

from bot.kit.confirmations import Confirmations

from .api import SlackApi
from .notifier import SlackNotifier

log = logging.getLogger("jitgate.slack")


@dataclass
class Parts:
    """The Slack desk's collaborators, handed to each listener at construction."""

    api: SlackApi
    client: AsyncWebClient  # raw, no retry: a break-glass token is sent at most once
    notifier: SlackNotifier
    approver: Callable[[str], Awaitable[Approver]]  # the approver bound to a verified Slack user id
    ctx: DeskContext = None  # type: ignore[assignment]  # the desk's context, set when it starts
    confirmations: Confirmations = None  # type: ignore[assignment]  # set when it starts

    def start(self, ctx: DeskContext) -> None:
        """Fill in what exists only once the broker is built."""
        self.ctx = ctx
        self.confirmations = Confirmations(ctx.keys.redis, ctx.keys.prefix, "slack")

    async def answer(self, channel: str | None, user: str, text: str) -> None:
        """An ephemeral answer to ``user`` in ``channel`` (a DM when there is no channel)."""
        try:
            if channel:
                await self.api.call("chat_postEphemeral", channel=channel, user=user, text=text)
            else:
                await self.api.call("chat_postMessage", channel=user, text=text)
        except Exception:  # noqa: BLE001 - a courtesy; the state is already right
            log.exception("could not answer Slack user %s", user)
