"""The kill switch in chat (Slack's ``/jit revoke …``, the Teams bot's ``revoke …``): the
first command shows what would end and keeps a one-time code; ``revoke confirm CODE`` by the
same person, within ``CONFIRM_TTL_S``, pulls it (:meth:`broker.lifecycle.Lifecycle.kill_switch`,
which decides who may). A code is taken once, atomically, and only by the platform user it
was shown to; someone else's attempt neither uses nor spends it.

Records live in Redis under the desk's key prefix: ``{prefix}{desk}:ks-confirm:{code}``.
"""

from __future__ import annotations

import re
import secrets

from broker.errors import Conflict, NotApprover
from broker.killswitch import Selector
from broker.lifecycle import Lifecycle

from bot.commands import ConfirmArgs, KillArgs

CONFIRM_TTL_S = 600
CODE = re.compile(r"^[A-Z2-7]{10}$")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # no 0/1/8/9: nothing to misread when typed

_TAKE_LUA = """
local who = redis.call('HGET', KEYS[1], 'user')
if not who then return {'missing'} end
if who ~= ARGV[1] then return {'other'} end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return {'ok', all}
"""


class KillConfirmations:
    """One desk's pending kill-switch confirmations (Redis hashes with a TTL)."""

    def __init__(self, redis, prefix: str, desk: str) -> None:
        self.redis = redis
        self.p = f"{prefix}{desk}:ks-confirm:"
        self._take = redis.register_script(_TAKE_LUA)

    async def remember(self, *, user: str, approver: str, args: KillArgs) -> str:
        """Keep what the code will pull and for whom; returns the code."""
        code = "".join(secrets.choice(_ALPHABET) for _ in range(10))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.p + code, mapping={"user": user, "approver": approver, "scope": args.scope,
                                              "value": args.value, "reason": args.reason})
            pipe.expire(self.p + code, CONFIRM_TTL_S)
            await pipe.execute()
        return code

    async def take(self, code: str, user: str) -> dict | None:
        """The record, removed, when ``code`` is ``user``'s and still valid; else None."""
        code = code.strip().upper()
        if not CODE.match(code):
            return None
        raw = await self._take(keys=[self.p + code], args=[user])
        verdict = raw[0].decode() if isinstance(raw[0], bytes) else raw[0]
        if verdict != "ok":
            return None
        flat = [v.decode() if isinstance(v, bytes) else v for v in raw[1]]
        return dict(zip(flat[::2], flat[1::2]))


def confirmations(life: Lifecycle, desk: str) -> KillConfirmations:
    """The desk's confirmations, in the broker's Redis under its key prefix."""
    return KillConfirmations(life.store.redis, life.settings.redis_prefix, desk)


async def ask(life: Lifecycle, approver, user: str, desk: str, args: KillArgs) -> tuple[str, str]:
    """(what would happen, the code to confirm it): the core checks the caller may pull the
    switch and counts what it would end; nothing changes yet."""
    selector = Selector.of(args.scope, args.value)
    pending, grants = await life.kill_switch_preview(selector, approver)
    code = await confirmations(life, desk).remember(user=user, approver=approver.id, args=args)
    return (f"The kill switch ({selector.describe()}) would revoke {grants} grant(s) and deny {pending} pending "
            f"request(s) now, with the reason: {args.reason}"), code


async def confirm(life: Lifecycle, approver, user: str, desk: str, args: ConfirmArgs) -> str:
    """Pull the switch a code was shown for: only the person it was shown to, still bound to
    the same approver; the core checks again that they may. Returns the summary."""
    record = await confirmations(life, desk).take(args.code, user)
    if record is None:
        raise Conflict("no such confirmation code for you (used, expired after 10 minutes, or never issued); "
                       "nothing was revoked. Run the revoke command again")
    if record.get("approver") != approver.id:
        raise NotApprover("this code was shown to another approver; nothing was revoked")
    result = await life.kill_switch(Selector.of(record["scope"], record.get("value") or None), approver,
                                    reason=record["reason"], channel=desk, platform_user=user)
    return result.summary()
