"""The audit log: events sequenced in each transition, sealed outside it into a Merkle tree
whose signed checkpoints also leave Redis (issue 18; the tree itself is ``broker/translog.py``).

* **Sequencing.** Every transition script appends its raw events to the Redis stream
  ``{prefix}audit`` (fields ``seq`` and ``event``, canonical JSON) in the same atomic step as
  the state change (``broker/lua/audit.lua``); nothing is hashed there.
* **Sealing.** The sealer (:class:`AuditLog`, one replica at a time under the scheduler lease,
  on its own cadence) reads the entries after the last sealed one in order, hashes each into
  the tree (RFC 9162 leaf ``SHA-256(0x00 || event)``; leaf index = ``seq - 1 - offset``), and
  keeps the tree's compact state in the hash ``{prefix}audit:tree`` (``size``, ``frontier``,
  ``last_id``), written with a compare-and-set on the size.
* **Checkpoints.** After each sealing pass that grew the tree (and at least every
  ``checkpoint_idle_s`` otherwise) it signs a C2SP checkpoint with the audit key (Ed25519,
  stored in ``{prefix}audit:key`` encrypted with the key-encryption key, like the token keys)
  and appends it to the sinks outside Redis (``broker/auditsinks.py``).
* **Verification.** :func:`verify` recomputes the tree from the retained entries and checks
  the root against the latest signed checkpoint (and, given the checkpoints a sink recorded,
  proves with RFC 9162 consistency proofs that the log extends each one); it reports the
  unsealed tail and its age.
* **Fail closed.** :class:`AuditLog` tells every replica whether sealing lags more than
  ``max_lag_s`` or every sink has failed for longer than ``sink_grace_s``; new grants are then
  refused with a 503 and security is alerted once (an ``audit.failing`` notice).
* **Retention.** ``trim`` removes only entries a signed checkpoint covers (and an export file
  holds); the tree's compact state at the cut is kept (``base``) and recorded in the
  ``audit.trimmed`` event, so the retained log still proves against every later checkpoint.
* **Migration.** A log written by the former hash chain (entries with a ``hash`` field) is
  verified once as a chain and then sealed like any other; the ``audit.migrated`` entry the
  sealer appends records the old head (seq and hash) inside the sealed log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Iterable, Iterator, TextIO

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import AuditError, Conflict, ConfigError, InvalidRequest
from .translog import (EMPTY_ROOT, Checkpoint, Frontier, NoteError, Tree, leaf_hash, now_rfc3339, raw_public, verifier_key,
                       verify_consistency, verify_inclusion)

log = logging.getLogger("jitgate.audit")

GENESIS = "0" * 64
TRIMMED = "audit.trimmed"
MIGRATED = "audit.migrated"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SEAL_BATCH = 2000


# ---------------------------------------------------------------------- events
def event(kind: str, at: str, request_id: str | None = None, actor: dict | None = None, **data: Any) -> bytes:
    """An audit event as canonical JSON bytes (sorted keys): the exact bytes that get hashed."""
    body: dict[str, Any] = {"type": kind, "at": at}
    if request_id:
        body["request_id"] = request_id
    if actor:
        body["actor"] = actor
    if data:
        body["data"] = data
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def event_frame(kind: str, at: str, request_id: str, actor: dict | None = None) -> tuple[bytes, bytes]:
    """The canonical JSON of an event whose ``data`` a script computes, cut around it: the
    script writes ``head + data + tail``, the very bytes :func:`event` would have written."""
    body = orjson.loads(event(kind, at, request_id, actor))
    body["data"] = 0
    raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    at_data = raw.rindex(b'"data":0')  # after it come only request_id (an id) and type
    return raw[: at_data + 7], raw[at_data + 8:]


async def record(store, kind: str, at: str, actor: dict, request_id: str | None = None, **data: Any) -> None:
    """Append one event that goes with no state change of the core (a console sign-in, an
    issued sign-in link), sequenced like every other entry by the store's append script; raises
    :class:`~broker.errors.AuditError` (or ``Unavailable``) when it cannot be written. The way
    code outside the core's transitions writes to the audit log."""
    await store.append([event(kind, at, request_id, actor, **data)])


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def tree_key(stream: str) -> str:
    """The hash holding the tree's compact state and the latest checkpoint."""
    return f"{stream}:tree"


# ---------------------------------------------------------------------- entries
@dataclass(frozen=True)
class Entry:
    """One entry as stored: ``event`` holds the exact bytes that are sealed (``seq`` is -1
    when the stored seq is not a number: such an entry never verifies). ``legacy`` is the
    former chain's hash, on entries written before the Merkle tree."""

    stream_id: str
    seq: int
    event: bytes
    legacy: str = ""

    @classmethod
    def from_stream(cls, stream_id, fields: dict) -> "Entry":
        f = {_s(k): v for k, v in fields.items()}
        try:
            seq = int(_s(f.get("seq", b"")))
        except ValueError:
            seq = -1
        ev = f.get("event", b"")
        return cls(_s(stream_id), seq, ev if isinstance(ev, bytes) else str(ev).encode(), _s(f.get("hash", b"")))

    @property
    def leaf(self) -> bytes:
        return leaf_hash(self.event)

    @property
    def ms(self) -> int:
        """When it was appended (the stream id's milliseconds, Redis time)."""
        return int(self.stream_id.split("-")[0])

    def body(self) -> dict | None:
        """The event as a dict (``type``, ``at``, and ``request_id``, ``actor``, ``data`` when
        set), or None when the stored bytes are not a JSON object."""
        try:
            body = orjson.loads(self.event)
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    def to_json(self) -> dict:
        return {"id": self.stream_id, "seq": self.seq, "leaf": self.leaf.hex(), "event": self.event.decode()}


async def entries(redis, stream: str, batch: int = 1000, after: str = "-") -> AsyncIterator[Entry]:
    """Every entry (after stream id ``after``), oldest first, read in bounded batches."""
    start = after if after == "-" else "(" + after
    while True:
        chunk = await redis.xrange(stream, min=start, max="+", count=batch)
        if not chunk:
            return
        for sid, fields in chunk:
            yield Entry.from_stream(sid, fields)
        if len(chunk) < batch:
            return
        start = "(" + _s(chunk[-1][0])


async def newest(redis, stream: str, count: int) -> list[Entry]:
    """The newest ``count`` entries, newest first (one bounded read)."""
    return [Entry.from_stream(sid, f) for sid, f in await redis.xrevrange(stream, count=count)]


async def length(redis, head_key: str) -> int:
    """How many entries were ever sequenced (trimmed ones included): it grows with every
    append, so readers use it as a change counter."""
    raw = await redis.hget(head_key, "seq")
    return int(raw) if raw else 0


# ---------------------------------------------------------------------- the audit key
_KEY_AD = b"jitgate audit key"


class AuditKey:
    """The Ed25519 key checkpoints are signed with, kept in Redis with its private part
    encrypted (AES-256-GCM, the key-encryption key), like the token signing keys: whoever can
    write to Redis but lacks the key-encryption key can neither sign nor slip in a key of
    their own (the stored public key must match the decrypted private one)."""

    def __init__(self, origin: str, private: ed25519.Ed25519PrivateKey | None, public: bytes) -> None:
        self.origin = origin
        self.private = private
        self.public = public

    @property
    def verifier_key(self) -> str:
        """The signed-note verifier key an auditor pins (``origin+keyid+base64``)."""
        return verifier_key(self.origin, self.public)

    def document(self) -> dict:
        """What ``/.well-known/jitgate-audit-key`` publishes."""
        return {"origin": self.origin, "alg": "Ed25519", "public_key": base64.b64encode(self.public).decode(),
                "verifier_key": self.verifier_key, "format": "https://c2sp.org/tlog-checkpoint"}

    @classmethod
    async def ensure(cls, redis, key: str, kek: bytes, origin: str) -> "AuditKey":
        """Load the audit key, creating it when none exists yet (the first replica wins);
        raises :class:`ConfigError` when the stored key does not open with this
        key-encryption key or does not match its public half (refuse to start)."""
        raw = await redis.get(key)
        if raw is None:
            priv = ed25519.Ed25519PrivateKey.generate()
            der = priv.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
            nonce = os.urandom(12)
            rec = {"alg": "Ed25519", "created_at": time.time(),
                   "public": base64.b64encode(raw_public(priv.public_key())).decode(),
                   "private_enc": base64.b64encode(nonce + AESGCM(kek).encrypt(nonce, der, _KEY_AD)).decode()}
            await redis.set(key, orjson.dumps(rec), nx=True)
            raw = await redis.get(key)
        return cls.open(raw, kek, origin)

    @classmethod
    def open(cls, raw: bytes | str, kek: bytes, origin: str) -> "AuditKey":
        try:
            rec = orjson.loads(raw)
            public = base64.b64decode(rec["public"])
            blob = base64.b64decode(rec["private_enc"])
            der = AESGCM(kek).decrypt(blob[:12], blob[12:], _KEY_AD)
            priv = serialization.load_der_private_key(der, None)
        except Exception:  # noqa: BLE001 - any failure means the same: this record is not ours
            raise ConfigError("the audit key in Redis does not open with JITGATE_KEY_ENCRYPTION_KEY "
                              "(another installation's key, or a changed record): refusing to sign audit checkpoints") from None
        if not isinstance(priv, ed25519.Ed25519PrivateKey) or raw_public(priv.public_key()) != public:
            raise ConfigError("the audit key in Redis does not match its public half: refusing to use it")
        return cls(origin, priv, public)

    @classmethod
    async def public_only(cls, redis, key: str, origin: str) -> "AuditKey | None":
        """The stored public key, unauthenticated (what a reader without the key-encryption
        key can see); the CLI and the broker use :meth:`ensure`."""
        raw = await redis.get(key)
        if raw is None:
            return None
        return cls(origin, None, base64.b64decode(orjson.loads(raw)["public"]))


# ---------------------------------------------------------------------- the former chain
def entry_hash(prev: str, event: bytes, seq: int) -> str:
    """The former chain's hash of one entry (kept to verify a log written before the tree)."""
    return hashlib.sha256(bytes.fromhex(prev) + hashlib.sha256(event).digest() + seq.to_bytes(8, "big")).hexdigest()


async def _legacy_head(redis, stream: str, head_key: str) -> dict | None:
    """The former hash chain's head ({seq, hash, base_seq, base_hash}) after checking every
    hashed entry against it, or None when the log holds no hashed entry; raises
    :class:`AuditError` naming the first entry that does not fit."""
    base_seq, base_hash, head_hash = await redis.hmget(head_key, "base_seq", "base_hash", "hash")
    prev = _s(base_hash) if base_hash else GENESIS
    seq = int(base_seq) if base_seq else 0
    found = False
    async for e in entries(redis, stream):
        if not e.legacy:
            break
        found = True
        if e.seq != seq + 1 or entry_hash(prev, e.event, e.seq) != e.legacy:
            raise AuditError(f"the former hash chain does not verify at entry {e.stream_id} (seq {e.seq}); "
                             "not sealing it: investigate first")
        prev, seq = e.legacy, e.seq
    if not found:
        return None
    if head_hash is not None and _s(head_hash) != prev:
        raise AuditError("the former hash chain's head does not match its last hashed entry; not sealing it")
    return {"seq": seq, "hash": prev, "base_seq": int(base_seq) if base_seq else 0,
            "base_hash": _s(base_hash) if base_hash else GENESIS}


# ---------------------------------------------------------------------- tree state
@dataclass
class TreeState:
    """The sealer's state as stored in ``{prefix}audit:tree``."""

    size: int = 0  # leaves sealed (trimmed ones included)
    frontier: Frontier = field(default_factory=Frontier)
    last_id: str = ""
    offset: int = 0  # seq of leaf 0 minus one (a migrated log trimmed before it was sealed)
    base: Frontier = field(default_factory=Frontier)  # compact state of the trimmed prefix
    base_id: str = ""
    checkpoint: str = ""
    pass_ms: int = 0
    unsunk_since: int = 0
    error: str = ""
    exists: bool = False

    @classmethod
    async def read(cls, redis, key: str) -> "TreeState":
        h = {_s(k): _s(v) for k, v in (await redis.hgetall(key)).items()}
        if not h:
            return cls()
        return cls(int(h.get("size", 0)), Frontier.decode(h.get("frontier")), h.get("last_id", ""),
                   int(h.get("offset", 0)), Frontier.decode(h.get("base")), h.get("base_id", ""), h.get("checkpoint", ""),
                   int(h.get("pass_ms", 0)), int(h.get("unsunk_since", 0) or 0), h.get("error", ""), True)


# KEYS: tree. ARGV: expected size, new size, frontier, last id, checkpoint ('' none),
# offset ('' keep). Compare-and-set on the size; stamps the pass with Redis time.
_SEAL_LUA = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'size') or '-1')
if cur ~= tonumber(ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'size', ARGV[2], 'frontier', ARGV[3], 'last_id', ARGV[4], 'pass_ms', now)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'checkpoint', ARGV[5], 'cp_ms', now) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'offset', ARGV[6]) end
return 1
"""

# KEYS: tree, head, stream. Everything a replica needs to judge audit health, at one Redis
# instant: the oldest unsealed entry's id (its age is the unsealed tail's), and the sink state.
_HEALTH_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'last_id', 'unsunk_since', 'error')
local from = '-'
if v[1] and v[1] ~= '' then from = '(' .. v[1] end
local first = redis.call('XRANGE', KEYS[3], from, '+', 'COUNT', 1)
local oldest = ''
if #first == 1 then oldest = first[1][1] end
return {now, redis.call('HGET', KEYS[2], 'seq') or '0', oldest, v[2] or '', v[3] or ''}
"""


@dataclass(frozen=True)
class Health:
    """Audit health as one replica last read it."""

    ok: bool = True
    reason: str = ""
    lag_ms: int = 0
    unsealed: int = 0


class AuditLog:
    """The sealer, the checkpoint signer and the fail-closed gate of one broker process.

    ``seal`` runs on the lease holder only (the scheduler's dedicated seal loop); ``watch``
    runs on every replica and keeps :attr:`health` current for :meth:`check_grants`."""

    def __init__(self, store, key: AuditKey, sinks=None, *, max_lag_s: float = 5.0, sink_grace_s: float = 60.0,
                 checkpoint_idle_s: float = 60.0, fail_closed: bool = True, metrics=None) -> None:
        self.store = store
        self.redis = store.redis
        self.stream = store.audit_stream
        self.head = store.audit_head
        self.tree = tree_key(store.audit_stream)
        self.key = key
        self.sinks = sinks
        self.max_lag_ms = int(max_lag_s * 1000)
        self.sink_grace_ms = int(sink_grace_s * 1000)
        self.checkpoint_idle_ms = int(checkpoint_idle_s * 1000)
        self.fail_closed = fail_closed
        self.metrics = metrics
        self.health = Health()
        self.latencies_ms: deque[int] = deque(maxlen=100_000)  # seal time - append time, per entry
        self._seal = self.redis.register_script(_SEAL_LUA)
        self._health = self.redis.register_script(_HEALTH_LUA)
        self._alert = None
        self._cp_ms = 0
        self._watch_task: asyncio.Task | None = None
        self._stopping = False

    # ------------------------------------------------------------------ sealing
    async def seal(self, batch: int = SEAL_BATCH, *, force_checkpoint: bool = False) -> int:
        """Seal the entries appended since the last pass (up to ``batch``) and sign a checkpoint
        when the tree grew (or when ``checkpoint_idle_s`` passed); returns how many were sealed.
        Raises :class:`AuditError` (recorded for the health check) when the stream does not
        continue the sealed tree: an entry removed, inserted or reordered before sealing."""
        st = await TreeState.read(self.redis, self.tree)
        offset_arg = ""
        if not st.exists:
            st, offset_arg = await self._start(st)
        rows = await self.redis.xrange(self.stream, min="(" + st.last_id if st.last_id else "-", max="+", count=batch)
        head_seq = await length(self.redis, self.head)  # read after the entries: every script bumped it first
        frontier = st.frontier.copy()
        now_ms = int(time.time() * 1000)
        lat = []
        for sid, fields in rows:
            e = Entry.from_stream(sid, fields)
            want = st.offset + frontier.size + 1
            if e.seq != want or e.seq > head_seq:
                problem = (f"entry {e.stream_id} has seq {e.seq} where {want} was expected: an entry was removed, "
                           "inserted or reordered before it was sealed")
                await self.redis.hset(self.tree, "error", problem)
                raise AuditError(problem)
            frontier.append(e.leaf)
            lat.append(now_ms - e.ms)
        grew = frontier.size > st.size
        due = force_checkpoint or grew or not st.checkpoint or now_ms - self._cp_ms >= self.checkpoint_idle_ms
        note = ""
        if due:
            cp = Checkpoint(self.key.origin, frontier.size, frontier.root(), now_rfc3339(now_ms))
            note = cp.sign(self.key.private)
        last_id = _s(rows[-1][0]) if rows else st.last_id
        if not await self._seal(keys=[self.tree], args=[st.size, frontier.size, frontier.encode(), last_id, note, offset_arg]):
            return 0  # another sealer moved first (a lease hand-over): its state stands
        self.latencies_ms.extend(lat)
        if note:
            self._cp_ms = now_ms
            await self._publish(note, now_ms)
        return frontier.size - st.size

    async def _start(self, st: TreeState) -> tuple[TreeState, str]:
        """The first pass over this log: an empty tree, or the migration of a former chain
        (verified first; its head is recorded in an ``audit.migrated`` entry)."""
        legacy = await _legacy_head(self.redis, self.stream, self.head)
        offset = 0
        if legacy is not None:
            offset = legacy["base_seq"]
            ev = event(MIGRATED, now_rfc3339(int(time.time() * 1000)), None, {"operator": "jitgate sealer"},
                       old_head_seq=legacy["seq"], old_head_hash=legacy["hash"], old_base_seq=legacy["base_seq"],
                       old_base_hash=legacy["base_hash"], scheme="rfc9162-merkle-tree")
            await self.store.append([ev])
            log.warning("audit log migrated: the former hash chain (head seq %d, hash %s) is sealed into the "
                        "Merkle tree", legacy["seq"], legacy["hash"])
        await self.redis.hsetnx(self.tree, "size", 0)
        st = await TreeState.read(self.redis, self.tree)
        if st.size == 0 and offset:
            st.offset = offset
            return st, str(offset)
        return st, ""

    async def _publish(self, note: str, now_ms: int) -> None:
        """Hand the checkpoint to the sinks; track when none has accepted one (fail closed)."""
        if self.sinks is None:
            return
        accepted = await self.sinks.publish(note)
        if accepted:
            await self.redis.hdel(self.tree, "unsunk_since")
        else:
            await self.redis.hsetnx(self.tree, "unsunk_since", now_ms)

    async def sink_accepted(self) -> None:
        """A sink accepted a checkpoint later (a witness retry succeeded)."""
        await self.redis.hdel(self.tree, "unsunk_since")

    # ------------------------------------------------------------------ health
    async def read_health(self) -> Health:
        """Read and judge audit health now (every replica; one script call)."""
        now, _head, oldest, unsunk, error = (_s(x) for x in await self._health(
            keys=[self.tree, self.head, self.stream], args=[]))
        now_i = int(now)
        lag = now_i - int(oldest.split("-")[0]) if oldest else 0
        unsealed = 1 if oldest else 0
        if error:
            return Health(False, f"the audit log cannot be sealed: {error}", lag, unsealed)
        if lag > self.max_lag_ms:
            return Health(False, f"audit sealing lags {lag / 1000:.1f} s behind (the oldest unsealed entry)", lag, unsealed)
        if unsunk and now_i - int(unsunk) > self.sink_grace_ms:
            return Health(False, f"no checkpoint sink has accepted a checkpoint for {(now_i - int(unsunk)) / 1000:.0f} s",
                          lag, unsealed)
        return Health(True, "", lag, unsealed)

    async def refresh(self) -> Health:
        """Refresh :attr:`health`; on a change, the security group is alerted once (whichever
        replica sees it first records the ``audit.failing``/``audit.recovered`` entry)."""
        try:
            h = await self.read_health()
        except Exception as e:  # noqa: BLE001 - no Redis: the transitions fail on their own
            log.debug("audit health unreadable: %r", e)
            return self.health
        changed = h.ok != self.health.ok
        self.health = h
        if self.metrics is not None:
            self.metrics.audit_unsealed_age.set(h.lag_ms / 1000)
            self.metrics.audit_ok.set(1 if h.ok else 0)
        if changed or not h.ok:
            await self._maybe_alert(h)
        return h

    async def _maybe_alert(self, h: Health) -> None:
        from .store import events_arg, with_prelude  # noqa: PLC0415 - the shared Lua prelude

        if self._alert is None:
            self._alert = self.redis.register_script(with_prelude(_ALERT_BODY))
        state = "failing" if not h.ok else "ok"
        kind = "audit.failing" if not h.ok else "audit.recovered"
        ev = event(kind, now_rfc3339(int(time.time() * 1000)), None, {"operator": "jitgate audit"}, reason=h.reason,
                   lag_ms=h.lag_ms, unsealed=h.unsealed)
        try:
            done = await self._alert(keys=[self.tree, self.stream, self.head, self.store.outbox],
                                     args=[state, events_arg([ev]), kind])
        except Exception as e:  # noqa: BLE001 - the log line below stays
            log.error("could not record the audit alert: %r", e)
            done = 0
        if done:
            (log.error if not h.ok else log.warning)("audit: %s", h.reason or "recovered; new grants are accepted again")

    def check_grants(self) -> None:
        """Raise :class:`AuditUnavailable` (503, Retry-After) when a new grant must be refused."""
        if self.fail_closed and not self.health.ok:
            raise AuditUnavailable(f"new grants are refused while audit cannot record them: {self.health.reason}",
                                   retry_after=5)

    async def watch(self, interval_s: float = 0.2) -> None:
        """Keep :attr:`health` current (every replica)."""
        self._stopping = False
        while not self._stopping:
            await self.refresh()
            await asyncio.sleep(interval_s)

    def start(self) -> None:
        self._watch_task = asyncio.get_running_loop().create_task(self.watch())

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._stopping = True  # a cancellation swallowed inside a Redis call still ends the loop
            self._watch_task.cancel()
            try:
                await asyncio.wait_for(self._watch_task, 5)
            except (asyncio.CancelledError, asyncio.TimeoutError, Exception):  # noqa: BLE001
                pass
            self._watch_task = None
        if self.sinks is not None:
            await self.sinks.close()

    def seal_latency_p99_ms(self) -> float | None:
        """The 99th percentile of (sealed at - appended at) over the entries this process sealed."""
        if not self.latencies_ms:
            return None
        xs = sorted(self.latencies_ms)
        return float(xs[min(len(xs) - 1, int(len(xs) * 0.99))])


# KEYS: tree, stream, head, outbox. ARGV: 'failing'|'ok', events, notice kind.
# Alert once per change of state, whichever replica sees it first.
_ALERT_BODY = """
local was = redis.call('HGET', KEYS[1], 'alerted') or 'ok'
if was == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'alerted', ARGV[1])
audit_append(KEYS[2], KEYS[3], cjson.decode(ARGV[2]))
outbox(KEYS[4], 'audit', ARGV[3])
return 1
"""


class AuditUnavailable(AuditError):
    """New grants are refused: audit cannot record them now (sealing lags or no sink)."""

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


# ---------------------------------------------------------------------- verification
@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify`. ``entries`` counts the retained entries checked; ``sealed``
    the tree size the latest signed checkpoint covers; ``unsealed`` entries after it, the oldest
    ``tail_age_ms`` old."""

    ok: bool
    entries: int
    head: str  # the checkpoint's root hash (hex)
    problem: str | None = None
    bad_entry: str | None = None
    trimmed: int = 0
    sealed: int = 0
    unsealed: int = 0
    tail_age_ms: int = 0
    checkpoints: int = 0  # recorded checkpoints proven consistent
    older: int = 0  # recorded checkpoints older than the retained log (proven at trim time)
    base: str = GENESIS
    # Where :func:`extend` goes on from: the frontier at ``sealed`` and the last sealed entry's id.
    frontier: str = field(default="", repr=False, compare=False)
    sealed_id: str = field(default="", repr=False, compare=False)

    @property
    def seq(self) -> int:
        return self.trimmed + self.entries

    def __str__(self) -> str:
        if not self.ok:
            return f"audit log BROKEN at {self.bad_entry}: {self.problem} (checked {self.entries} entries)"
        text = (f"audit log OK: {self.entries} entries, {self.sealed} sealed under a signed checkpoint "
                f"(root {self.head[:16]}…)")
        if self.trimmed:
            text += f"; {self.trimmed} older entries trimmed (their compact state is kept)"
        if self.checkpoints or self.older:
            text += f"; consistent with {self.checkpoints} recorded checkpoints"
            if self.older:
                text += f" ({self.older} older than the retained log, checked against the trim's compact state)"
        text += (f"; unsealed tail: {self.unsealed} entries, oldest {self.tail_age_ms} ms old" if self.unsealed
                 else "; unsealed tail: none")
        return text


def read_checkpoints(lines: Iterable[str]) -> list[tuple[int, str]]:
    """The (line number, note) of each checkpoint a file sink wrote (JSON Lines ``{"checkpoint": note}``)."""
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            note = orjson.loads(line)["checkpoint"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise InvalidRequest(f"line {n} of the checkpoint file is not a recorded checkpoint") from None
        if not isinstance(note, str):
            raise InvalidRequest(f"line {n} of the checkpoint file is not a recorded checkpoint")
        out.append((n, note))
    return out


async def verify(redis, stream: str, head_key: str, key: AuditKey | None = None,
                 checkpoints: list[tuple[int, str]] | None = None) -> VerifyResult:
    """Recompute the tree from the retained entries and prove it against the latest signed
    checkpoint, and against every recorded one in ``checkpoints`` (RFC 9162 consistency
    proofs); report the first thing that does not fit, naming the entries. ``key`` is the audit
    key (verified with the key-encryption key by the caller); None reads the stored public key.
    A trim racing the check is re-checked once from the new cut."""
    first = await _verify(redis, stream, head_key, key, checkpoints)
    if not first.ok:
        st = await TreeState.read(redis, tree_key(stream))
        if st.offset + st.base.size != first.trimmed:
            return await _verify(redis, stream, head_key, key, checkpoints)
    return first


async def _verify(redis, stream: str, head_key: str, key: AuditKey | None,
                  checkpoints: list[tuple[int, str]] | None) -> VerifyResult:
    st = await TreeState.read(redis, tree_key(stream))
    if key is None:
        key = await AuditKey.public_only(redis, f"{stream}:key", "")
    trimmed = st.offset + st.base.size

    def broken(problem: str, where: str, count: int = 0) -> VerifyResult:
        return VerifyResult(False, count, "", problem, where, trimmed)

    if key is None:
        return broken("no audit key: checkpoints cannot be checked", "key")
    if not st.checkpoint:
        # Nothing sealed yet (no sealer ran): everything is the unsealed tail, and a recorded
        # checkpoint (if any) shows the log was rolled back.
        cp = Checkpoint(key.origin, 0, EMPTY_ROOT, "")
    else:
        name = st.checkpoint.split("\n", 1)[0]
        try:
            cp = Checkpoint.open(st.checkpoint, name, key.public)
            if key.origin and cp.origin != key.origin:
                raise NoteError(f"origin {cp.origin!r} is not this log's {key.origin!r}")
        except NoteError as e:
            return broken(f"the latest checkpoint in Redis is not signed by the audit key ({e}): replaced or forged",
                          "checkpoint")
    recorded: list[tuple[int, Checkpoint]] = []
    for line, note in checkpoints or []:
        try:
            recorded.append((line, Checkpoint.open(note, cp.origin, key.public)))
        except NoteError as e:
            return broken(f"recorded checkpoint on line {line} is not signed by the audit key ({e}): replaced or forged",
                          f"checkpoint line {line}")
    leaves: list[bytes] = []
    frontier = st.base.copy()
    want = trimmed + 1
    count = 0
    ids: list[str] = []
    tail_first_ms = 0
    async for e in entries(redis, stream):
        if e.seq != want:
            kind = "removed" if e.seq > want else "inserted or reordered"
            return broken(f"entry {e.stream_id} has seq {e.seq} where {want} was expected (an entry was {kind})",
                          e.stream_id, count)
        if frontier.size < cp.size:
            frontier.append(e.leaf)
        elif not tail_first_ms:
            tail_first_ms = e.ms
        leaves.append(e.leaf)
        ids.append(e.stream_id)
        want, count = want + 1, count + 1
    head_seq = await length(redis, head_key)  # read after the entries: every script bumped it before its XADDs became visible
    if want - 1 > head_seq:
        return broken(f"the stream holds seq {want - 1} but the scripts sequenced only {head_seq}: entries were "
                      "appended outside the transition scripts", ids[-1] if ids else "end", count)
    tree = Tree(leaves, st.base)
    available = st.base.size + len(leaves)

    def seqs(lo: int, hi: int) -> str:
        """Name entries lo..hi (tree indexes, inclusive) by seq and stream id."""
        a, b = lo + st.offset + 1, hi + st.offset + 1
        first = ids[lo - st.base.size] if st.base.size <= lo < available else "trimmed"
        return f"seq {a}" + (f" (entry {first})" if a == b else f" to {b} (from entry {first})")

    # Recorded checkpoints, oldest first: the first whose root the log no longer gives, after one
    # it does, brackets the changed entries between them.
    good = st.base.size
    older = 0
    ordered = sorted(recorded, key=lambda x: x[1].size)
    for line, old in ordered:
        if old.size > cp.size:
            return broken(f"recorded checkpoint on line {line} (size {old.size}) is newer than the log's latest "
                          f"({cp.size}): the log was rolled back or its latest checkpoint replaced", "checkpoint", count)
        if old.size < st.base.size:
            older += 1  # below the trim: its leaves are gone (the trim checked them against an export)
            continue
        if old.size > available:
            break
        if tree.root(old.size) != old.root:
            return broken(f"{seqs(good, old.size - 1)} changed after the checkpoint of size {old.size} (line {line}, "
                          f"signed {old.time}) was published: an entry there was modified, removed, inserted or "
                          "reordered", seqs(good, old.size - 1), count)
        good = old.size
    if frontier.size < cp.size:
        return broken(f"the signed checkpoint covers {cp.size} entries but only {frontier.size} remain "
                      "(entries removed from the end)", "end", count)
    if frontier.root() != cp.root:
        return broken(f"{seqs(good, cp.size - 1)} do not match the latest signed checkpoint (size {cp.size}, "
                      f"signed {cp.time}): an entry was modified, removed, inserted or reordered",
                      seqs(good, cp.size - 1), count)
    # The formal statement: RFC 9162 consistency proofs from each recorded checkpoint to the latest.
    proven = 0
    for line, old in ordered:
        if old.size < st.base.size:
            continue
        if not verify_consistency(old.size, cp.size, old.root, cp.root, tree.consistency(old.size, cp.size)):
            return broken(f"no consistency proof from the checkpoint of size {old.size} (line {line}) to the latest",
                          f"checkpoint line {line}", count)
        proven += 1
    unsealed = max(0, head_seq - (cp.size + st.offset))
    age = max(0, int(time.time() * 1000) - tail_first_ms) if tail_first_ms and unsealed else 0
    at = cp.size - 1 - st.base.size
    sealed_id = ids[at] if at >= 0 else (st.base_id if cp.size else "")
    return VerifyResult(True, count, cp.root.hex(), trimmed=trimmed, sealed=cp.size, unsealed=unsealed,
                        tail_age_ms=age, checkpoints=proven, older=older, frontier=frontier.encode(),
                        sealed_id=sealed_id)


async def extend(redis, stream: str, head_key: str, good: VerifyResult, most: int = 5000,
                 key: AuditKey | None = None) -> VerifyResult | None:
    """``good`` (an ``ok`` result of :func:`verify`) carried forward cheaply: the entries sealed
    since are hashed onto its frontier and checked against the new signed checkpoint, and the
    tail is re-counted. None (then a full :func:`verify` decides and names what is wrong) when
    anything does not simply continue it: a trim, more than ``most`` new entries, an entry
    beside the scripts, a root that does not match. Never reports a break; it does not re-read
    old entries (the full check, every so often, does)."""
    st = await TreeState.read(redis, tree_key(stream))
    if not good.ok or st.offset + st.base.size != good.trimmed or not good.frontier:
        return None
    head = await length(redis, head_key)
    last = await newest(redis, stream, 1)
    if (last and last[0].seq != head) or head - good.seq > most or head < good.seq:
        return None
    if not st.checkpoint:
        return None if good.sealed else replace(good, entries=head - good.trimmed, unsealed=head - good.trimmed)
    if key is None:
        key = await AuditKey.public_only(redis, f"{stream}:key", "")
    if key is None:
        return None
    try:
        cp = Checkpoint.open(st.checkpoint, st.checkpoint.split("\n", 1)[0], key.public)
    except NoteError:
        return None
    if cp.size < good.sealed:
        return None
    frontier = Frontier.decode(good.frontier)
    sealed_id = good.sealed_id
    if cp.size > good.sealed:
        rows = await redis.xrange(stream, min="(" + good.sealed_id if good.sealed_id else "-", max="+",
                                  count=cp.size - good.sealed)
        for sid, fields in rows:
            e = Entry.from_stream(sid, fields)
            if e.seq != st.offset + frontier.size + 1:
                return None
            frontier.append(e.leaf)
            sealed_id = e.stream_id
        if frontier.size != cp.size or frontier.root() != cp.root:
            return None
    retained = head - good.trimmed
    return replace(good, entries=retained, head=cp.root.hex(), sealed=cp.size,
                   unsealed=max(0, head - (cp.size + st.offset)), frontier=frontier.encode(), sealed_id=sealed_id)


# ---------------------------------------------------------------------- proofs for one grant
BUNDLE_FORMAT = "jitgate-audit-proof/1"


async def prove(redis, stream: str, *, request_id: str | None = None, jti: str | None = None) -> dict:
    """The evidence bundle of one grant (named by its request id, or by its token's ``jti``):
    every retained entry of the request with an RFC 9162 inclusion proof against the latest
    signed checkpoint, which travels with them."""
    st = await TreeState.read(redis, tree_key(stream))
    if not st.checkpoint:
        raise Conflict("nothing is sealed yet: no checkpoint to prove against")
    cp = Checkpoint.parse_body(st.checkpoint.rpartition("\n\n")[0] + "\n")
    if jti and not request_id:
        needle = orjson.dumps(jti)
        async for e in entries(redis, stream):
            body = e.body() if needle in e.event else None
            if body and (body.get("data") or {}).get("jti") == jti:
                request_id = body.get("request_id")
                break
        if not request_id:
            raise InvalidRequest(f"no retained audit entry records the token {jti!r}")
    leaves: list[bytes] = []
    picked: list[tuple[int, bytes]] = []
    idx = st.base.size
    needle = orjson.dumps(request_id)
    async for e in entries(redis, stream):
        if idx >= cp.size:
            break
        leaves.append(e.leaf)
        if needle in e.event and _concerns(e.body(), request_id):
            picked.append((idx, e.event))
        idx += 1
    if not picked:
        raise InvalidRequest(f"no sealed audit entry concerns request {request_id!r} (trimmed, not yet sealed, or unknown)")
    tree = Tree(leaves, st.base)
    bundle = {"format": BUNDLE_FORMAT, "checkpoint": st.checkpoint, "request": request_id,
              "entries": [{"index": i, "event": ev.decode(), "path": [h.hex() for h in tree.inclusion(i, cp.size)]}
                          for i, ev in picked]}
    if jti:
        bundle["jti"] = jti
    return bundle


def _concerns(body: dict | None, request_id: str | None) -> bool:
    """Whether an event is about ``request_id`` (its own, or one of a sweep's batch)."""
    if not body or not request_id:
        return False
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    return body.get("request_id") == request_id or request_id in (data.get("ids") or ())


def bundle_bytes(bundle: dict) -> bytes:
    """The one byte string a bundle is written as (canonical JSON, one line)."""
    return orjson.dumps(bundle, option=orjson.OPT_SORT_KEYS) + b"\n"


@dataclass(frozen=True)
class BundleResult:
    ok: bool
    detail: str

    def __str__(self) -> str:
        return ("proof OK: " if self.ok else "proof BROKEN: ") + self.detail


def check_bundle(raw: bytes, vkey: str) -> BundleResult:
    """Verify a bundle offline with only the audit verifier key: its canonical form, the
    checkpoint's signature, and each entry's inclusion proof; any changed byte fails."""
    from .translog import parse_verifier_key  # noqa: PLC0415

    try:
        name, public = parse_verifier_key(vkey)
    except NoteError as e:
        return BundleResult(False, f"the audit key: {e}")
    try:
        bundle = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return BundleResult(False, "not JSON")
    if not isinstance(bundle, dict) or bundle_bytes(bundle) != raw:
        return BundleResult(False, "not a bundle as `jitgate audit prove` writes it (changed?)")
    if bundle.get("format") != BUNDLE_FORMAT or set(bundle) - {"format", "checkpoint", "entries", "request", "jti"}:
        return BundleResult(False, f"not a {BUNDLE_FORMAT} bundle")
    try:
        cp = Checkpoint.open(str(bundle.get("checkpoint")), name, public)
    except NoteError as e:
        return BundleResult(False, f"the checkpoint: {e}")
    rid, jti = bundle.get("request"), bundle.get("jti")
    items = bundle.get("entries")
    if not isinstance(items, list) or not items or not isinstance(rid, str):
        return BundleResult(False, "the bundle names no grant or holds no entries")
    jti_seen = jti is None
    for n, item in enumerate(items, 1):
        try:
            index, ev, path = item["index"], item["event"].encode(), [bytes.fromhex(h) for h in item["path"]]
        except (KeyError, TypeError, AttributeError, ValueError):
            return BundleResult(False, f"entry {n} is malformed")
        if not isinstance(index, int) or set(item) != {"index", "event", "path"}:
            return BundleResult(False, f"entry {n} is malformed")
        try:
            body = orjson.loads(ev)
        except orjson.JSONDecodeError:
            return BundleResult(False, f"entry {n} is not an audit event")
        if not isinstance(body, dict) or not _concerns(body, rid):
            return BundleResult(False, f"entry {n} does not concern request {rid}")
        if jti is not None and isinstance(body.get("data"), dict) and body["data"].get("jti") == jti:
            jti_seen = True
        if not verify_inclusion(leaf_hash(ev), index, cp.size, path, cp.root):
            return BundleResult(False, f"entry {n} (leaf {index}) is not in the tree the checkpoint signs")
    if not jti_seen:
        return BundleResult(False, f"no entry records the token {jti}")
    return BundleResult(True, f"{len(items)} entries of request {rid} are in the "
                              f"log {cp.origin} of {cp.size} entries (checkpoint signed {cp.time})")


# ---------------------------------------------------------------------- export files
class ExportError(InvalidRequest):
    """An export file that is not a well-formed, self-consistent part of the audit log."""


async def export(redis, stream: str, out: TextIO, head_key: str | None = None) -> int:
    """Write every retained entry as one JSON object per line (``id``, ``seq``, ``leaf`` hash,
    ``event`` as the exact string sealed); return the count."""
    n = 0
    async for e in entries(redis, stream):
        out.write(orjson.dumps(e.to_json()).decode() + "\n")
        n += 1
    return n


@dataclass(frozen=True)
class ExportResult:
    entries: int
    first_seq: int
    last_seq: int
    root: str = ""  # the tree root over the file's entries, when it starts at seq 1

    def __str__(self) -> str:
        if not self.entries:
            return "export holds no entries"
        text = f"export OK: {self.entries} entries, seq {self.first_seq} to {self.last_seq}"
        return text + (f"; tree root over them {self.root}" if self.root else "")


def read_export(lines: Iterable[str]) -> Iterator[Entry]:
    """The entries of an export file, each checked against its leaf hash and following the
    line before; raises :class:`ExportError` naming the first line that does not fit."""
    last: Entry | None = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            seq, leaf, ev = row["seq"], row["leaf"], row["event"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            raise ExportError(f"line {n} of the export is not an audit entry ({e.__class__.__name__})") from None
        if not (isinstance(seq, int) and seq >= 1 and isinstance(ev, str) and isinstance(leaf, str)
                and _HEX64.fullmatch(leaf)):
            raise ExportError(f"line {n} of the export is not an audit entry (seq, leaf or event malformed)")
        e = Entry(str(row.get("id", "")), seq, ev.encode())
        if e.leaf.hex() != leaf:
            raise ExportError(f"line {n} of the export (seq {seq}) does not match its leaf hash (modified)")
        if last is not None and seq != last.seq + 1:
            raise ExportError(f"line {n} of the export (seq {seq}) does not continue seq {last.seq} "
                              "(entries missing or reordered)")
        last = e
        yield e


def verify_export(lines: Iterable[str]) -> ExportResult:
    """Verify an export file on its own (no Redis): each line's leaf hash and the sequence."""
    first = last = None
    frontier = Frontier()
    count = 0
    for e in read_export(lines):
        first = first or e
        last, count = e, count + 1
        frontier.append(e.leaf)
    if first is None or last is None:
        return ExportResult(0, 0, 0)
    return ExportResult(count, first.seq, last.seq, frontier.root().hex() if first.seq == 1 else "")


# ---------------------------------------------------------------------- trim
@dataclass(frozen=True)
class TrimPlan:
    """The entries a trim removes: seq ``first_seq`` to ``last_seq`` (stream ids ``first_id``
    to ``last_id``); ``frontier`` is the tree's compact state after them (kept)."""

    base_size: int
    first_seq: int
    first_id: str
    last_seq: int
    last_id: str
    frontier: Frontier

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1

    @property
    def last_hash(self) -> str:
        return self.frontier.root().hex()

    def __str__(self) -> str:
        return (f"{self.count} entries, seq {self.first_seq} to {self.last_seq} (appended "
                f"{_id_time(self.first_id)} to {_id_time(self.last_id)}); the tree's compact state after them "
                f"(root {self.last_hash[:16]}… of {self.frontier.size} leaves) is kept")


def _id_time(stream_id: str) -> str:
    ms = int(stream_id.split("-")[0])
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_before(text: str) -> int | datetime:
    """``--before``: a seq (entries below it go) or an ISO 8601 time (entries appended before
    it go; a time without zone is UTC)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"--before takes a seq (e.g. 120000) or an ISO 8601 time "
                             f"(e.g. 2026-10-01T00:00:00Z), got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


async def plan_trim(redis, stream: str, head_key: str, before: int | datetime, exported: Iterable[str],
                    key: AuditKey | None = None) -> TrimPlan:
    """Which entries ``before`` removes, refusing unless the log verifies, a signed checkpoint
    covers every one of them, and the export file holds each with the same event."""
    result = await verify(redis, stream, head_key, key)
    if not result.ok:
        raise Conflict(f"the audit log does not verify ({result.problem}, at {result.bad_entry}); "
                       "nothing trimmed: investigate first")
    st = await TreeState.read(redis, tree_key(stream))
    cut_us = (before - _EPOCH) // timedelta(microseconds=1) if isinstance(before, datetime) else None
    export_iter = read_export(exported)
    pending: Entry | None = None
    first: Entry | None = None
    last: Entry | None = None
    frontier = st.base.copy()
    async for e in entries(redis, stream):
        inside = e.seq < before if cut_us is None else e.ms * 1000 < cut_us
        if not inside:
            break
        if e.seq > result.sealed + st.offset:
            raise InvalidRequest(f"seq {e.seq} is not covered by a signed checkpoint yet (the latest covers "
                                 f"{result.sealed + st.offset}): trim less, or wait for the sealer; nothing trimmed")
        while pending is None or pending.seq < e.seq:
            pending = next(export_iter, None)
            if pending is None:
                done = f"ends at seq {last.seq}" if last else "holds nothing to remove"
                raise InvalidRequest(
                    f"the export file does not cover the entries to remove: it {done}, but seq {e.seq} would be "
                    f"removed; export again (`jitgate audit export --out FILE`) or trim less; nothing trimmed")
        if pending.seq > e.seq:
            raise InvalidRequest(f"the export file does not cover the entries to remove: seq {e.seq} would be removed, "
                                 f"but the export starts at seq {pending.seq}; "
                                 "export again (`jitgate audit export --out FILE`); nothing trimmed")
        if pending.event != e.event:
            raise InvalidRequest(f"the export file does not match the audit log at seq {e.seq}: it is not an "
                                 "export of this log; nothing trimmed")
        frontier.append(e.leaf)
        first = first or e
        last = e
    if first is None or last is None:
        raise InvalidRequest(f"nothing to trim: no retained entry is before "
                             f"{before if cut_us is None else before.isoformat()}")
    return TrimPlan(st.base.size, first.seq, first.stream_id, last.seq, last.stream_id, frontier)


# KEYS: stream, head, tree. ARGV: expected base size, first seq, last id, last seq, new base
# frontier, events. Re-checks what the plan saw, removes exactly the entries up to the last
# one, keeps the compact state at the cut and appends the event.
_TRIM_BODY = """
local base = tonumber(redis.call('HGET', KEYS[3], 'base') and string.match(redis.call('HGET', KEYS[3], 'base'), '^(%d+):') or '0')
if base ~= tonumber(ARGV[1]) then return 'stale' end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #head == 0 then return 'stale' end
local function field(entry, name)
  local f = entry[2]
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
end
if field(head[1], 'seq') ~= ARGV[2] then return 'stale' end
local last = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if #last ~= 1 or field(last[1], 'seq') ~= ARGV[4] then return 'stale' end
local nxt = redis.call('XRANGE', KEYS[1], '(' .. ARGV[3], '+', 'COUNT', 1)
local minid
if #nxt == 1 then
  minid = nxt[1][1]
else
  local ms, s = string.match(ARGV[3], '^(%d+)-(%d+)$')
  minid = ms .. '-' .. tostring(tonumber(s) + 1)
end
redis.call('XTRIM', KEYS[1], 'MINID', minid)
redis.call('HSET', KEYS[3], 'base', ARGV[5], 'base_id', ARGV[3])
audit_append(KEYS[1], KEYS[2], cjson.decode(ARGV[6]))
return 'ok'
"""


async def trim(redis, stream: str, head_key: str, plan: TrimPlan, *, at: str, actor: dict, **data) -> None:
    """Carry out ``plan`` atomically: remove its entries, keep the tree's compact state at the
    cut, and append an ``audit.trimmed`` event recording it. Refuses (:class:`Conflict`) when
    the start of the log changed since the plan was made."""
    from .store import events_arg, with_prelude  # noqa: PLC0415 - the shared Lua prelude

    ev = event(TRIMMED, at, None, actor, first_seq=plan.first_seq, through_seq=plan.last_seq,
               through_root=plan.last_hash, frontier=plan.frontier.encode(), entries=plan.count, **data)
    script = redis.register_script(with_prelude(_TRIM_BODY))
    verdict = _s(await script(keys=[stream, head_key, tree_key(stream)], args=[
        plan.base_size, plan.first_seq, plan.last_id, plan.last_seq, plan.frontier.encode(), events_arg([ev])]))
    if verdict != "ok":
        raise Conflict("the start of the audit log changed since the check (another trim?); nothing trimmed")
