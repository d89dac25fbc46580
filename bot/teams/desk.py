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

from broker import rules
from broker.bodies import read_body
from broker.config import Settings
from broker.directory import Approver
from broker.errors import BrokerError, NotApprover
from broker.model import PENDING, Request

from bot.approvers import Binder
from bot.kit.confirmations import Confirmations

from . import cards
from .auth import BotConfig, MetadataWarmer, MsalCredentialsFactory, build_authentication, login_authority
from .breakglass import BreakGlassActions
from .conversations import ConversationRef, Conversations, NoPersonalChat
from .handler import TurnHandler
from .notifier import TeamsNotifier
from .outbound import Outbound

log = logging.getLogger("jitgate.teams")

FLUSH_INTERVAL_S = 30.0
STOP_GRACE_S = 5.0
MAX_BACKGROUND = 256  # activities being handled at once; beyond that Teams is asked to retry


class TeamsDesk:
    """Teams as an approval desk (see ``bot.teams`` for how it is configured)."""

    name = "teams"

    def __init__(self, settings: Settings, *, credentials_factory=None) -> None:
        self.settings = settings
        self.credentials_factory = credentials_factory or MsalCredentialsFactory(
            settings.microsoft_app_id, settings.microsoft_app_password, login_authority(settings),
            custom_authority=bool(settings.teams_login_url))
        self.authentication = build_authentication(settings, self.credentials_factory)
        self.adapter = CloudAdapter(self.authentication)
        self.outbound = Outbound(self.authentication, self.credentials_factory, settings.microsoft_app_id)
        self.notifier = TeamsNotifier(self)
        self.handler = TurnHandler(self)
        self.bg_actions = BreakGlassActions(self)
        self.warmer = MetadataWarmer(BotConfig(settings).TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL)
        self.broker = None
        self.conversations: Conversations | None = None
        self.binder: Binder | None = None
        self.confirmations: Confirmations | None = None
        self._tasks: set[asyncio.Task] = set()
        self._flusher: asyncio.Task | None = None
        self._flush_now = asyncio.Event()
        self._flush_lock = asyncio.Lock()  # one flush pass at a time in this process (replicas: a Redis lock per post)
        self._stopping = False

    # ------------------------------------------------------------------ desk port
    def routes(self) -> list:
        return [Route("/api/messages", self.endpoint, methods=["POST"])]

    async def start(self, broker) -> None:
        self.broker = broker
        self.conversations = Conversations(broker.redis, self.settings.redis_prefix)
        self.confirmations = Confirmations(broker.redis, self.settings.redis_prefix, "teams")
        self.binder = Binder(broker.directory, email_binding=self.settings.email_binding,
                             teams_tenant=self.settings.microsoft_app_tenant_id)
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
        where = self.settings.teams_approvals_conversation
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

    # ------------------------------------------------------------------ HTTP
    async def endpoint(self, request: HttpRequest) -> Response:
        """``POST /api/messages``: authenticate with botbuilder, then run the turn."""
        if self.broker is None:
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

    # ------------------------------------------------------------------ where and to whom
    async def destination(self, req: Request) -> ConversationRef | None:
        """Where a request's card goes: the policy's ``@channel`` if the bot knows it, else
        ``TEAMS_APPROVALS_CONVERSATION``."""
        wanted = req.decision.get("channel")
        if wanted:
            ref = await self.conversations.resolve(wanted)
            if ref is not None:
                return ref
            log.warning("Teams: policy channel %r of request %s is not known to the bot; using "
                        "TEAMS_APPROVALS_CONVERSATION", wanted, req.id)
        where = self.settings.teams_approvals_conversation
        return await self.conversations.resolve(where) if where else None

    async def personal_chat(self, aad_object_id: str, *, service_url: str | None = None, user_id: str | None = None,
                            tenant_id: str | None = None, bot_id: str | None = None) -> ConversationRef:
        """This person's 1:1 chat with the bot: the one the bot knows, else a new one it opens
        (``POST /v3/conversations``; Teams returns the existing chat when there is one, and
        allows it where the app is installed for that person or in one of their teams).

        ``user_id`` is their Teams id (``29:…``; else the one seen for them, else the Entra
        object id, which Teams also accepts); ``service_url`` where to ask (else that of the
        approvals conversation, else of any conversation the bot knows). Raises
        :class:`NoPersonalChat` when there is nothing to open it with; an error of the Bot
        Connector goes up as it is (the caller decides whether to retry)."""
        conv = self.conversations
        known = await conv.personal(aad_object_id)
        if known is not None:
            return known
        via = await self._any_conversation() if not service_url or not bot_id else None
        service_url = service_url or (via.service_url if via else None)
        if not service_url:
            raise NoPersonalChat("the bot knows no Bot Connector endpoint yet (it is installed nowhere)")
        bot_id = bot_id or (via.bot_id if via else None)
        tenant_id = tenant_id or self.settings.microsoft_app_tenant_id
        user_id = user_id or (await conv.user_ids([aad_object_id])).get(aad_object_id) or aad_object_id
        cid = await self.outbound.create_personal(service_url, bot_id=bot_id, user_id=user_id, tenant_id=tenant_id)
        ref = ConversationRef(id=cid, service_url=service_url, tenant_id=tenant_id, kind="personal", bot_id=bot_id)
        await conv.save(ref)
        await conv.remember_personal(aad_object_id, cid)
        return ref

    async def _any_conversation(self) -> ConversationRef | None:
        """A conversation of this tenant the bot knows: the approvals one first."""
        where = self.settings.teams_approvals_conversation
        ref = await self.conversations.resolve(where) if where else None
        if ref is not None:
            return ref
        tenant = self.settings.microsoft_app_tenant_id
        mine = [r for r in await self.conversations.all() if r.tenant_id == tenant and r.service_url]
        mine.sort(key=lambda r: -r.updated_at)
        return mine[0] if mine else None

    def where_wanted(self, req: Request) -> str:
        wanted = req.decision.get("channel")
        default = self.settings.teams_approvals_conversation or "TEAMS_APPROVALS_CONVERSATION unset"
        return f"policy channel {wanted!r}, else {default}" if wanted else default

    def eligible(self, req: Request, *, groups: list[str] | None = None) -> list[Approver]:
        """Who may still decide ``req`` (the core's rule, ``Lifecycle.deciders``), in ``groups`` if given."""
        return self.broker.lifecycle.deciders(req, groups=groups)

    async def mentions(self, people: list[Approver]) -> list[tuple[str, str]]:
        """(name, Teams id) pairs to @mention; the Entra object id where no 29: id is known."""
        bound = [a for a in people if a.teams]
        known = await self.conversations.user_ids([a.teams for a in bound])
        return [(a.id, known.get(a.teams, a.teams)) for a in bound]

    async def card(self, req: Request, *, viewer: Approver | None = None, viewer_known: bool = False,
                   notice: str | None = None) -> dict:
        """The proposal card now; with ``viewer_known``, as one person should see it
        (buttons only if they may still decide, and a line saying why not)."""
        user_ids: list[str] = []
        if req.status == PENDING:
            people = self.eligible(req)
            known = await self.conversations.user_ids([a.teams for a in people if a.teams])
            user_ids = list(known.values())
        actions = True
        if viewer_known and req.status == PENDING:
            why = _why_not(self.broker.lifecycle, viewer, req)
            if why:
                actions = False
                notice = notice or why
        return cards.proposal_card(req, max_duration_s=self.settings.max_duration_s, refresh_user_ids=user_ids,
                                   actions=actions, notice=notice)

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
        life = self.broker.lifecycle
        for rid in await self.conversations.held():
            req = await self.broker.store.load(rid)
            if req is None or req.status != PENDING or any(m.get("transport") == self.name for m in req.messages):
                await self.conversations.release(rid)
                continue
            if await self.destination(req) is None:
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


def _why_not(life, viewer: Approver | None, req: Request) -> str | None:
    """Why ``viewer`` cannot decide ``req`` now (None: they can)."""
    if viewer is None:
        return "Your Teams account is not bound to a jitgate approver, so you cannot decide this request."
    if rules.already_approved(viewer, req):
        return "You approved this request; it is waiting for the others."
    try:
        life.check_approver(viewer, req)
    except NotApprover as e:
        return f"You cannot decide this request: {e.detail}"
    return None


def _error(status: int, detail: str) -> Response:
    return JSONResponse({"error": detail}, status_code=status)
