"""The tamper-evident audit log: a Redis Stream whose entries are hash-chained.

Each entry holds ``seq``, ``event`` (canonical JSON) and ``hash`` = SHA-256(prev || SHA-256(event)
|| seq as u64 big-endian), where ``prev`` is the previous entry's hash (zeros for the first).
``prev`` is not stored (it would repeat the previous entry's hash); readers carry it along,
and exports include it so an export verifies line by line. Entries are
appended only by the transition scripts (see ``store.py``), in the same atomic step as
the state change they record. ``verify`` recomputes the chain and names the first entry
that does not fit; ``export`` writes JSON Lines.

Retention: ``trim`` removes the oldest entries, and only entries an export file holds
(every removed entry's hash must match the export's, and the export must verify on its
own). The same script records the **anchor** in the chain head (``base_seq``, ``base_hash``:
the last removed entry) and appends an ``audit.trimmed`` event naming it, so the retained
chain verifies from the anchor, and an anchor no trim recorded (entries removed from the
start by hand) is reported as a break.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Iterable, Iterator, TextIO

import orjson

from .errors import Conflict, InvalidRequest

GENESIS = "0" * 64
TRIMMED = "audit.trimmed"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
    issued sign-in link), chained like every other entry by the store's append script; raises
    :class:`~broker.errors.AuditError` (or ``Unavailable``) when it cannot be written. The way
    code outside the core's transitions writes to the audit log."""
    await store.append([event(kind, at, request_id, actor, **data)])


# ---------------------------------------------------------------------- the chain
def entry_hash(prev: str, event: bytes, seq: int) -> str:
    """The chain hash of one entry."""
    return hashlib.sha256(bytes.fromhex(prev) + hashlib.sha256(event).digest() + seq.to_bytes(8, "big")).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One entry of the chain as stored: ``event`` holds the exact bytes that were hashed
    (``seq`` is -1 when the stored seq is not a number: such an entry never verifies)."""

    stream_id: str
    seq: int
    prev: str
    hash: str
    event: bytes

    @classmethod
    def from_stream(cls, stream_id, fields: dict, prev: str) -> "Entry":
        """An entry from a stream reply (``fields`` keyed by bytes or str); ``prev`` is used
        unless the entry stores its own (entries written before ``prev`` was dropped do)."""
        f = {_s(k): v for k, v in fields.items()}
        try:
            seq = int(_s(f.get("seq", b"")))
        except ValueError:
            seq = -1
        ev = f.get("event", b"")
        return cls(_s(stream_id), seq, _s(f["prev"]) if "prev" in f else prev, _s(f.get("hash", b"")),
                   ev if isinstance(ev, bytes) else str(ev).encode())

    def body(self) -> dict | None:
        """The event as a dict (``type``, ``at``, and ``request_id``, ``actor``, ``data`` when
        set), or None when the stored bytes are not a JSON object."""
        try:
            body = orjson.loads(self.event)
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    def to_json(self) -> dict:
        return {
            "id": self.stream_id,
            "seq": self.seq,
            "prev": self.prev,
            "hash": self.hash,
            "event": orjson.loads(self.event),
        }


@dataclass(frozen=True)
class Anchor:
    """Where the retained chain starts: the seq and hash of the last trimmed entry
    (0 and the genesis hash when nothing was ever trimmed)."""

    seq: int = 0
    hash: str = GENESIS


@dataclass(frozen=True)
class VerifyResult:
    """``entries`` counts the entries checked (those retained); ``trimmed`` entries before
    them were removed by ``audit trim``, and the retained chain starts from hash ``base``."""

    ok: bool
    entries: int
    head: str
    problem: str | None = None
    bad_entry: str | None = None
    trimmed: int = 0
    base: str = GENESIS

    @property
    def seq(self) -> int:
        """The seq of the last entry checked (the chain head when ``ok``)."""
        return self.trimmed + self.entries

    def __str__(self) -> str:
        if self.ok:
            text = f"audit chain OK: {self.entries} entries, head {self.head[:16]}…"
            if self.trimmed:
                text += (f"; {self.trimmed} older entries trimmed after export, the retained chain starts "
                         f"at seq {self.trimmed + 1} after hash {self.base}")
            return text
        return f"audit chain BROKEN at entry {self.bad_entry}: {self.problem} (checked {self.entries} entries before it)"


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def anchor(redis, head_key: str) -> Anchor:
    """The anchor recorded by the last ``trim`` (none: the genesis)."""
    return (await _head(redis, head_key))[0]


async def _head(redis, head_key: str) -> tuple[Anchor, int, str]:
    """The anchor and the chain head (seq, hash), read at one instant."""
    seq, digest, base_seq, base_hash = await redis.hmget(head_key, "seq", "hash", "base_seq", "base_hash")
    base = Anchor(int(base_seq), _s(base_hash)) if base_seq else Anchor()
    return base, int(seq) if seq else 0, _s(digest) if digest else GENESIS


async def entries(redis, stream: str, batch: int = 1000, prev: str = GENESIS) -> AsyncIterator[Entry]:
    """Every entry, oldest first, read in bounded batches; ``prev`` is the hash of the entry
    before (as stored by entries written before ``prev`` was dropped from the stream). Give the
    anchor's hash as ``prev`` when the stream was trimmed."""
    start = "-"
    while True:
        chunk = await redis.xrange(stream, min=start, max="+", count=batch)
        if not chunk:
            return
        for sid, fields in chunk:
            entry = Entry.from_stream(sid, fields, prev)
            prev = entry.hash
            yield entry
        if len(chunk) < batch:
            return
        start = "(" + _s(chunk[-1][0])


async def newest(redis, stream: str, count: int) -> list[Entry]:
    """The newest ``count`` entries, newest first (one bounded read). Each one's ``prev`` is the
    hash of the entry before it in the list; the oldest one's is '' unless it stores its own."""
    rows = await redis.xrevrange(stream, count=count)
    out: list[Entry] = []
    for i, (sid, fields) in enumerate(rows):
        older = rows[i + 1][1] if i + 1 < len(rows) else {}
        prev = older.get(b"hash", older.get("hash", b""))
        out.append(Entry.from_stream(sid, fields, _s(prev)))
    return out


async def length(redis, head_key: str) -> int:
    """The chain's length (the seq of its head, trimmed entries included): it grows with
    every append, so readers use it as a change counter."""
    raw = await redis.hget(head_key, "seq")
    return int(raw) if raw else 0


async def extend(redis, stream: str, head_key: str, good: VerifyResult, most: int = 5000) -> VerifyResult | None:
    """``good`` (an ``ok`` result of :func:`verify`) extended by the entries appended since,
    checked against it, or None when the stream's end does not simply continue it or more than
    ``most`` entries were appended (then a full :func:`verify` decides). Never reports a
    break: it catches appends that do not chain on, not changes to old entries."""
    raw_seq, raw_base = await redis.hmget(head_key, "seq", "base_seq")
    head_seq = int(raw_seq) if raw_seq else 0
    if (int(raw_base) if raw_base else 0) != good.trimmed:
        return None  # trimmed since: a full verification starts from the new anchor
    new = head_seq - good.seq
    if not 0 <= new <= most:
        return None
    # The newest entries, plus the last one already verified: it must still end the good chain
    # (with none retained, the chain ends at the anchor, which is no longer in the stream).
    rows = list(reversed(await redis.xrevrange(stream, count=new + 1)))
    if good.entries == 0:
        rows = [None, *rows]
    if len(rows) != new + 1:
        return None
    prev, seq = good.head, good.seq
    for i, row in enumerate(rows):
        if row is None:
            continue
        f = {_s(k): v for k, v in row[1].items()}
        try:
            if i == 0:
                if int(f["seq"]) != seq or _s(f["hash"]) != prev:
                    return None
                continue
            seq += 1
            if int(f["seq"]) != seq or ("prev" in f and _s(f["prev"]) != prev):
                return None
            digest = _s(f["hash"])
        except (KeyError, ValueError):
            return None
        if entry_hash(prev, f["event"], seq) != digest:
            return None
        prev = digest
    head_hash = await redis.hget(head_key, "hash")
    if seq != head_seq or head_hash is None or _s(head_hash) != prev:
        return None
    return good if new == 0 else VerifyResult(True, good.entries + new, prev, trimmed=good.trimmed, base=good.base)


def _trim_record(event: bytes) -> tuple[int, str] | None:
    """(through_seq, through_hash) when ``event`` is an ``audit.trimmed`` event."""
    if TRIMMED.encode() not in event:  # cheap filter before parsing
        return None
    try:
        body = orjson.loads(event)
        data = body.get("data") or {}
        if body.get("type") == TRIMMED:
            return int(data["through_seq"]), str(data["through_hash"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return None


async def verify(redis, stream: str, head_key: str) -> VerifyResult:
    """Recompute the chain from the anchor; report the first entry that was modified, removed
    or inserted. The head is read first, so entries appended meanwhile are simply checked too;
    a trim racing with the check is re-checked once from the new anchor."""
    first = await _verify(redis, stream, *(await _head(redis, head_key)))
    if not first.ok:
        state = await _head(redis, head_key)
        if (state[0].seq, state[0].hash) != (first.trimmed, first.base):
            return await _verify(redis, stream, *state)
    return first


async def _verify(redis, stream: str, base: Anchor, head_seq: int, head_hash: str) -> VerifyResult:
    prev, expected_seq, count = base.hash, base.seq + 1, 0
    recorded = base.seq == 0  # a trim must have recorded the anchor in the retained chain

    def broken(problem: str, where: str) -> VerifyResult:
        return VerifyResult(False, count, prev, problem, where, base.seq, base.hash)

    def off_head() -> VerifyResult:
        return broken(f"the chain head says {head_seq} entries ending in {head_hash[:16]}… "
                      "(entries removed from the end)", "head")

    if head_seq == base.seq and head_hash != base.hash:
        return off_head()
    async for e in entries(redis, stream, prev=base.hash):
        if e.seq != expected_seq:
            return broken(f"sequence {e.seq} where {expected_seq} was expected (entry removed or inserted)", e.stream_id)
        if e.prev != prev:
            return broken("its 'prev' does not match the previous entry's hash", e.stream_id)
        if entry_hash(prev, e.event, e.seq) != e.hash:
            return broken("its content does not match its hash (entry modified)", e.stream_id)
        if e.seq == head_seq and e.hash != head_hash:
            return off_head()
        if not recorded and _trim_record(e.event) == (base.seq, base.hash):
            recorded = True
        prev, expected_seq, count = e.hash, expected_seq + 1, count + 1
    if base.seq + count < head_seq:
        return off_head()
    if not recorded:
        return broken(f"the chain starts after seq {base.seq}, but no '{TRIMMED}' entry records that trim "
                      "(entries removed from the start)", "anchor")
    return VerifyResult(True, count, prev, trimmed=base.seq, base=base.hash)


async def export(redis, stream: str, out: TextIO, head_key: str | None = None) -> int:
    """Write every retained entry as one JSON object per line; return the count. After a trim
    the first line's ``prev`` is the anchor's hash (the end of the export made before it)."""
    head_key = head_key or f"{stream}:head"
    start = await anchor(redis, head_key)
    n = 0
    async for e in entries(redis, stream, prev=start.hash):
        if n == 0 and e.seq != start.seq + 1:  # trimmed between reading the anchor and the stream
            now = await anchor(redis, head_key)
            if e.seq == now.seq + 1:
                e = replace(e, prev=now.hash)
        out.write(orjson.dumps(e.to_json()).decode() + "\n")
        n += 1
    return n


# ---------------------------------------------------------------------- export files
class ExportError(InvalidRequest):
    """An export file that is not a well-formed, self-consistent part of an audit chain."""


@dataclass(frozen=True)
class ExportResult:
    """What an export file holds: ``entries`` consecutive entries, seq ``first_seq`` to
    ``last_seq``, chained from hash ``start`` and ending at hash ``end``."""

    entries: int
    first_seq: int
    last_seq: int
    start: str
    end: str

    def __str__(self) -> str:
        if not self.entries:
            return "export holds no entries"
        origin = "the genesis" if self.first_seq == 1 and self.start == GENESIS else \
            f"hash {self.start} (seq {self.first_seq - 1}, not in this file)"
        return (f"export OK: {self.entries} entries, seq {self.first_seq} to {self.last_seq}, chained from "
                f"{origin}; it ends at hash {self.end}")


def read_export(lines: Iterable[str]) -> Iterator[Entry]:
    """The entries of an export file, each checked against its own hash and chained to the
    line before; raises :class:`ExportError` naming the first line that does not fit."""
    last: Entry | None = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            seq, prev, digest, event = row["seq"], row["prev"], row["hash"], row["event"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            raise ExportError(f"line {n} of the export is not an audit entry ({e.__class__.__name__})") from None
        if not (isinstance(seq, int) and seq >= 1 and isinstance(event, dict)
                and all(isinstance(h, str) and _HEX64.fullmatch(h) for h in (prev, digest))):
            raise ExportError(f"line {n} of the export is not an audit entry (seq, prev, hash or event malformed)")
        raw = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
        if entry_hash(prev, raw, seq) != digest:
            raise ExportError(f"line {n} of the export (seq {seq}) does not match its hash (modified)")
        if last is not None and (seq != last.seq + 1 or prev != last.hash):
            raise ExportError(f"line {n} of the export (seq {seq}) does not continue seq {last.seq} "
                              "(entries missing, reordered or from another chain)")
        last = Entry(str(row.get("id", "")), seq, prev, digest, raw)
        yield last


def verify_export(lines: Iterable[str]) -> ExportResult:
    """Verify an export file on its own (no Redis): every line's hash and the links between them."""
    first = last = None
    count = 0
    for e in read_export(lines):
        first = first or e
        last, count = e, count + 1
    if first is None:
        return ExportResult(0, 0, 0, GENESIS, GENESIS)
    return ExportResult(count, first.seq, last.seq, first.prev, last.hash)


# ---------------------------------------------------------------------- trim
@dataclass(frozen=True)
class TrimPlan:
    """The entries a trim removes: seq ``first_seq`` to ``last_seq`` (stream ids ``first_id``
    to ``last_id``); ``last_hash`` becomes the anchor; ``base`` is the anchor before."""

    base: Anchor
    first_seq: int
    first_id: str
    last_seq: int
    last_id: str
    last_hash: str

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1

    def __str__(self) -> str:
        return (f"{self.count} entries, seq {self.first_seq} to {self.last_seq} (appended "
                f"{_id_time(self.first_id)} to {_id_time(self.last_id)}); the retained chain will start after hash "
                f"{self.last_hash}")


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


async def plan_trim(redis, stream: str, head_key: str, before: int | datetime, exported: Iterable[str]) -> TrimPlan:
    """Which entries ``before`` removes, refusing (:class:`InvalidRequest`) unless the export
    file holds every one of them with the same hash the stream has, and the chain verifies."""
    result = await verify(redis, stream, head_key)
    if not result.ok:
        raise Conflict(f"the audit chain does not verify ({result.problem}, at {result.bad_entry}); "
                       "nothing trimmed: investigate first")
    base = Anchor(result.trimmed, result.base)
    # The cut in whole microseconds (no float rounding): an entry goes when its id's millisecond is earlier.
    cut_us = (before - _EPOCH) // timedelta(microseconds=1) if isinstance(before, datetime) else None
    export_iter = read_export(exported)
    pending: Entry | None = None
    first: Entry | None = None
    last: Entry | None = None
    async for e in entries(redis, stream, prev=base.hash):
        inside = e.seq < before if cut_us is None else int(e.stream_id.split("-")[0]) * 1000 < cut_us
        if not inside:
            break
        # The export line for this seq: skip lines older than the anchor (an export made before
        # an earlier trim); a missing seq means the export does not cover this entry.
        while pending is None or pending.seq < e.seq:
            pending = next(export_iter, None)
            if pending is None:
                done = f"ends at seq {last.seq}" if last else f"holds nothing after seq {base.seq}"
                raise InvalidRequest(
                    f"the export file does not cover the entries to remove: it {done}, but seq {e.seq} would be "
                    f"removed; export again (`jitgate audit export --out FILE`) or trim less "
                    f"(--before {last.seq + 1 if last else base.seq + 1}); nothing trimmed")
        if pending.seq > e.seq:
            raise InvalidRequest(f"the export file does not cover the entries to remove: seq {e.seq} would be removed, "
                                 f"but the export starts at seq {pending.seq}; "
                                 "export again (`jitgate audit export --out FILE`); nothing trimmed")
        if pending.hash != e.hash:
            raise InvalidRequest(f"the export file does not match the audit log at seq {e.seq} (its hash "
                                 f"{pending.hash[:16]}…, the log's {e.hash[:16]}…): it is not an export of this log; "
                                 "nothing trimmed")
        first = first or e
        last = e
    if first is None or last is None:
        raise InvalidRequest(f"nothing to trim: no retained entry is before {before if cut_us is None else before.isoformat()}"
                             f" (the retained chain starts at seq {base.seq + 1})")
    return TrimPlan(base, first.seq, first.stream_id, last.seq, last.stream_id, last.hash)


# KEYS: stream, head. ARGV: expected base seq, first seq, last id, last seq, last hash, events.
# Re-checks what the plan saw (no other trim since, the same first and last entries), then
# removes exactly the entries up to the last one, records the anchor and appends the event.
_TRIM_BODY = """
local base = tonumber(redis.call('HGET', KEYS[2], 'base_seq') or '0')
if base ~= tonumber(ARGV[1]) then return 'stale' end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #head == 0 then return 'stale' end
local function field(entry, name)
  local f = entry[2]
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
end
if field(head[1], 'seq') ~= ARGV[2] then return 'stale' end
local last = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if #last ~= 1 or field(last[1], 'seq') ~= ARGV[4] or field(last[1], 'hash') ~= ARGV[5] then return 'stale' end
local nxt = redis.call('XRANGE', KEYS[1], '(' .. ARGV[3], '+', 'COUNT', 1)
local minid
if #nxt == 1 then
  minid = nxt[1][1]
else
  local ms, s = string.match(ARGV[3], '^(%d+)-(%d+)$')
  minid = ms .. '-' .. tostring(tonumber(s) + 1)
end
redis.call('XTRIM', KEYS[1], 'MINID', minid)
redis.call('HSET', KEYS[2], 'base_seq', ARGV[4], 'base_hash', ARGV[5])
audit_append(KEYS[1], KEYS[2], cjson.decode(ARGV[6]))
return 'ok'
"""


async def trim(redis, stream: str, head_key: str, plan: TrimPlan, *, at: str, actor: dict, **data) -> None:
    """Carry out ``plan`` atomically: remove its entries, record the anchor, and append an
    ``audit.trimmed`` event naming it (with ``data``, e.g. the export's digest). Refuses
    (:class:`Conflict`) when the start of the log changed since the plan was made."""
    from .store import events_arg, with_prelude  # noqa: PLC0415 - the shared Lua prelude

    ev = event(TRIMMED, at, None, actor, first_seq=plan.first_seq, through_seq=plan.last_seq,
               through_hash=plan.last_hash, entries=plan.count, **data)
    script = redis.register_script(with_prelude(_TRIM_BODY))
    verdict = _s(await script(keys=[stream, head_key], args=[
        plan.base.seq, plan.first_seq, plan.last_id, plan.last_seq, plan.last_hash, events_arg([ev])]))
    if verdict != "ok":
        raise Conflict("the start of the audit log changed since the check (another trim?); nothing trimmed")
