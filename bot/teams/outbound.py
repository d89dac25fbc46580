"""Calls to the Bot Connector: post, reply in a thread, edit, open a personal chat, list a
team's channels.

The connector clients come from botbuilder (the connector factory of the configured
``BotFrameworkAuthentication``, so outbound tokens come from jitgate's MSAL factory) and
are kept per service URL. Teams throttles per bot and conversation (7 messages/s, 60 per
30 s): a 429 or a passing 5xx is retried after ``Retry-After`` (or a short backoff), within
a bounded number of attempts and seconds; beyond that the error goes up and the outbox
retries the whole delivery later.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time

from botbuilder.schema import Activity, ActivityTypes, Attachment, ChannelAccount, ConversationParameters
from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import AuthenticationConstants, ClaimsIdentity
from botframework.connector.teams import TeamsConnectorClient
from msrest.exceptions import HttpOperationError

from . import cards

log = logging.getLogger("jitgate.teams")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
CALL_TIMEOUT_S = 15


def card_activity(card: dict, summary: str | None = None) -> Activity:
    """A message carrying one Adaptive Card (``summary`` is the notification preview)."""
    return Activity(type=ActivityTypes.message, summary=summary, text=None,
                    attachments=[Attachment(content_type=cards.CONTENT_TYPE, content=card)])


class Throttled(Exception):
    """Teams kept refusing (429/5xx) beyond the retry budget."""


def retry_after_s(headers, default: float) -> float:
    """``Retry-After`` as seconds (delta or HTTP date); ``default`` when absent or unreadable."""
    raw = (headers or {}).get("Retry-After") if headers is not None else None
    if not raw:
        return default
    raw = str(raw).strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def no_status_retries(config) -> None:
    """Turn off msrest's own retries on HTTP statuses: its urllib3 policy sleeps out any
    ``Retry-After`` (up to six hours) in a worker thread and retries 5xx three times,
    hidden from the budget below. Connection errors are still retried by it (quickly).
    And a call waits at most ``CALL_TIMEOUT_S``, not msrest's 100 s."""
    policy = config.retry_policy.policy
    policy.status_forcelist = frozenset()
    policy.respect_retry_after_header = False
    config.connection.timeout = CALL_TIMEOUT_S


class Outbound:
    """The bot's outbound side, one connector client per service URL."""

    def __init__(self, authentication, credentials_factory, app_id: str, *, max_attempts: int = 4,
                 max_wait_s: float = 10.0) -> None:
        self.authentication = authentication
        self.credentials_factory = credentials_factory
        self.app_id = app_id
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self._clients: dict[str, ConnectorClient] = {}
        self.throttled = 0  # how many 429s were honoured (metrics, tests)

    async def _client(self, service_url: str) -> ConnectorClient:
        client = self._clients.get(service_url)
        if client is None:
            claims = ClaimsIdentity({AuthenticationConstants.AUDIENCE_CLAIM: self.app_id,
                                     AuthenticationConstants.APP_ID_CLAIM: self.app_id}, True)
            factory = self.authentication.create_connector_factory(claims)
            client = await factory.create(service_url, None)
            no_status_retries(client.config)
            if len(self._clients) >= 32:  # a handful of regions in practice; stay bounded regardless
                old = self._clients.pop(next(iter(self._clients)))
                await _close(old)
            self._clients[service_url] = client
        return client

    async def _call(self, what: str, fn, retry: frozenset[int] = RETRY_STATUSES, max_wait_s: float | None = None):
        deadline = time.monotonic() + (self.max_wait_s if max_wait_s is None else max_wait_s)
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await fn()
            except HttpOperationError as e:
                status = getattr(e.response, "status_code", 0)
                if status not in retry or attempt == self.max_attempts:
                    if status in retry:
                        raise Throttled(f"{what}: Teams answered {status} {attempt} times") from e
                    raise
                wait = retry_after_s(getattr(e.response, "headers", None), default=0.5 * 2 ** (attempt - 1))
                if time.monotonic() + wait > deadline:
                    raise Throttled(f"{what}: Teams asks to wait {wait:.0f} s, beyond the retry budget") from e
                if status == 429:
                    self.throttled += 1
                log.info("Teams %s: HTTP %s, retrying in %.1f s", what, status, wait)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def post(self, service_url: str, conversation_id: str, activity: Activity) -> str:
        """A new top-level message (a new post in a channel); returns its activity id."""
        client = await self._client(service_url)
        res = await self._call("post", lambda: client.conversations.send_to_conversation(conversation_id, activity))
        return res.id

    async def post_once(self, service_url: str, conversation_id: str, activity: Activity, *,
                        max_wait_s: float = 3.0) -> str:
        """A new message that must not arrive twice (a secret shown once): retried only on 429,
        which Teams answers before accepting anything; any other failure goes up as is."""
        client = await self._client(service_url)
        res = await self._call("post once", lambda: client.conversations.send_to_conversation(conversation_id, activity),
                               retry=frozenset({429}), max_wait_s=max_wait_s)
        return res.id

    async def create_personal(self, service_url: str, *, bot_id: str | None, user_id: str, tenant_id: str) -> str:
        """The 1:1 conversation between the bot and a Teams user (created, or the existing one
        returned; Teams allows it where the app is installed for that user or in one of their
        teams). Returns its id."""
        client = await self._client(service_url)
        params = ConversationParameters(is_group=False, bot=ChannelAccount(id=bot_id) if bot_id else None,
                                        members=[ChannelAccount(id=user_id)], tenant_id=tenant_id,
                                        channel_data={"tenant": {"id": tenant_id}})
        res = await self._call("create conversation", lambda: client.conversations.create_conversation(params),
                               max_wait_s=3.0)
        if not getattr(res, "id", None):
            raise ValueError("Teams returned no conversation id")
        return res.id

    async def reply(self, service_url: str, conversation_id: str, activity_id: str, activity: Activity) -> str | None:
        """A reply in the thread under ``activity_id``."""
        client = await self._client(service_url)
        activity.reply_to_id = activity_id
        res = await self._call("reply", lambda: client.conversations.reply_to_activity(conversation_id, activity_id, activity))
        return getattr(res, "id", None)

    async def update(self, service_url: str, conversation_id: str, activity_id: str, activity: Activity) -> None:
        """Replace a posted message (the card) in place."""
        client = await self._client(service_url)
        activity.id = activity_id
        await self._call("update", lambda: client.conversations.update_activity(conversation_id, activity_id, activity))

    async def team_channels(self, service_url: str, team_id: str) -> list[tuple[str, str | None]]:
        """A team's channels as (id, name); the General channel has no name of its own."""
        creds = await self.credentials_factory.create_credentials(self.app_id, AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE,
                                                                  None, True)

        def fetch():  # botbuilder's Teams client is synchronous: keep it off the event loop
            client = TeamsConnectorClient(creds, service_url)
            no_status_retries(client.config)
            try:
                return client.teams.get_teams_channels(team_id).conversations or []
            finally:
                client.close()

        channels = await asyncio.wait_for(asyncio.to_thread(fetch), timeout=30)
        return [(c.id, c.name) for c in channels]

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await _close(c)


async def _close(client: ConnectorClient) -> None:
    try:
        await client.__aexit__(None, None, None)  # msrest's async clients close their session on exit
    except Exception:  # noqa: BLE001 - closing is best effort
        log.debug("closing a connector client failed", exc_info=True)
