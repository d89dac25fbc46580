"""The Slack approval desk: a Bolt app on the broker's server (HTTP mode) or over a
Socket Mode connection, plus the Slack notifier."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time

from slack_bolt.adapter.starlette.async_handler import to_async_bolt_request, to_starlette_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request as HttpRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from broker.bodies import read_body
from broker.directory import Approver
from broker.errors import BrokerError, ConfigError
from broker.notify import DeskContext

from bot.approvers import Binder, slack_approver

from .api import SlackApi
from .breakglass import BreakGlassListeners
from .commands import SlashCommand
from .listeners import Listeners
from .logs import quiet_logger
from .notifier import NAME, SlackNotifier
from .parts import Parts
from .people import bindable_email
from .settings import SlackSettings
from .usergroups import TTL_S, UserGroups

log = logging.getLogger("jitgate.slack")

EVENTS_PATH = "/slack/events"
# The replay window of HTTP mode's signature timestamp, applied to Socket Mode interactions.
MAX_PAYLOAD_AGE_S = 300
# X-Slack-Request-Timestamp: Unix seconds, ASCII digits (str.isdigit would let other scripts' digits by).
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
# A block_actions payload carries the whole message it came from (up to 50 blocks of 3000
# characters, form-encoded), so this is larger than the agent API's body limit.
MAX_EVENT_BYTES = 1024 * 1024
# auth.test answers meaning the token itself is wrong: refuse to start rather than run deaf.
BAD_TOKEN_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"})


class SlackDesk:
    """Implements the core's Desk port for Slack."""

    name = NAME

    def __init__(self, settings, *, slack: SlackSettings | None = None, retry_backoff_s: float = 0.5,
                 retry_budget_s: float = 20.0, usergroup_ttl_s: float = TTL_S, socket_ping_s: float = 10.0) -> None:
        self.settings = settings  # the core's
        self.slack = slack = slack or SlackSettings.from_env(settings.env)  # the desk's own
        self.socket_mode = bool(slack.app_token)
        self._socket_ping_s = socket_ping_s  # also the SDK's pause between reconnection attempts
        # Why Slack refuses the app token now (None: it does not); /readyz reports it.
        self.app_token_problem: str | None = None
        self._quiet_while_refused = _WhileRefused(self)
        kwargs = {"base_url": slack.api_url} if slack.api_url else {}
        self.client = AsyncWebClient(token=slack.bot_token.reveal(), timeout=10, retry_handlers=[],
                                     logger=quiet_logger("jitgate.slack.sdk", logging.INFO), **kwargs)
        self.api = SlackApi(self.client, backoff_s=retry_backoff_s, budget_s=retry_budget_s)
        self.notifier = SlackNotifier(self.api, settings, slack)
        # Asked while a clicker waits: a short budget, and the answer (or refusal) comes quickly.
        self._usergroup_api = SlackApi(self.client, attempts=2, backoff_s=retry_backoff_s, budget_s=2.0)
        self._usergroup_ttl_s = usergroup_ttl_s
        self.usergroups: UserGroups | None = None
        self.app = AsyncApp(
            name="jitgate",
            client=self.client,
            # Always explicit: Bolt would otherwise read SLACK_SIGNING_SECRET itself. In
            # Socket Mode it is unused (the connection is authenticated by the app token).
            signing_secret=slack.signing_secret.reveal(),
            logger=quiet_logger("jitgate.slack.bolt"),
        )
        # Who we are at Slack (the bot token's workspace from auth.test, the app token's app from the
        # socket's hello): Socket Mode envelopes must name this app and workspace, and e-mail
        # binding trusts only members of this workspace.
        self.team_id: str | None = None
        self.app_id: str | None = None
        if self.socket_mode:
            self.app.middleware(self._envelope_guard)
        # The listeners get their collaborators, never the desk.
        self.parts = Parts(self.api, self.client, self.notifier, approver=self.approver)
        Listeners(self.parts).register(self.app)
        BreakGlassListeners(self.parts).register(self.app)
        SlashCommand(self.parts).register(self.app)
        self._socket = None
        self._connect: asyncio.Task | None = None
        self.binder: Binder | None = None

    # ------------------------------------------------------------------ the port
    def routes(self) -> list:
        """``POST /slack/events`` in HTTP mode; nothing in Socket Mode (no public URL)."""
        if self.socket_mode:
            return []
        return [Route(EVENTS_PATH, self._events, methods=["POST"])]

    async def start(self, ctx: DeskContext) -> None:
        self.parts.start(ctx)
        self.binder = Binder(ctx.directory, email_binding=self.settings.email_binding)
        self.usergroups = UserGroups(self._usergroup_api, ctx.keys.redis, prefix=ctx.keys.prefix,
                                     clock=ctx.clock, ttl_s=self._usergroup_ttl_s)
        self.notifier.bind(ctx)
        problem = ctx.directory.slack_alias_problem(self.settings.email_binding)
        if problem:
            raise ConfigError(problem)  # one person must never count as two approvers
        await self._check_token()
        if self.socket_mode:
            await self._check_app_token()
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler  # noqa: PLC0415

            socket_log = quiet_logger("jitgate.slack.socket")
            socket_log.addFilter(self._quiet_while_refused)
            self._socket = AsyncSocketModeHandler(self.app, self.slack.app_token.reveal(),
                                                  logger=socket_log, web_client=self.client,
                                                  ping_interval=self._socket_ping_s)
            self._socket.client.message_listeners.append(self._on_socket_message)
            self._watch_app_token(self._socket.client)
            # Connect in the background: a Slack outage must not keep the broker (and its
            # API and other desks) from starting. The client retries until it is closed.
            self._connect = asyncio.get_running_loop().create_task(self._socket.connect_async())

    async def stop(self) -> None:
        if self._connect is not None:
            self._connect.cancel()
            await asyncio.wait({self._connect}, timeout=5)
            self._connect = None
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        logging.getLogger("jitgate.slack.socket").removeFilter(self._quiet_while_refused)

    async def readiness(self) -> dict:
        """For /readyz: not ready while Slack refuses the app token (Socket Mode then hears nothing)."""
        if self.app_token_problem:
            return {"ready": False, "detail": self.app_token_problem}
        return {"ready": True, "mode": "socket" if self.socket_mode else "http"}

    # ------------------------------------------------------------------ approver resolution
    async def approver(self, user_id: str) -> Approver:
        """The approver bound to this *verified* Slack user id (:func:`bot.approvers.slack_approver`;
        user groups asked of Slack now, at most a minute old); :class:`NotApprover` if none."""
        return await slack_approver(self.binder, user_id, email_of=self._verified_email,
                                    groups_of=self.usergroups.groups_of)

    # ------------------------------------------------------------------ internals
    async def _events(self, request: HttpRequest) -> Response:
        try:
            body = await read_body(request, MAX_EVENT_BYTES)
        except BrokerError:  # too large, or a malformed Content-Length
            return PlainTextResponse("request too large", status_code=413)
        # Bolt's verifier does int() on the timestamp and lets a ValueError through as a 500
        # (with a traceback): anything but an integer is refused here like a bad signature.
        if not _TIMESTAMP.fullmatch(request.headers.get("x-slack-request-timestamp", "")):
            return Response(b'{"error": "invalid request"}', status_code=401, media_type="application/json")
        return to_starlette_response(await self.app.async_dispatch(to_async_bolt_request(request, body)))

    async def _envelope_guard(self, body: dict, next):  # "next": Bolt injects arguments by name
        """Socket Mode: only Slack writes to the socket, but an envelope for another app or
        workspace, or an interaction far from now, is refused (acked, never acted on) - HTTP
        mode gets the same assurance from the signing secret and its timestamp."""
        problem = await self._envelope_problem(body if isinstance(body, dict) else {})
        if problem is None:
            return await next()
        log.warning("Socket Mode envelope refused: %s", problem)
        return BoltResponse(status=200, body="")

    async def _envelope_problem(self, body: dict) -> str | None:
        if self.team_id is None:
            try:
                await self._learn_identity()
            except Exception as e:  # noqa: BLE001 - unknown workspace: refuse, and ask again next time
                return f"this app's workspace is not known yet (auth.test failed: {e.__class__.__name__})"
        if self.app_id is None:
            return "this app's id is not known yet (no hello on the socket)"
        app = body.get("api_app_id")
        if app != self.app_id:
            return f"it is for app {app!r}, not this one ({self.app_id})"
        team = body.get("team_id")
        if team is None and isinstance(body.get("team"), dict):
            team = body["team"].get("id")
        if team != self.team_id:
            return f"it is for workspace {team!r}, not this one ({self.team_id})"
        stamps = [a.get("action_ts") for a in body.get("actions") or [] if isinstance(a, dict)]
        if "event_time" in body:
            stamps.append(body.get("event_time"))
        now = time.time()
        for stamp in stamps:
            try:
                at = float(stamp)
            except (TypeError, ValueError):
                return "its timestamp is not a number"
            if not math.isfinite(at) or abs(now - at) > MAX_PAYLOAD_AGE_S:
                return f"it is {int(now - at) if math.isfinite(at) else '?'} s away from now (at most {MAX_PAYLOAD_AGE_S})"
        return None

    async def _learn_identity(self) -> None:
        """The workspace of the bot token (auth.test's ``team_id``)."""
        team = (await self.api.call("auth_test")).get("team_id")
        self.team_id = team if isinstance(team, str) and team else None

    async def _on_socket_message(self, client, message: dict, raw: str | None = None) -> None:
        """The app id of the app token, from the socket's ``hello`` (``connection_info.app_id``)."""
        if isinstance(message, dict) and message.get("type") == "hello":
            app_id = (message.get("connection_info") or {}).get("app_id")
            if isinstance(app_id, str) and app_id:
                self.app_id = app_id

    async def _check_token(self) -> None:
        try:
            await self._learn_identity()
        except SlackApiError as e:
            error = (getattr(e, "response", None) or {}).get("error", "")
            if error in BAD_TOKEN_ERRORS:
                raise ConfigError(f"SLACK_BOT_TOKEN was refused by Slack ({error})") from None
            log.warning("Slack auth.test failed (%s); starting anyway, Slack calls will be retried", error or e)
        except Exception as e:  # noqa: BLE001 - Slack unreachable: the outbox retries later
            log.warning("Slack is unreachable (%s); starting anyway, Slack calls will be retried", e.__class__.__name__)

    async def _check_app_token(self) -> None:
        """Socket Mode: ask Slack for a connection URL with the app token now, so a wrong one
        refuses start-up like a wrong bot token (the SDK would retry it forever)."""
        try:
            await self.api.call("apps_connections_open", app_token=self.slack.app_token.reveal())
        except SlackApiError as e:
            error = (getattr(e, "response", None) or {}).get("error", "")
            if error in BAD_TOKEN_ERRORS:
                raise ConfigError(f"SLACK_APP_TOKEN was refused by Slack ({error}); Socket Mode cannot connect "
                                  "(an app-level token with connections:write)") from None
            log.warning("Slack apps.connections.open failed (%s); starting anyway, the connection will be retried",
                        error or e)
        except Exception as e:  # noqa: BLE001 - Slack unreachable: the socket client retries
            log.warning("Slack is unreachable (%s); starting anyway, Socket Mode will keep trying",
                        e.__class__.__name__)

    def _watch_app_token(self, client) -> None:
        """Follow what Slack says of the app token at every (re)connection: refused or accepted,
        said once in the log per change and kept for /readyz."""
        issue = client.issue_new_wss_url

        async def issue_watched() -> str:
            try:
                resp = await client.web_client.apps_connections_open(app_token=client.app_token)
            except SlackApiError as e:
                error = (getattr(e, "response", None) or {}).get("error", "")
                if error == "ratelimited":
                    return await issue()  # the SDK's own wait-and-retry
                if error in BAD_TOKEN_ERRORS:
                    self._app_token_state(f"Slack refuses SLACK_APP_TOKEN ({error})")
                raise
            self._app_token_state(None)
            return resp["url"]

        client.issue_new_wss_url = issue_watched

    def _app_token_state(self, problem: str | None) -> None:
        if problem == self.app_token_problem:
            return
        if problem:
            log.error("%s: Socket Mode receives nothing (no clicks, no commands) until the token is fixed; "
                      "retrying quietly", problem)
        else:
            log.warning("Slack accepts SLACK_APP_TOKEN again; Socket Mode reconnects")
        self.app_token_problem = problem

    async def _verified_email(self, user_id: str) -> str | None:
        """The user's e-mail if Slack confirmed it for a full member of this workspace (see
        :mod:`bot.slack.people`; only with JITGATE_EMAIL_BINDING on); None, logged, otherwise."""
        if self.team_id is None:  # auth.test did not answer at start: ask again, briefly
            try:
                team = (await self._usergroup_api.call("auth_test")).get("team_id")
                self.team_id = team if isinstance(team, str) and team else None
            except Exception:  # noqa: BLE001 - no workspace known, no e-mail binding (bindable_email refuses)
                log.warning("auth.test failed; not binding %s by e-mail", user_id)
        try:
            resp = await self.api.call("users_info", user=user_id)
        except Exception:  # noqa: BLE001 - no e-mail, no binding
            log.warning("users.info failed for %s; not binding by e-mail", user_id)
            return None
        address, why = bindable_email(resp.get("user"), self.team_id)
        if address is None:
            log.warning("not binding Slack user %s by e-mail: %s", user_id, why)
        return address


class _WhileRefused(logging.Filter):
    """Drops the Socket Mode client's per-retry error and traceback while the app token is
    refused: the desk has said so once, and says so again when it changes."""

    _RETRY = ("Failed to retrieve WSS URL", "Failed to connect", "Failed to check the current session",
              "Failed to receive or enqueue a message")

    def __init__(self, desk: SlackDesk) -> None:
        super().__init__()
        self._desk = desk

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self._desk.app_token_problem and str(record.msg).startswith(self._RETRY))


def desk_from_settings(settings) -> SlackDesk | None:
    """The Slack desk when Slack is configured, None when it is off; ConfigError (naming
    the setting) when it is half-configured (:meth:`SlackSettings.check`)."""
    slack = SlackSettings.from_env(settings.env)
    return SlackDesk(settings, slack=slack) if slack.check() else None
