"""What Slack's listeners and ``/jit`` are given when the desk builds them: the desk's
context (once started), approver resolution, the Web API, the notifier (for the security
alert) and the one-time confirmations. They never reach back into the desk, so no module
of ``bot.slack`` imports ``desk.py`` but the package itself."""

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
    _ctx: DeskContext | None = None
    _confirmations: Confirmations | None = None

    def start(self, ctx: DeskContext) -> None:
        """Fill in what exists only once the broker is built."""
        self._ctx = ctx
        self._confirmations = Confirmations(ctx.keys.redis, ctx.keys.prefix, "slack")

    @property
    def ctx(self) -> DeskContext:
        if self._ctx is None:
            raise RuntimeError("the Slack desk has not been started")
        return self._ctx

    @property
    def confirmations(self) -> Confirmations:
        if self._confirmations is None:
            raise RuntimeError("the Slack desk has not been started")
        return self._confirmations

    async def answer(self, channel: str | None, user: str, text: str) -> None:
        """An ephemeral answer to ``user`` in ``channel`` (a DM when there is no channel)."""
        try:
            if channel:
                await self.api.call("chat_postEphemeral", channel=channel, user=user, text=text)
            else:
                await self.api.call("chat_postMessage", channel=user, text=text)
        except Exception:  # noqa: BLE001 - a courtesy; the state is already right
            log.exception("could not answer Slack user %s", user)
