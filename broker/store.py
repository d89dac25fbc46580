"""Redis keys, Lua scripts and the pub/sub wake-ups: the only code that writes a request or
appends to the audit log (``Lifecycle``, ``BreakGlass`` and ``audit.record`` decide, and
call it; ``audit.trim``, which removes old entries, runs its own script on the same prelude).

Every change to a request is one script call: a compare-and-set on the request's status that
appends its audit events (sequenced; sealed into the Merkle tree later) *before* writing the new state, so a failed
append leaves the request untouched. Keys of one request share the hash tag
``{req:<id>}``. Beside the requests it keeps the schedules (deadlines, reminders, break-glass
reviews), the posture and break-glass suspensions, with plain commands its callers make after
the audit event that records them. Other keys under the prefix hold no request state and
belong to their modules: signing keys (``tokens.py``), the outbox's consumer group, the
scheduler's lease, and the desks' own marks and sessions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable

import orjson
from redis.exceptions import RedisError, ResponseError

from .errors import AuditError, Unavailable
from .model import Request, iso
from .redisline import LuaScript, RedisLine

_LUA_DIR = resources.files("broker") / "lua"


def _lua(name: str) -> str:
    return (_LUA_DIR / name).read_text()


def with_prelude(body: str) -> str:
    """A script body with the shared prelude (audit append, outbox, wake-ups) prepended."""
    return _lua("audit.lua") + "\n" + body


def _script(name: str) -> str:
    return with_prelude(_lua(name))


@dataclass(frozen=True)
class Outcome:
    """What a script did: ``ok``, ``noop`` (same outcome already), ``conflict``, ``missing``,
    ``not_due``, ``exists``, ``stale`` or ``late`` (the deadline had passed: the request
    expired instead); ``status`` is the request's status afterwards."""

    result: str
    status: str | None = None
    extra: str | None = None
    fields: dict | None = None  # the request's hash as the script left it, when it returns it

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    @property
    def request(self) -> Request | None:
        """The request as the script left it (parsed on demand), or None."""
        return Request.from_redis(self.fields) if self.fields else None


@dataclass(frozen=True)
class Late:
    """What a transition does instead when the request's deadline has already passed: it
    expires now, with these audit ``events`` and ``fields`` (and the closed request's
    retention), as the sweep would have."""

    events: list[bytes]
    fields: dict
    retention_ms: int | None = None

    def args(self) -> list:
        return [events_arg(self.events), orjson.dumps(self.fields),
                "" if self.retention_ms is None else str(self.retention_ms)]


def events_arg(events: Iterable[bytes]) -> bytes:
    """The audit events as the scripts take them: a JSON list of the events' canonical JSON."""
    return orjson.dumps([e.decode() for e in events])


# (status, deadline_ms, break_glass) of each request key, flat; '' where missing. One command
# instead of a pipeline of HMGETs: the sweep reads a batch of 500 at once.
_STATUSES_LUA = """
local out = {}
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'status', 'deadline_ms', 'break_glass')
  out[#out + 1] = v[1] or ''
  out[#out + 1] = v[2] or ''
  out[#out + 1] = v[3] or ''
end
return out
"""


# Denial memory (issue 19, item 2): one sorted set per (agent or owner, action and target) of
# the requests a person is denying, scored by when. Written just before the denial's own
# compare-and-set, so a crash can never lose the memory of a denial that happened; a member
# whose request did not end up denied by a person is ignored when read.
_REMEMBER_DENIAL_LUA = """
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[2], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
  redis.call('PEXPIRE', key, ARGV[3])
end
return 1
"""

_DENIALS_SINCE_LUA = """
local out, seen = {}, {}
for _, key in ipairs(KEYS) do
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', key, ARGV[1], '+inf')) do
    if not seen[rid] then seen[rid] = true; out[#out + 1] = rid end
  end
end
return out
"""


# A long poll marks the request watched (until Redis time + wait + 1 s for the answer's way
# back, never shortening another waiter's mark) and reads it in the same step, so the change
# scripts publish every change after this read (audit.lua ``wake``). Not a state change: no
# version, no audit. Nothing is written for a missing request.
# What introspection needs about a grant, and the evaluation epoch (issue 16, item 1): the
# grant's status, jti, exp, the epoch it was last decided at and its break-glass mark, then
# the current epoch, which every posture change and every policy reload advances. One call.
_GRANT_CHECK_LUA = """
local v = redis.call('HMGET', KEYS[1], 'status', 'grant_jti', 'grant_exp', 'eval_epoch', 'break_glass')
v[6] = redis.call('GET', KEYS[2])
return v
"""

# What deciding one request needs (issue 16): the posture, the evaluation epoch and the
# agent's grant counts (active, active in the target's environment, collected since ARGV[1]).
# KEYS[6..]: recent-denial sets (issue 19, item 3): their members since ARGV[2] follow, once each.
_DECISION_STATE_LUA = """
local out = {redis.call('GET', KEYS[1]) or false, redis.call('GET', KEYS[2]) or '0', redis.call('SCARD', KEYS[3]),
             redis.call('SCARD', KEYS[4]), redis.call('ZCOUNT', KEYS[5], ARGV[1], '+inf')}
local seen, n = {}, 5
for i = 6, #KEYS do
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], ARGV[2], '+inf')) do
    if not seen[rid] then seen[rid] = true; n = n + 1; out[n] = rid end
  end
end
return out
"""

# Record that an active grant was decided again at an epoch (only while it is active: a
# closed request's hash may already be gone, and must not come back as a stub).
_STAMP_LUA = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'status') == 'active' then
    redis.call('HSET', key, 'eval_epoch', ARGV[1])
    n = n + 1
  end
end
return n
"""

# Token use (issue 18, item 6): one hash per token (jti), aggregated on every introspection that
# answered active. Returns 1 when this was the token's first use by ARGV[1] (the resource server).
_TOKEN_USE_LUA = """
redis.call('HSETNX', KEYS[1], 'first_ms', ARGV[2])
redis.call('HSETNX', KEYS[1], 'jti', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('HSET', KEYS[1], 'last_ms', ARGV[2], 'last_server', ARGV[1])
local first = redis.call('HSETNX', KEYS[1], 's:' .. ARGV[1] .. ':first_ms', ARGV[2])
redis.call('HINCRBY', KEYS[1], 's:' .. ARGV[1] .. ':count', 1)
redis.call('HSET', KEYS[1], 's:' .. ARGV[1] .. ':last_ms', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return first
"""

_WATCH_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local t = redis.call('TIME')
local untilms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1]) + 1000
local cur = tonumber(redis.call('HGET', KEYS[1], 'watch_until'))
if cur == nil or cur < untilms then redis.call('HSET', KEYS[1], 'watch_until', untilms) end
return redis.call('HGETALL', KEYS[1])
"""


def _decode(raw: list) -> Outcome:
    parts = [p.decode() if isinstance(p, bytes) else str(p) for p in raw[:3]]
    fields = None
    if len(raw) > 3 and raw[3]:
        flat = raw[3]
        fields = dict(zip(flat[::2], flat[1::2]))
    return Outcome(parts[0], parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None, fields)


class Store:
    """Typed access to jitgate's Redis keys (all under ``prefix``)."""

    def __init__(self, redis, line: RedisLine, prefix: str = "jitgate:") -> None:
        self.redis = redis  # redis-py: scans, listings, streams, everything off the hot path
        self.line = line  # every script and the reads on a request's way through the API
        self.prefix = prefix
        self.deadlines = f"{prefix}deadlines"
        self.audit_stream = f"{prefix}audit"
        self.audit_head = f"{prefix}audit:head"
        self.audit_tree = f"{prefix}audit:tree"  # the sealer's compact state (broker/audit.py)
        self.audit_key = f"{prefix}audit:key"  # the checkpoint signing key, encrypted
        self.channel = f"{prefix}events"
        self.outbox = f"{prefix}outbox"
        self.reminders = f"{prefix}reminders"
        self.posture_key = f"{prefix}posture"
        self.bg_suspended = f"{prefix}bg:suspended"
        self.epoch_key = f"{prefix}eval:epoch"
        self._submit = LuaScript.of(_script("submit.lua"))
        self._transition = LuaScript.of(_script("transition.lua"))
        self._approve = LuaScript.of(_script("approve.lua"))
        self._append = LuaScript.of(_script("append.lua"))
        self._expire_batch = LuaScript.of(_script("expire_batch.lua"))
        self._revoke_batch = LuaScript.of(_script("revoke_batch.lua"))
        self._statuses = LuaScript.of(_STATUSES_LUA)
        self._close_batch = LuaScript.of(_script("close_batch.lua"))
        self._grant_check = LuaScript.of(_GRANT_CHECK_LUA)
        self._decision_state = LuaScript.of(_DECISION_STATE_LUA)
        self._stamp = LuaScript.of(_STAMP_LUA)
        self._watch = LuaScript.of(_WATCH_LUA)
        self._token_use = LuaScript.of(_TOKEN_USE_LUA)
        self._ratelimit = LuaScript.of(_lua("ratelimit.lua"))
        self._remember_denial = LuaScript.of(_REMEMBER_DENIAL_LUA)
        self._denials_since = LuaScript.of(_DENIALS_SINCE_LUA)
        self._linked = LuaScript.of(_script("linked.lua"))
        self._history = LuaScript.of(_lua("history.lua"))
        self.absorbed_key = f"{prefix}load:absorbed"  # proposals no person saw, by which protection
        self.decided_key = f"{prefix}load:decided"  # decisions by people per group: count and seconds

    def req_key(self, request_id: str) -> str:
        return f"{self.prefix}{{req:{request_id}}}"

    def idem_key(self, agent_id: str, key: str) -> str:
        digest = hashlib.sha256(f"{agent_id}\0{key}".encode()).hexdigest()[:32]
        return f"{self.prefix}idem:{digest}"

    async def _read(self, *command) -> Any:
        """A read: a command, or (a LuaScript first, then its keys and args) a script that
        changes no request state (the long poll's watch mark is not a state change)."""
        try:
            if command and isinstance(command[0], LuaScript):
                return await self.line.run_script(*command)
            return await self.line.execute(*command)
        except RedisError as e:
            raise Unavailable(f"Redis is unavailable: {e.__class__.__name__}") from e

    async def run_script(self, script: LuaScript, keys: list[str], args: list) -> Outcome:
        """Run a state-changing script of another module that keeps this module's contract
        (audit appended before any state write; replies decoded as an :class:`Outcome`)."""
        return await self._run(script, keys, args)

    async def _run(self, script: LuaScript, keys: list[str], args: list) -> Outcome:
        try:
            return _decode(await self.line.run_script(script, keys, args))
        except ResponseError as e:
            # A script error aborts before the state writes (audit appends come first):
            # the transition did not happen. Fail closed and say so.
            raise AuditError(f"the audit log could not be written, so nothing was changed ({e})") from e
        except RedisError as e:
            raise Unavailable(f"Redis is unavailable: {e.__class__.__name__}") from e

    async def create(
        self,
        request_id: str,
        fields: dict,
        status: str,
        events: list[bytes],
        deadline_ms: int | None,
        idem_key: str | None,
        idem_ttl_ms: int,
        retention_ms: int | None = None,
        notify: str = "",
        reminder_ms: int | None = None,
    ) -> Outcome:
        """Store a new request with its first audit events (or find the idempotent twin)."""
        keys = [self.req_key(request_id), self.deadlines, self.audit_stream, self.audit_head,
                idem_key or self.req_key(request_id) + ":noidem", self.outbox, self.reminders]
        args = [
            request_id,
            orjson.dumps(fields),
            events_arg(events),
            "" if deadline_ms is None else str(deadline_ms),
            str(idem_ttl_ms),
            "1" if idem_key else "0",
            status,
            "" if retention_ms is None else str(retention_ms),
            notify,
            "" if reminder_ms is None else str(reminder_ms),
        ]
        return await self._run(self._submit, keys, args)

    async def transition(
        self,
        request_id: str,
        from_states: Iterable[str],
        to: str,
        fields: dict,
        events: list[bytes],
        now_ms: int,
        deadline: str = "",
        due_check: bool = False,
        retention_ms: int | None = None,
        notify: str = "",
        want_request: bool = True,
        late: Late | None = None,
    ) -> Outcome:
        """Compare-and-set ``status`` from one of ``from_states`` to ``to``.

        The outcome carries the request as the script left it, unless ``want_request`` is
        False and the change was made (a caller that answers without it saves Redis and
        itself the whole hash); a refusal always carries it, to say why.

        ``deadline`` is '' (keep), '-' (clear) or a score in ms. With ``due_check`` the
        change happens only if the stored deadline has passed (scheduler sweeps).
        ``notify`` queues a notification of that kind in the outbox, in the same step (with a
        leading ``?``: only if the request was shown to people; see ``audit.lua``).
        With ``late`` the change happens only while the stored deadline (at ``now_ms``) has
        not passed; otherwise the request expires now as ``late`` says (result ``late``).
        """
        keys = [self.req_key(request_id), self.deadlines, self.audit_stream, self.audit_head, self.outbox]
        args = [
            request_id,
            " ".join(from_states),
            to,
            orjson.dumps(fields),
            events_arg(events),
            deadline,
            self.channel,
            str(now_ms),
            "1" if due_check else "0",
            "" if retention_ms is None else str(retention_ms),
            notify,
            "1" if want_request else "0",
            "1" if late else "0",
            *(late.args() if late else ["[]", "{}", ""]),
        ]
        return await self._run(self._transition, keys, args)

    async def approve(
        self,
        request_id: str,
        approver: str,
        approval: dict,
        *,
        now_ms: int,
        required: int,
        proposal_sha256: str,
        cap_s: int,
        collect_deadline_ms: int,
        recorded: list[bytes],
        approved: tuple[bytes, bytes],
        late: Late,
        notify_partial: str = "",
        notify_complete: str = "",
        group: str | None = None,
        group_required: int = 0,
    ) -> Outcome:
        """Count one approval; the ``required``-th approves the request. ``extra`` = count.

        With ``group`` (a mixed quorum) the approval counts for that group, and is refused
        (``filled``, nothing written) when the approvals stored already hold ``group_required``
        for it.

        What depends on the other approvals is decided by the script from the approvals
        stored: the count (``recorded`` holds this approval's ``approval.recorded`` event for
        each count 1..``required``; the script appends the one for the count it makes), the
        approvers in ``request.approved`` and the granted duration (the smallest of ``cap_s``
        and every approval's ``duration_s``), whose end is fixed now (``grant_end_ms``); the
        collect deadline is ``collect_deadline_ms`` or that end, whichever comes first.
        ``approved`` is that event cut around its data (:func:`event_frame`). After the stored
        deadline the approval is refused and the request expires (``late``)."""
        keys = [self.req_key(request_id), self.deadlines, self.audit_stream, self.audit_head, self.outbox]
        args = [
            request_id,
            approver,
            orjson.dumps(approval),
            str(now_ms),
            str(required),
            proposal_sha256,
            self.channel,
            str(cap_s),
            str(collect_deadline_ms),
            events_arg(recorded),
            *approved,
            *late.args(),
            notify_partial,
            notify_complete,
            group or "",
            str(group_required),
        ]
        return await self._run(self._approve, keys, args)

    async def append(self, events: list[bytes], request_id: str | None = None, fields: dict | None = None,
                     notify: str = "") -> Outcome:
        """Append audit events that change no state (optionally setting request fields and
        queueing a notification about the request)."""
        keys = [self.audit_stream, self.audit_head, self.outbox]
        if request_id:
            keys.append(self.req_key(request_id))
        return await self._run(self._append, keys, [events_arg(events), orjson.dumps(fields or {}), notify, request_id or ""])

    async def expire_batch(self, items: list[tuple[str, str, str]], events: list[bytes], now_ms: int,
                           closed_at: str, retention_ms: int | None) -> Outcome:
        """Expire ``items`` (id, status read just before, close reason) in one step with the
        batch's audit ``events``. ``retry`` (``extra`` = 1-based index) when one of them moved
        or is not due after all: then nothing was written."""
        keys = [self.deadlines, self.audit_stream, self.audit_head, self.outbox, *(self.req_key(i) for i, _, _ in items)]
        args = [str(now_ms), events_arg(events), self.channel, "" if retention_ms is None else str(retention_ms),
                orjson.dumps([list(t) for t in items]), closed_at]
        return await self._run(self._expire_batch, keys, args)

    async def take_proposal_token(self, agent_id: str, target: str, now_ms: int, agent_rate: int,
                                  target_rate: int) -> tuple[int, str]:
        """Take a token from the agent's and the target's buckets (issue 19, item 4): ``(0, '')``
        when taken, else ``(ms until one is there, 'agent' | 'target')`` and nothing taken."""
        digest = hashlib.sha256(target.encode()).hexdigest()[:32]  # any target: a bounded key
        wait, which = await self._read(self._ratelimit, [f"{self.prefix}rate:agent:{agent_id}",
                                                         f"{self.prefix}rate:target:{digest}"],
                                       [now_ms, agent_rate, target_rate])
        return int(wait), which.decode() if isinstance(which, bytes) else str(which)

    def denial_keys(self, action: str, target: str, agents: Iterable[str], owner: str | None = None) -> list[str]:
        """The denial-memory keys of this action on this target, for these agents (and owner)."""
        digest = hashlib.sha256(f"{action}\0{target}".encode()).hexdigest()[:32]
        keys = [f"{self.prefix}denials:agent:{a}:{digest}" for a in dict.fromkeys(agents)]
        if owner:
            keys.append(f"{self.prefix}denials:owner:{owner}:{digest}")
        return keys

    async def remember_denial(self, keys: list[str], request_id: str, now_ms: int, keep_ms: int) -> None:
        await self._read(self._remember_denial, keys, [request_id, now_ms, max(1, keep_ms)])

    async def denials_since(self, keys: list[str], since_ms: int) -> list[str]:
        """The request ids remembered under ``keys`` since ``since_ms``."""
        return [r.decode() if isinstance(r, bytes) else r for r in await self._read(self._denials_since, keys, [since_ms])]

    # ---------------------------------------------------------------- alternate paths
    def recent_denial_keys(self, agents: Iterable[str], owner: str | None = None) -> list[str]:
        """The keys of every recent denial (any action, any target) of these agents (and owner):
        what alternate-path detection reads (issue 19, item 3)."""
        keys = [f"{self.prefix}denied:agent:{a}" for a in dict.fromkeys(agents)]
        if owner:
            keys.append(f"{self.prefix}denied:owner:{owner}")
        return keys

    def linked_keys(self, agent_id: str, owner: str | None) -> tuple[str, str]:
        """(linked attempts, alert marker) of the scope: the owner's with ``owner``, else the agent's."""
        scope = f"owner:{owner}" if owner else f"agent:{agent_id}"
        return f"{self.prefix}linked:{scope}", f"{self.prefix}linked:{scope}:alerted"

    def agent_suspended_key(self, agent_id: str) -> str:
        return f"{self.prefix}agent:{agent_id}:suspended"

    async def denied_rows(self, request_ids: list[str]) -> list[dict | None]:
        """For each request: its status, denial, proposal (decoded) and environment, one round
        trip; None for one that is gone or unreadable."""
        if not request_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in request_ids:
                pipe.hmget(self.req_key(rid), "status", "denial", "proposal", "env")
            rows = await pipe.execute()
        out: list[dict | None] = []
        for rid, (status, denial, proposal, env) in zip(request_ids, rows):
            try:
                out.append({"id": rid, "status": status.decode(), "denial": orjson.loads(denial),
                            "proposal": orjson.loads(proposal), "env": (env or b"").decode()})
            except (AttributeError, TypeError, orjson.JSONDecodeError):
                out.append(None)
        return out

    async def linked_count(self, key: str, since_ms: int) -> int:
        return int(await self._read("ZCOUNT", key, since_ms, "+inf"))

    async def record_linked(self, agent_id: str, owner: str | None, request_id: str, *, now_ms: int, window_ms: int,
                            alert_after: int, suspend: bool, alert_events: list[bytes], suspension: dict,
                            kind: str, text: str) -> tuple[int, bool]:
        """Count a linked attempt (:file:`lua/linked.lua`): (attempts in the window, whether this
        one raised the window's one alert, recorded with ``alert_events`` and queued as ``kind``)."""
        linked, alerted = self.linked_keys(agent_id, owner)
        keys = [linked, alerted, self.agent_suspended_key(agent_id), self.audit_stream, self.audit_head, self.outbox,
                self.req_key(request_id)]
        args: list[str | bytes | int] = [request_id, now_ms, max(1, window_ms), alert_after, "1" if suspend else "0",
                                         events_arg(alert_events), orjson.dumps(suspension), kind, text]
        try:
            n, raised = await self.line.run_script(self._linked, keys, args)
        except ResponseError as e:
            raise AuditError(f"the audit log could not be written, so nothing was changed ({e})") from e
        except RedisError as e:
            raise Unavailable(f"Redis is unavailable: {e.__class__.__name__}") from e
        return int(n), bool(int(raised))

    async def agent_suspension(self, agent_id: str) -> dict | None:
        """Why the agent is suspended for alternate paths, or None."""
        raw = await self._read("GET", self.agent_suspended_key(agent_id))
        return orjson.loads(raw) if raw else None

    async def lift_agent_suspension(self, agent_id: str, *counted: str) -> None:
        """Forget the agent's alternate-path suspension and the attempts ``counted`` so far."""
        await self._read("DEL", self.agent_suspended_key(agent_id), *counted)

    async def suspended_agents(self, limit: int = 200) -> dict[str, dict]:
        """The agents suspended for alternate paths, with why (operator listing; bounded)."""
        out: dict[str, dict] = {}
        tail = ":suspended"
        async for key in self.redis.scan_iter(match=f"{self.prefix}agent:*{tail}", count=500):
            name = key.decode()
            raw = await self.redis.get(key)
            if raw:
                out[name[len(self.prefix) + len("agent:"):-len(tail)]] = orjson.loads(raw)
            if len(out) >= limit:
                break
        return out

    # ---------------------------------------------------------------- history and load
    async def history(self, agent_id: str, denials: int) -> list:
        """The raw reply of :file:`lua/history.lua` for the agent (see broker/history.py)."""
        keys = [self.agent_key(agent_id, n) for n in ("seen", "granted", "denied", "active", "pending")]
        return await self._read(self._history, keys, [denials, f"{self.prefix}{{req:"])

    async def absorbed(self, which: str) -> None:
        """Count a proposal a protection kept from people (dedupe, denial memory, rate limit)."""
        await self._read("HINCRBY", self.absorbed_key, which, 1)

    async def decided(self, group: str, seconds: float) -> None:
        """Count a decision by people of ``group``'s request, ``seconds`` after it was proposed."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(self.decided_key, f"{group}:n", 1)
            pipe.hincrbyfloat(self.decided_key, f"{group}:s", round(seconds, 3))
            await pipe.execute()

    async def approvers_load(self) -> tuple[dict[str, int], dict[str, int], dict[str, tuple[int, float]]]:
        """The approvers' load: (requests waiting per group, proposals absorbed per protection,
        (decisions, seconds in all) per group). Waiting members no longer pending are dropped."""
        names = sorted(m.decode() for m in await self.redis.smembers(f"{self.prefix}group:names"))[:100]
        waiting: dict[str, int] = {}
        for group in names:
            key = f"{self.prefix}group:pending:{group}"
            members = [m.decode() for m in await self.redis.srandmember(key, 1000) or []]
            stale = [rid for rid, (st, _, _) in zip(members, await self.statuses(members)) if st != "pending"]
            if stale:
                await self.redis.srem(key, *stale)
            waiting[group] = len(members) - len(stale)
        absorbed = {k.decode(): int(v) for k, v in (await self.redis.hgetall(self.absorbed_key)).items()}
        raw = {k.decode(): v for k, v in (await self.redis.hgetall(self.decided_key)).items()}
        decided: dict[str, tuple[int, float]] = {}
        for k, v in raw.items():
            group, _, what = k.rpartition(":")
            if what == "n":
                decided[group] = (int(v), float(raw.get(f"{group}:s", b"0")))
        return waiting, absorbed, decided

    async def revoke_batch(self, items: list[tuple[str, str, str, str, str]], events: list[bytes], *, closed_at: str,
                           closed_by: str, close_reason: str, kill_switch: str, retention_ms: int | None) -> Outcome:
        """End ``items`` (id, status read just before, new status, outbox kind, denial JSON or
        '') in one step with the batch's audit ``events``; each request gets the state change,
        outbox entry and wake-up its own transition would give. ``retry`` (``extra`` = 1-based
        index) when one of them moved since it was read: then nothing was written."""
        keys = [self.deadlines, self.audit_stream, self.audit_head, self.outbox, *(self.req_key(i[0]) for i in items)]
        args = [events_arg(events), self.channel, "" if retention_ms is None else str(retention_ms),
                orjson.dumps([list(t) for t in items]), closed_at, closed_by, close_reason, kill_switch]
        return await self._run(self._revoke_batch, keys, args)

    async def open_rows(self, request_ids: list[str]) -> list[dict[str, str] | None]:
        """What the kill switch matches on, for each request, one round trip: ``status``,
        ``agent``, ``owner``, ``engineer``, ``break_glass`` and ``target`` (the proposal's);
        None for a request that is gone."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in request_ids:
                pipe.hmget(self.req_key(rid), "status", "agent", "owner", "engineer", "break_glass", "proposal")
            rows = await pipe.execute()
        out: list[dict[str, str] | None] = []
        for row in rows:
            if row[0] is None:
                out.append(None)
                continue
            status, agent, owner, engineer, bg, proposal = (v.decode() if v else "" for v in row)
            try:
                target = str(orjson.loads(proposal).get("target") or "") if proposal else ""
            except (orjson.JSONDecodeError, AttributeError):
                target = ""
            out.append({"status": status, "agent": agent, "owner": owner, "engineer": engineer,
                        "break_glass": bg, "target": target})
        return out

    def task_key(self, agent_id: str, task_sha256: str) -> str:
        return f"{self.prefix}task:{agent_id}:{task_sha256[:32]}"

    async def pending_task(self, key: str) -> str | None:
        """The request that last asked people for this agent's task, if any (it may be over)."""
        v = await self._read("GET", key)
        return v.decode() if isinstance(v, bytes) else v

    async def remember_task(self, key: str, request_id: str, ttl_ms: int) -> None:
        await self._read("SET", key, request_id, "PX", max(1, ttl_ms))

    async def statuses(self, request_ids: list[str]) -> list[tuple[str | None, int | None, bool]]:
        """(status, deadline ms, break-glass) of each request, one round trip; (None, None, False)
        for a request that no longer exists."""
        flat = await self._read(self._statuses, [self.req_key(rid) for rid in request_ids], [])
        return [(flat[i].decode() if flat[i] else None, int(flat[i + 1]) if flat[i + 1] else None, flat[i + 2] == b"1")
                for i in range(0, len(flat), 3)]

    async def live_ids(self, batch: int = 500):
        """Every request that still has a deadline (pending, approved or active), in batches of
        ids; a request closed meanwhile may still appear (callers re-check under a CAS)."""
        ids: list[str] = []
        async for member, _score in self.redis.zscan_iter(self.deadlines, count=batch):
            ids.append(member.decode())
            if len(ids) >= batch:
                yield ids
                ids = []
        if ids:
            yield ids

    async def agents_of(self, request_ids: list[str]) -> list[tuple[str | None, str | None]]:
        """(agent, status) of each request, one round trip; (None, None) for one that is gone."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in request_ids:
                pipe.hmget(self.req_key(rid), "agent", "status")
            rows = await pipe.execute()
        return [(a.decode() if a else None, s.decode() if s else None) for a, s in rows]

    async def grant_state(self, request_id: str) -> tuple[str, str | None, float | None] | None:
        """(status, grant jti, grant exp) of a request, or None: the three fields introspection
        needs, without decoding the whole request."""
        status, jti, exp = await self._read("HMGET", self.req_key(request_id), "status", "grant_jti", "grant_exp")
        if status is None:
            return None
        return status.decode(), jti.decode() if jti else None, float(exp) if exp else None

    async def owner_and_mark(self, request_id: str) -> tuple[str, bool, str | None] | None:
        """(agent, break_glass, grant jti) of a request, or None: what an agent's own transition
        needs to know beforehand, without decoding the whole request."""
        agent, mark, jti = await self._read("HMGET", self.req_key(request_id), "agent", "break_glass", "grant_jti")
        if agent is None:
            return None
        return agent.decode(), mark == b"1", jti.decode() if jti else None

    async def watch(self, request_id: str, wait_s: float) -> Request | None:
        """The request as stored now, or None; its changes in the next ``wait_s`` seconds are
        published to the long polls (the change scripts publish nothing otherwise)."""
        flat = await self._read(self._watch, [self.req_key(request_id)], [int(wait_s * 1000)])
        return Request.from_redis(dict(zip(flat[::2], flat[1::2]))) if flat else None

    async def load(self, request_id: str) -> Request | None:
        """The request as stored now, or None."""
        flat = await self._read("HGETALL", self.req_key(request_id))
        return Request.from_redis(dict(zip(flat[::2], flat[1::2]))) if flat else None

    async def idempotent_id(self, idem_key: str) -> str | None:
        raw = await self.redis.get(idem_key)
        return raw.decode() if raw else None

    async def due(self, now_ms: int, limit: int = 1000) -> list[str]:
        """Ids whose deadline has passed, oldest first, at most ``limit``."""
        raw = await self.redis.zrangebyscore(self.deadlines, "-inf", now_ms, start=0, num=limit)
        return [r.decode() for r in raw]

    async def next_deadline_ms(self) -> int | None:
        raw = await self.redis.zrange(self.deadlines, 0, 0, withscores=True)
        return int(raw[0][1]) if raw else None

    # ------------------------------------------------------------------ beside the requests
    # Schedules (sorted sets of request ids by time: deadlines, reminders, break-glass
    # reviews), the posture and break-glass suspensions: plain commands, no script. A caller
    # that records a change here appends its audit event first (no audit, no change).

    async def first_in(self, schedule: str, limit: int) -> list[str]:
        """The ids in ``schedule`` (a key of this store), earliest first, at most ``limit``; an
        id may outlive its request (callers re-read the request)."""
        return [r.decode() for r in await self.redis.zrange(schedule, 0, limit - 1)]

    async def due_in(self, schedule: str, now_ms: int, limit: int) -> list[str]:
        """The ids in ``schedule`` whose time is at or before ``now_ms``, earliest first, at most ``limit``."""
        return [r.decode() for r in await self.redis.zrangebyscore(schedule, "-inf", now_ms, start=0, num=limit)]

    async def scheduled_at(self, schedule: str, request_id: str) -> float | None:
        """When ``request_id`` is due in ``schedule`` (ms), or None when it is not in it."""
        return await self.redis.zscore(schedule, request_id)

    async def schedule(self, schedule: str, request_id: str, at_ms: int) -> None:
        """Put ``request_id`` in ``schedule`` at ``at_ms``, moving it if it was there already."""
        await self.redis.zadd(schedule, {request_id: at_ms})

    async def unschedule(self, schedule: str, *request_ids: str) -> None:
        """Take ``request_ids`` out of ``schedule``; ids not in it are ignored."""
        if request_ids:
            await self.redis.zrem(schedule, *request_ids)

    async def request_fields(self, request_id: str, *names: str) -> list[str | None]:
        """These fields of a request as stored now, decoded; None for each one unset (or when
        the request is gone). A read: nothing is locked or published."""
        return [v.decode() if v is not None else None for v in await self.redis.hmget(self.req_key(request_id), *names)]

    async def posture(self) -> str | None:
        """The risk posture as stored, or None when never set (unchecked: callers apply
        :func:`broker.rules.posture_or_strictest`)."""
        raw = await self.redis.get(self.posture_key)
        return raw.decode() if raw else None

    async def set_posture(self, level: str) -> int:
        """Store the risk posture ``level`` (checked by the caller) for every replica, and
        advance the evaluation epoch in the same step; returns the new epoch."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.posture_key, level)
            pipe.incr(self.epoch_key)
            _, epoch = await pipe.execute()
        return int(epoch)

    # ------------------------------------------------------------------ deciding again
    # Issue 16, item 1: the evaluation epoch, the per-agent grant indexes (kept by the
    # scripts, audit.lua ``index_grant``) and the batch that closes what policy no longer permits.

    async def bump_epoch(self) -> int:
        """Advance the evaluation epoch (the loaded policies changed); returns the new one."""
        return int(await self.redis.incr(self.epoch_key))

    async def decision_inputs(self) -> tuple[str | None, int]:
        """(posture as stored, evaluation epoch), read together and uncached."""
        posture, epoch = await self._read("MGET", self.posture_key, self.epoch_key)
        return (posture.decode() if posture else None), int(epoch or 0)

    async def decision_state(self, agent_id: str, env: str, now_ms: int) -> tuple[str | None, int, tuple[int, int, int]]:
        """(posture as stored, evaluation epoch, :meth:`grant_use` of the agent in ``env``) in
        one script call on the hot-path connection: what deciding one request needs from Redis."""
        posture, epoch, use, _ = await self.submit_state(agent_id, env, now_ms, [], 0)
        return posture, epoch, use

    async def submit_state(self, agent_id: str, env: str, now_ms: int, denial_keys: list[str],
                           since_ms: int) -> tuple[str | None, int, tuple[int, int, int], list[str]]:
        """:meth:`decision_state` and the request ids remembered under ``denial_keys`` since
        ``since_ms`` (alternate paths), still one script call."""
        keys = [self.posture_key, self.epoch_key, self.agent_key(agent_id, "active"),
                self.agent_key(agent_id, f"active:{env or '-'}"), self.agent_key(agent_id, "collected"), *denial_keys]
        posture, epoch, active, active_env, last_hour, *ids = await self._read(
            self._decision_state, keys, [now_ms - 3600_000, since_ms])
        return ((posture.decode() if posture else None), int(epoch or 0), (int(active), int(active_env), int(last_hour)),
                [i.decode() if isinstance(i, bytes) else str(i) for i in ids])

    async def grant_check(self, request_id: str) -> tuple[str, str | None, float | None, int, bool, int] | None:
        """(status, grant jti, grant exp, epoch last decided, break-glass, current epoch) of a
        request in one call, or None: what introspection needs."""
        v = await self._read(self._grant_check, [self.req_key(request_id), self.epoch_key], [])
        if not v or v[0] is None:
            return None
        status, jti, exp, stamped, bg = v[0], v[1], v[2], v[3], v[4]
        cur = v[5] if len(v) > 5 else None
        return (status.decode(), jti.decode() if jti else None, float(exp) if exp else None,
                int(stamped or 0), bg == b"1", int(cur or 0))

    def use_key(self, request_id: str, jti: str) -> str:
        """The hash aggregating the use of one token (in its request's slot)."""
        return f"{self.req_key(request_id)}:use:{jti}"

    async def token_used(self, request_id: str, jti: str, server: str, now_ms: int, keep_ms: int) -> bool:
        """Count one use of token ``jti`` by resource server ``server`` (first use, count, last
        use, per server too; the hash lives ``keep_ms``). True on this server's first use."""
        first = await self._read(self._token_use, [self.use_key(request_id, jti)],
                                 [server, str(now_ms), str(max(int(keep_ms), 1000)), jti])
        return int(first or 0) == 1

    async def forget_first_use(self, request_id: str, jti: str, server: str) -> None:
        """Undo the first-use mark of ``server`` (its ``token.used`` entry could not be written),
        so the next introspection writes it."""
        await self._read("HDEL", self.use_key(request_id, jti), f"s:{server}:first_ms")

    async def token_use(self, request_id: str, jti: str) -> dict | None:
        """The aggregated use of token ``jti``: ``{first_use, last_use, count, last_server,
        servers: {id: {first_use, last_use, count}}}``, or None when it was never introspected."""
        raw = await self._read("HGETALL", self.use_key(request_id, jti))
        if not raw:
            return None
        if isinstance(raw, list):  # RESP2 flat list
            raw = dict(zip(raw[::2], raw[1::2]))
        h = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in raw.items()}
        servers: dict[str, dict] = {}
        for k, v in h.items():
            if k.startswith("s:"):
                srv, _, what = k[2:].rpartition(":")
                servers.setdefault(srv, {})[what] = v
        return {
            "first_use": _iso_ms(h.get("first_ms")), "last_use": _iso_ms(h.get("last_ms")),
            "count": int(h.get("count") or 0), "last_server": h.get("last_server"),
            "servers": {srv: {"first_use": _iso_ms(d.get("first_ms")), "last_use": _iso_ms(d.get("last_ms")),
                              "count": int(d.get("count") or 0)} for srv, d in sorted(servers.items())},
        }

    async def stamp(self, request_ids: list[str], epoch: int) -> int:
        """Record that these grants were decided at ``epoch`` (only those still active)."""
        if not request_ids:
            return 0
        return int(await self._read(self._stamp, [self.req_key(r) for r in request_ids], [str(epoch)]))

    async def open_requests(self, agent_id: str) -> int:
        """How many of the agent's requests wait for people now (the index the scripts keep,
        with members that are no longer pending dropped)."""
        key = self.agent_key(agent_id, "pending")
        members = [m.decode() if isinstance(m, bytes) else m for m in await self._read("SMEMBERS", key)]
        if not members:
            return 0
        stale = [rid for rid, (status, _, _) in zip(members, await self.statuses(members)) if status != "pending"]
        if stale:
            await self._read("SREM", key, *stale)
        return len(members) - len(stale)

    def agent_key(self, agent_id: str, name: str) -> str:
        """A per-agent grant index (``active``, ``active:<env>``, ``collected``)."""
        return f"{self.prefix}agent:{agent_id}:{name}"

    async def grant_use(self, pairs: list[tuple[str, str]], now_ms: int) -> list[tuple[int, int, int]]:
        """For each (agent, env): (active grants, active grants in env, collected in the last
        hour), from the indexes; one round trip for all of them."""
        if not pairs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for agent, env in pairs:
                pipe.scard(self.agent_key(agent, "active"))
                pipe.scard(self.agent_key(agent, f"active:{env or '-'}"))  # '-' is never an env
                pipe.zcount(self.agent_key(agent, "collected"), now_ms - 3600_000, "+inf")
            flat = await pipe.execute()
        return [(int(flat[i]), int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def load_many(self, request_ids: list[str]) -> list[Request | None]:
        """Each request as stored now (None where gone), one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in request_ids:
                pipe.hgetall(self.req_key(rid))
            rows = await pipe.execute()
        return [Request.from_redis(h) if h and b"id" in h else None for h in rows]

    async def close_batch(self, items: list[tuple[str, str, str, dict, str]], events: list[bytes], now_ms: int,
                          retention_ms: int | None) -> Outcome:
        """Close ``items`` (id, status read before, new status, fields, notification kind) in
        one step with the batch's audit ``events``. ``retry`` (``extra`` = 1-based index) when
        one of them moved: then nothing was written."""
        keys = [self.deadlines, self.audit_stream, self.audit_head, self.outbox, *(self.req_key(i[0]) for i in items)]
        args = [str(now_ms), events_arg(events), self.channel, "" if retention_ms is None else str(retention_ms),
                orjson.dumps([[rid, st, to, orjson.dumps(f).decode(), kind] for rid, st, to, f, kind in items])]
        return await self._run(self._close_batch, keys, args)

    async def suspension(self, engineer_id: str) -> dict | None:
        """The record of why ``engineer_id``'s break-glass right is suspended, or None."""
        raw = await self.redis.hget(self.bg_suspended, engineer_id)
        return orjson.loads(raw) if raw else None

    async def suspend(self, engineer_id: str, info: dict) -> None:
        """Record ``engineer_id``'s break-glass right as suspended, for the reason ``info``."""
        await self.redis.hset(self.bg_suspended, engineer_id, orjson.dumps(info))

    async def lift_suspension(self, engineer_id: str) -> None:
        """Forget ``engineer_id``'s suspension (a no-op when there is none)."""
        await self.redis.hdel(self.bg_suspended, engineer_id)

    async def scan_requests(self, limit: int = 1000) -> list[Request]:
        """Up to ``limit`` stored requests (operator listing; not a hot path)."""
        out: list[Request] = []
        async for key in self.redis.scan_iter(match=f"{self.prefix}{{req:*}}", count=500):
            if key.endswith(b":noidem"):
                continue
            h = await self.redis.hgetall(key)
            if h and b"id" in h:
                out.append(Request.from_redis(h))
            if len(out) >= limit:
                break
        out.sort(key=lambda r: r.created_at, reverse=True)
        return out


def _iso_ms(ms: str | None) -> str | None:
    """An ISO time from milliseconds since the epoch as stored (None when absent or malformed)."""
    try:
        return iso(int(ms) / 1000) if ms else None
    except ValueError:
        return None
