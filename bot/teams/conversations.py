"""Where the bot may post: Teams conversation references kept in Redis.

A bot can only post proactively into a conversation it has been told about: the Bot
Connector's ``serviceUrl`` for it comes with an activity. So every verified activity
(installation, conversation update, message, card action) refreshes the reference of its
conversation, under the broker's key prefix so every replica shares them. Team channels
also get their names, so a policy's ``@channel("#prod-access")`` can be resolved.

Also kept here: the Teams user id (``29:…``) seen for each Entra object id (for card
``refresh.userIds`` and mentions), each person's 1:1 chat with the bot (where a
break-glass token for ``me`` goes), the proposals that could not be posted yet (posted as
soon as a conversation becomes known, so no request is lost), and markers that make the
thread replies idempotent under the outbox's at-least-once delivery.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import orjson

MAX_CONVERSATIONS = 10_000  # resolution reads them all; more is a misconfiguration
REPLY_MARK_TTL_S = 10 * 86400  # longer than any request stays open (7 d) plus collection
LOCK_TTL_MS = 30_000


def base_conversation_id(conversation_id: str) -> str:
    """A channel thread's id without ``;messageid=…`` (the channel itself)."""
    return (conversation_id or "").split(";messageid=", 1)[0]


def channel_key(name: str) -> str:
    """How channel names are compared: without a leading ``#``, case-insensitive."""
    return name.strip().lstrip("#").strip().casefold()


class NoPersonalChat(Exception):
    """The bot cannot reach this person's 1:1 chat (nothing to open it with)."""


@dataclass
class ConversationRef:
    """What the bot needs to post into a conversation, and how people call it."""

    id: str  # conversation id (for a channel: the channel id)
    service_url: str
    tenant_id: str | None = None
    kind: str | None = None  # personal | groupChat | channel
    name: str | None = None  # channel or chat name, when Teams told us
    team_id: str | None = None
    team_name: str | None = None
    bot_id: str | None = None
    updated_at: float = 0.0

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> "ConversationRef":
        d = orjson.loads(raw)
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})

    def label(self) -> str:
        if self.kind == "channel":
            team = f"{self.team_name} › " if self.team_name else ""
            return f"{team}#{self.name or 'channel'}"
        return self.name or self.kind or "conversation"


class Conversations:
    """Conversation references, user ids, unposted proposals and reply markers in Redis."""

    def __init__(self, redis, prefix: str) -> None:
        self.redis = redis
        self.p = prefix + "teams:"
        self.refs_key = self.p + "conversations"
        self.users_key = self.p + "users"
        self.unposted_key = self.p + "unposted"
        self.personal_key = self.p + "personal"

    # ------------------------------------------------------------------ references
    async def save(self, ref: ConversationRef) -> bool:
        """Store or refresh a reference; keeps a known name when the new one has none.
        Returns True when the conversation was not known before."""
        ref.id = base_conversation_id(ref.id)
        raw = await self.redis.hget(self.refs_key, ref.id)
        old = ConversationRef.from_json(raw) if raw else None
        if old is not None:
            ref.name = ref.name or old.name
            ref.team_id = ref.team_id or old.team_id
            ref.team_name = ref.team_name or old.team_name
            ref.kind = ref.kind or old.kind
            ref.tenant_id = ref.tenant_id or old.tenant_id
            ref.bot_id = ref.bot_id or old.bot_id
        elif await self.redis.hlen(self.refs_key) >= MAX_CONVERSATIONS:
            return False
        ref.updated_at = time.time()
        await self.redis.hset(self.refs_key, ref.id, ref.to_json())
        return old is None

    async def get(self, conversation_id: str) -> ConversationRef | None:
        raw = await self.redis.hget(self.refs_key, base_conversation_id(conversation_id))
        return ConversationRef.from_json(raw) if raw else None

    async def forget(self, conversation_id: str) -> None:
        await self.redis.hdel(self.refs_key, base_conversation_id(conversation_id))

    async def forget_team(self, team_id: str) -> None:
        """The bot was removed from a team: drop the team's channels."""
        for ref in await self.all():
            if ref.team_id == team_id:
                await self.forget(ref.id)

    async def all(self) -> list[ConversationRef]:
        raw = await self.redis.hgetall(self.refs_key)
        return [ConversationRef.from_json(v) for v in list(raw.values())[:MAX_CONVERSATIONS]]

    async def resolve(self, name_or_id: str) -> ConversationRef | None:
        """A conversation by id, or a team channel (or named chat) by ``#name``."""
        if not name_or_id:
            return None
        found = await self.get(name_or_id)
        if found is not None:
            return found
        want = channel_key(name_or_id)
        if not want:
            return None
        matches = [r for r in await self.all() if r.name and channel_key(r.name) == want]
        # Prefer channels, then the most recently confirmed; deterministic either way.
        matches.sort(key=lambda r: (r.kind != "channel", -r.updated_at, r.id))
        return matches[0] if matches else None

    # ------------------------------------------------------------------ users
    async def remember_user(self, aad_object_id: str | None, teams_user_id: str | None) -> None:
        if aad_object_id and teams_user_id:
            await self.redis.hset(self.users_key, aad_object_id, teams_user_id)

    async def user_ids(self, aad_object_ids: list[str]) -> dict[str, str]:
        """The Teams user ids (``29:…``) known for these Entra object ids."""
        if not aad_object_ids:
            return {}
        values = await self.redis.hmget(self.users_key, aad_object_ids)
        return {a: v.decode() for a, v in zip(aad_object_ids, values) if v}

    async def remember_personal(self, aad_object_id: str | None, conversation_id: str | None) -> None:
        """The 1:1 chat between the bot and this person (learnt from a verified activity in it)."""
        if aad_object_id and conversation_id:
            await self.redis.hset(self.personal_key, aad_object_id, base_conversation_id(conversation_id))

    async def personal(self, aad_object_id: str) -> ConversationRef | None:
        """The reference of this person's 1:1 chat with the bot, if the bot knows it."""
        conv = await self.redis.hget(self.personal_key, aad_object_id)
        ref = await self.get(conv.decode()) if conv else None
        return ref if ref is not None and ref.kind == "personal" else None

    # ------------------------------------------------------------------ unposted proposals
    async def hold(self, request_id: str) -> None:
        """Remember a proposal that could not be posted (no conversation yet, or Teams down)."""
        await self.redis.zadd(self.unposted_key, {request_id: time.time()}, nx=True)

    async def held(self, limit: int = 200) -> list[str]:
        return [r.decode() for r in await self.redis.zrange(self.unposted_key, 0, limit - 1)]

    async def release(self, request_id: str) -> None:
        await self.redis.zrem(self.unposted_key, request_id)

    async def held_count(self) -> int:
        return int(await self.redis.zcard(self.unposted_key))

    async def lock(self, name: str) -> bool:
        """A short lock (e.g. one poster per request across replicas)."""
        return bool(await self.redis.set(self.p + "lock:" + name, b"1", nx=True, px=LOCK_TTL_MS))

    async def unlock(self, name: str) -> None:
        await self.redis.delete(self.p + "lock:" + name)

    # ------------------------------------------------------------------ idempotent replies
    def reply_mark(self, mark: str) -> str:
        """The Redis key of one say-once marker (see :mod:`bot.kit.once`; kept ``REPLY_MARK_TTL_S``)."""
        return self.p + "replied:" + mark
