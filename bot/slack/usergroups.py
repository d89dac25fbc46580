"""Who is in a Slack user group now: ``usergroups.users.list``, cached briefly in Redis.

The approvers file may bind a Slack user group to jitgate groups; membership is Slack's
to say, so it is asked when someone acts, not copied into the file. The answer is kept in
Redis for ``ttl_s`` (one minute by default, shared by every replica; the method is in
Slack's Tier 2, about 20 calls a minute) so a person removed from the user group loses
the right within that time. A failure is never cached and never guessed around: whoever
depends on the group for their rights is refused until Slack answers (fail closed).
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from slack_sdk.errors import SlackApiError

from broker.directory import SlackGroupBinding

from bot.approvers import UserGroupUnavailable

from .api import SlackApi

log = logging.getLogger("jitgate.slack")

TTL_S = 60.0


class UserGroups:
    """Slack user group membership, asked of Slack and cached for ``ttl_s`` seconds."""

    def __init__(self, api: SlackApi, redis, *, prefix: str, clock, ttl_s: float = TTL_S) -> None:
        self.api = api
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self.ttl_s = ttl_s

    async def members(self, usergroup: str) -> frozenset[str]:
        """The Slack user ids in ``usergroup`` now (at most ``ttl_s`` old); raises :class:`UserGroupUnavailable`."""
        key = f"{self.prefix}slack:usergroup:{usergroup}"
        raw = await self.redis.get(key) if self.ttl_s > 0 else None
        if raw:
            cached = orjson.loads(raw)
            if 0 <= self.clock.now() - cached["at"] < self.ttl_s:
                return frozenset(cached["users"])
        try:
            resp = await self.api.call("usergroups_users_list", usergroup=usergroup, include_disabled=False)
        except SlackApiError as e:
            raise UserGroupUnavailable(usergroup, str((e.response or {}).get("error") or "error")) from None
        except Exception as e:  # noqa: BLE001 - unreachable, timed out: no answer is no right
            raise UserGroupUnavailable(usergroup, e.__class__.__name__) from None
        users = [u for u in resp.get("users") or [] if isinstance(u, str)]
        if self.ttl_s > 0:
            value = orjson.dumps({"at": self.clock.now(), "users": users})
            await self.redis.set(key, value, px=max(1, int(self.ttl_s * 1000)))
        return frozenset(users)

    async def groups_of(self, user_id: str, bindings: tuple[SlackGroupBinding, ...]) -> frozenset[str]:
        """The jitgate groups ``user_id`` has through ``bindings`` (every user group is asked)."""
        wanted = list(dict.fromkeys(ug for b in bindings for ug in b.usergroups))
        if not wanted:
            return frozenset()
        answers = await asyncio.gather(*(self.members(ug) for ug in wanted), return_exceptions=True)
        failed = [a for a in answers if isinstance(a, BaseException)]
        for a in failed:
            if not isinstance(a, UserGroupUnavailable):
                raise a
        if failed:
            raise failed[0]
        inside = {ug for ug, users in zip(wanted, answers) if user_id in users}
        return frozenset(g for b in bindings if inside.intersection(b.usergroups) for g in b.groups)
