"""The one-time confirmation records behind break-glass confirmations, for every desk.

A desk shows what a break-glass command would grant (a Slack modal, a Teams card) and
keeps a record here, found through a random nonce the modal or card carries: who typed the
command (platform user id and tenant or workspace), where, the approver it resolved to, the
command's parameters with their digest, and a digest of the preview that was shown. Once the
modal or card is out, the desk attaches its id. On submit a confirmation is honoured only
when all of these hold:

- it exists: a record expires after ``CONFIRM_TTL_S`` and is taken once, in one atomic
  step (a Lua script), so a replay finds nothing;
- it is taken by the person it was shown to (user *and* tenant); anyone else's submission
  neither uses nor spends it;
- it comes from that very modal or card (once attached), and from where it was shown when
  the desk says where the submission came from;
- the parameters are the recorded ones (and equal to any the submission carries);
- the submitter still resolves to the approver it was shown to (:meth:`Confirmations.check`);
- the core's preview, re-run now, still grants exactly what was shown (:func:`recheck`).

Records live in Redis under the desk's key prefix: ``{prefix}{desk}:bg-confirm:{nonce}``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict

import orjson

from broker.breakglass import Preview
from broker.errors import Conflict

CONFIRM_TTL_S = 600  # an unconfirmed modal or card older than this grants nothing: run the command again

NONCE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")

# Take a confirmation once, and only as the person it was shown to (user id and tenant):
# anyone else's submission leaves it in place, so nobody can spend it for the engineer.
_TAKE_LUA = """
local who = redis.call('HMGET', KEYS[1], 'user', 'tenant')
if not who[1] then return {'missing'} end
if who[1] ~= ARGV[1] or who[2] ~= ARGV[2] then return {'other'} end
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return {'ok', all}
"""
_ATTACH_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'card', ARGV[1])
return 1
"""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def preview_digest(pv: Preview) -> str:
    """A digest of everything the confirmation shows."""
    return digest(orjson.dumps(asdict(pv), option=orjson.OPT_SORT_KEYS).decode())


class Confirmations:
    """One desk's one-time confirmation records (Redis hashes with a TTL)."""

    def __init__(self, redis, prefix: str, desk: str) -> None:
        self.redis = redis
        self.p = f"{prefix}{desk}:bg-confirm:"
        self._take = redis.register_script(_TAKE_LUA)
        self._attach = redis.register_script(_ATTACH_LUA)

    async def remember(self, *, user: str, tenant: str | None, where: str | None, engineer: str, params: str,
                       shown: str) -> str:
        """Record what a confirmation may grant and for whom; returns the nonce it carries."""
        nonce = secrets.token_urlsafe(24)
        record = {"user": user, "tenant": tenant or "", "where": where or "", "engineer": engineer,
                  "params": params, "sha256": digest(params), "shown": shown}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.p + nonce, mapping=record)
            pipe.expire(self.p + nonce, CONFIRM_TTL_S)
            await pipe.execute()
        return nonce

    async def attach(self, nonce: str, shown_in: str) -> None:
        """The modal or card is out: only a submission from that very one counts from now on."""
        await self._attach(keys=[self.p + nonce], args=[shown_in])

    async def take(self, nonce: object, user: str, tenant: str | None) -> tuple[str, dict]:
        """('ok', record) removing it; ('other', {}) when it is someone else's (left in place);
        ('missing', {}) when used, cancelled, expired or never issued."""
        if not isinstance(nonce, str) or not NONCE.match(nonce):
            return "missing", {}
        raw = await self._take(keys=[self.p + nonce], args=[user, tenant or ""])
        verdict = raw[0].decode() if isinstance(raw[0], bytes) else raw[0]
        if verdict != "ok":
            return verdict, {}
        flat = [v.decode() if isinstance(v, bytes) else v for v in raw[1]]
        return "ok", dict(zip(flat[::2], flat[1::2]))

    async def drop(self, nonce: str) -> None:
        await self.redis.delete(self.p + nonce)

    @staticmethod
    def matches(record: dict, *, shown_in: str | None, where: str | None = None, params: str | None = None) -> bool:
        """Whether a taken record fits the submission: from the modal or card it was attached to,
        from where it was shown (when the desk knows where the submission came from), with the
        recorded parameters (and those the submission carries, if any)."""
        if record.get("card") and record.get("card") != shown_in:
            return False
        if where is not None and record.get("where") != where:
            return False
        if digest(record.get("params", "")) != record.get("sha256"):
            return False
        return params is None or digest(params) == record.get("sha256")

    @staticmethod
    def same_engineer(record: dict, engineer_id: str | None) -> bool:
        """Whether the submitter resolves now to the approver the confirmation was shown to."""
        return engineer_id is not None and engineer_id == record.get("engineer")


async def recheck(bg, engineer, args, record: dict, *, shown_as: str, again: str) -> Preview:
    """The core's preview re-run now; :class:`Conflict` when it no longer grants exactly what was shown."""
    pv = await bg.preview(engineer, subject=args.subject, action=args.action, target=args.target,
                          duration_s=args.duration_s, reason=args.reason, incident=args.incident)
    if preview_digest(pv) != record.get("shown"):
        raise Conflict(f"what would be granted changed since the {shown_as} was shown (now {pv.duration_s // 60} "
                       "min" + (f", {pv.note}" if pv.note else "") + f"); nothing was granted. {again}")
    return pv
