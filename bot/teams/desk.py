"""The Microsoft Teams approval desk: ``POST /api/messages``, the notifier, its lifetime.

The broker serves Starlette, so the route translates: Starlette request → botbuilder
``Activity`` + ``Authorization`` header → ``authenticate_request`` (botbuilder's token
validation) → ``CloudAdapter.process_activity`` → HTTP response. Card actions (invokes)
are answered in the response, within Teams' 5 seconds; every other activity is accepted
at once (202) and handled in the background, as Bot Framework recommends.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity, ActivityTypes
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker.bodies import read_body
from broker.config import Settings
from broker.errors import BrokerError
from broker.model import PENDING
from broker.notify import DeskContext

from . import cards
from .auth import BotConfig, MetadataWarmer, MsalCredentialsFactory, build_authentication, login_authority
from .breakglass import BreakGlassActions
from .handler import TurnHandler
from .notifier import TeamsNotifier
from .outbound import Outbound
from .parts import Parts
from .settings import TeamsSettings

log = logging.getLogger("jitgate.teams")

FLUSH_INTERVAL_S = 30.0
STOP_GRACE_S = 5.0
MAX_BACKGROUND = 256  # activities being handled at once; beyond that Teams is asked to retry


class TeamsDesk:
    """Teams as an approval desk (see ``bot.teams`` for how it is configured)."""

    name = "teams"

    def __init__(self, settings: Settings, teams: TeamsSettings | None = None, *, credentials_factory=None) -> None:
        self.settings = settings  # the core's
        self.teams = teams = teams or TeamsSettings.from_env(settings.env)  # the desk's own
        self.credentials_factory = credentials_factory or MsalCredentialsFactory(
            teams.app_id, teams.app_password, login_authority(teams), custom_authority=bool(teams.login_url))
        self.authentication = build_authentication(teams, self.credentials_factory)
        self.adapter = CloudAdapter(self.authentication)
        self.outbound = Outbound(self.authentication, self.credentials_factory, teams.app_id)
        # Each part gets its collaborators, never the desk.
        self.parts = Parts(settings, teams, self.outbound, spawn=self.spawn, flush_soon=self.flush_soon)
        self.notifier = TeamsNotifier(self.parts)
        self.parts.alerts = self.notifier.bg
        self.bg_actions = BreakGlassActions(self.parts)
        self.handler = TurnHandler(self.parts, self.bg_actions)
        self.warmer = MetadataWarmer(BotConfig(teams).TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL)
        self._tasks: set[asyncio.Task] = set()
        self._flusher: asyncio.Task | None = None
        self._flush_now = asyncio.Event()
        self._flush_lock = asyncio.Lock()  # one flush pass at a time in this process (replicas: a Redis lock per post)
        self._stopping = False

    # ------------------------------------------------------------------ desk port
    def routes(self) -> list:
        return [Route("/api/messages", self.endpoint, methods=["POST"])]

    async def start(self, ctx: DeskContext) -> None:
        self.parts.start(ctx)
        await self.warmer.start()
        state = await self.readiness()
        if not state["ready"]:
            log.warning("Teams: %s", state["detail"])
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def stop(self) -> None:
        self._stopping = True
        self._flush_now.set()  # wakes the flush loop, which then ends (a cancel alone can be swallowed by wait_for)
        if self._flusher:
            self._flusher.cancel()
            await asyncio.wait({self._flusher}, timeout=STOP_GRACE_S)
            self._flusher = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_S)
            for t in list(self._tasks):
                t.cancel()
        await self.warmer.stop()
        await self.outbound.close()

    async def readiness(self) -> dict:
        """Whether approvers will see proposals here, for ``/readyz`` and the start-up log.
        Not being ready never fails the broker's readiness: the bot must keep receiving
        activities to learn the conversation it is missing."""
        where = self.teams.approvals_conversation
        ref = await self.conversations.resolve(where) if where else None
        held = await self.conversations.held_count()
        problems = []
        if not where:
            problems.append("TEAMS_APPROVALS_CONVERSATION is unset: proposals go only to channels named by a policy's "
                            "@channel")
        elif ref is None:
            problems.append(f"no conversation reference for TEAMS_APPROVALS_CONVERSATION={where!r} yet: install the "
                            "jitgate app there (or @mention the bot there once); proposals wait and are posted then")
        if self.warmer.last_error:
            problems.append(f"the Bot Framework signing keys could not be fetched ({self.warmer.last_error})")
        return {"ready": not problems, "approvals_conversation": ref.label() if ref else None,
                "held_proposals": held, "detail": "; ".join(problems) or "ok"}

    @property
    def conversations(self):
        return self.parts.conversations

    @property
    def confirmations(self):
        return self.parts.confirmations

    @property
    def card(self):
        """The proposal card now (see :meth:`Parts.card`)."""
        return self.parts.card

    # ------------------------------------------------------------------ HTTP
    async def endpoint(self, request: HttpRequest) -> Response:
        """``POST /api/messages``: authenticate with botbuilder, then run the turn."""
        if not self.parts.started:
            return _error(503, "the Teams desk is not started")
        if "application/json" not in request.headers.get("content-type", ""):
            return _error(415, "activities are JSON")
        try:
            body = await read_body(request, self.settings.max_body_bytes)
        except BrokerError:  # too large, or a malformed Content-Length
            return _error(413, "activity too large")
        auth_header = request.headers.get("authorization")
        if not auth_header:
            return _error(401, "a Bot Framework token is required")
        try:
            data = orjson.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            activity = Activity.deserialize(data)
        except Exception:  # noqa: BLE001 - any malformed activity is a 400
            return _error(400, "not a Bot Framework activity")
        if not activity.type:
            return _error(400, "not a Bot Framework activity")
        try:
            auth = await self.authentication.authenticate_request(activity, auth_header)
        except Exception as e:  # noqa: BLE001 - botbuilder raises several kinds; all mean "not verified"
            log.info("Teams: refused an activity: %s: %s", e.__class__.__name__, str(e)[:120])
            return _error(401, "the Bot Framework token did not validate")
        if activity.channel_id != "msteams":
            return _error(403, "this bot serves Microsoft Teams only")
        if activity.type == ActivityTypes.invoke:
            try:
                res = await self.adapter.process_activity(auth, activity, self.handler.on_turn)
            except Exception:  # noqa: BLE001 - never a stack trace to Teams
                log.exception("Teams: invoke %s failed", activity.name)
                return JSONResponse(cards.error_response(500, "InternalError", "jitgate could not handle this action"))
            if res is None:
                return Response(status_code=200)
            return Response(orjson.dumps(res.body) if res.body is not None else b"", status_code=int(res.status),
                            media_type="application/json")
        if len(self._tasks) >= MAX_BACKGROUND:
            return _error(503, "busy; retry")
        self.spawn(self._process(auth, activity))
        return Response(status_code=202)

    async def _process(self, auth, activity: Activity) -> None:
        try:
            await self.adapter.process_activity(auth, activity, self.handler.on_turn)
        except Exception:  # noqa: BLE001 - logged; Teams already has its 202
            log.exception("Teams: handling a %s activity failed", activity.type)

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until activities accepted so far were handled (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._tasks:
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError("Teams activities still being handled")
            await asyncio.wait(set(self._tasks), timeout=left)

    # ------------------------------------------------------------------ held proposals
    def flush_soon(self) -> None:
        """Post held proposals now (a conversation just became known)."""
        self._flush_now.set()

    async def flush_held(self) -> int:
        """Post proposals that could not be posted before; returns how many were posted."""
        async with self._flush_lock:
            return await self._flush_pass()

    async def _flush_pass(self) -> int:
        posted = 0
        life = self.parts.ctx.lifecycle
        for rid in await self.conversations.held():
            req = await self.parts.ctx.store.load(rid)
            if req is None or req.status != PENDING or any(m.get("transport") == self.name for m in req.messages):
                await self.conversations.release(rid)
                continue
            if await self.parts.destination(req) is None:
                continue
            try:
                await life.deliver("proposed", rid)  # the core posts and stores the message refs
            except Exception:  # noqa: BLE001 - stays held; tried again on the next flush
                log.warning("Teams: held request %s still could not be posted", rid, exc_info=True)
                continue
            posted += 1
        return posted

    async def _flush_loop(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._flush_now.wait(), timeout=FLUSH_INTERVAL_S)
            except asyncio.TimeoutError:
                pass
            if self._stopping:
                return
            self._flush_now.clear()
            try:
                if await self.conversations.held_count():
                    await self.flush_held()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis away: next round
                log.warning("Teams: flushing held proposals failed", exc_info=True)


def _error(status: int, detail: str) -> Response:
    return JSONResponse({"error": detail}, status_code=status)
