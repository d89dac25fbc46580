"""What the Teams desk's turn handler, notifier and break-glass actions are given when the
desk builds them (never the desk, so nothing in ``bot.teams`` but the package imports
``desk.py``): its context, conversations, binding, confirmations, the Bot Connector, and
where and to whom a card goes."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from broker import rules
from broker.config import Settings
from broker.directory import Approver
from broker.errors import NotApprover
from broker.model import PENDING, Request
from broker.notify import DeskContext

from bot.approvers import Binder
from bot.kit.confirmations import Confirmations

from . import cards
from .conversations import ConversationRef, Conversations, NoPersonalChat
from .outbound import Outbound
from .settings import TeamsSettings

log = logging.getLogger("jitgate.teams")


class Parts:
    """The Teams desk's collaborators, handed to each part at construction."""

    def __init__(self, settings: Settings, teams: TeamsSettings, outbound: Outbound, *, spawn: Callable[[Awaitable], object],
                 flush_soon: Callable[[], None]) -> None:
        self.settings = settings  # the core's
        self.teams = teams  # the desk's own
        self.outbound = outbound
        self.spawn = spawn  # run in the background, awaited on stop
        self.flush_soon = flush_soon  # post held proposals now (a conversation just became known)
        self.alerts: Any = None  # the notifier's SecurityAlerts (bot.teams.bgalerts), set by the desk
        self._ctx: DeskContext | None = None
        self.conversations: Conversations | None = None
        self.binder: Binder | None = None
        self.confirmations: Confirmations | None = None

    def start(self, ctx: DeskContext) -> None:
        """Fill in what exists only once the broker is built."""
        self._ctx = ctx
        self.conversations = Conversations(ctx.keys.redis, ctx.keys.prefix)
        self.confirmations = Confirmations(ctx.keys.redis, ctx.keys.prefix, "teams")
        self.binder = Binder(ctx.directory, email_binding=self.settings.email_binding,
                             teams_tenant=self.teams.tenant_id)

    @property
    def started(self) -> bool:
        return self._ctx is not None

    @property
    def ctx(self) -> DeskContext:
        if self._ctx is None:
            raise RuntimeError("the Teams desk has not been started")
        return self._ctx

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
        where = self.teams.approvals_conversation
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
        tenant_id = tenant_id or self.teams.tenant_id
        user_id = user_id or (await conv.user_ids([aad_object_id])).get(aad_object_id) or aad_object_id
        cid = await self.outbound.create_personal(service_url, bot_id=bot_id, user_id=user_id, tenant_id=tenant_id)
        ref = ConversationRef(id=cid, service_url=service_url, tenant_id=tenant_id, kind="personal", bot_id=bot_id)
        await conv.save(ref)
        await conv.remember_personal(aad_object_id, cid)
        return ref

    async def _any_conversation(self) -> ConversationRef | None:
        """A conversation of this tenant the bot knows: the approvals one first."""
        where = self.teams.approvals_conversation
        ref = await self.conversations.resolve(where) if where else None
        if ref is not None:
            return ref
        tenant = self.teams.tenant_id
        mine = [r for r in await self.conversations.all() if r.tenant_id == tenant and r.service_url]
        mine.sort(key=lambda r: -r.updated_at)
        return mine[0] if mine else None

    def where_wanted(self, req: Request) -> str:
        wanted = req.decision.get("channel")
        default = self.teams.approvals_conversation or "TEAMS_APPROVALS_CONVERSATION unset"
        return f"policy channel {wanted!r}, else {default}" if wanted else default

    def eligible(self, req: Request, *, groups: list[str] | None = None) -> list[Approver]:
        """Who may still decide ``req`` (the core's rule, ``Lifecycle.deciders``), in ``groups`` if given."""
        return self.ctx.lifecycle.deciders(req, groups=groups)

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
            why = _why_not(self.ctx.lifecycle, viewer, req)
            if why:
                actions = False
                notice = notice or why
        return cards.proposal_card(req, max_duration_s=self.settings.max_duration_s, refresh_user_ids=user_ids,
                                   actions=actions, notice=notice)



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
    uncounted = rules.why_not_counted(viewer, req)  # a mixed quorum whose groups of theirs are full
    if uncounted is not None:
        return f"You cannot approve this request: {uncounted}"
    return None
