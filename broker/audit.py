"""The tamper-evident audit log: a Redis Stream whose entries are hash-chained.

Each entry holds ``seq``, ``event`` (canonical JSON) and ``hash`` = SHA-256(prev || SHA-256(event)
|| seq as u64 big-endian), where ``prev`` is the previous entry's hash (zeros for the first).
``prev`` is not stored (it would repeat the previous entry's hash); readers carry it along,
and exports include it so an export verifies line by line. Entries are
appended only by the transition scripts (see ``store.py``), in the same atomic step as
the state change they record. ``verify`` recomputes the chain and names the first entry
that does not fit; ``export`` writes JSON Lines.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import AsyncIterator, TextIO

import orjson

GENESIS = "0" * 64


def entry_hash(prev: str, event: bytes, seq: int) -> str:
    """The chain hash of one entry."""
    return hashlib.sha256(bytes.fromhex(prev) + hashlib.sha256(event).digest() + seq.to_bytes(8, "big")).hexdigest()


@dataclass(frozen=True)
class Entry:
    stream_id: str
    seq: int
    prev: str
    hash: str
    event: bytes

    def to_json(self) -> dict:
        return {
            "id": self.stream_id,
            "seq": self.seq,
            "prev": self.prev,
            "hash": self.hash,
            "event": orjson.loads(self.event),
        }


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    head: str
    problem: str | None = None
    bad_entry: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain OK: {self.entries} entries, head {self.head[:16]}…"
        return f"audit chain BROKEN at entry {self.bad_entry}: {self.problem} (checked {self.entries} entries before it)"


async def entries(redis, stream: str, batch: int = 1000) -> AsyncIterator[Entry]:
    """Every entry, oldest first, read in bounded batches; ``prev`` is the hash of the entry
    before (as stored by entries written before ``prev`` was dropped from the stream)."""
    start = "-"
    prev = GENESIS
    while True:
        chunk = await redis.xrange(stream, min=start, max="+", count=batch)
        if not chunk:
            return
        for sid, fields in chunk:
            sid = sid.decode() if isinstance(sid, bytes) else sid
            f = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}

            def s(name):
                v = f.get(name, b"")
                return v.decode() if isinstance(v, bytes) else str(v)

            try:
                seq = int(s("seq"))
            except ValueError:
                seq = -1
            ev = f.get("event", b"")
            entry = Entry(sid, seq, s("prev") if "prev" in f else prev, s("hash"), ev if isinstance(ev, bytes) else str(ev).encode())
            prev = entry.hash
            yield entry
        if len(chunk) < batch:
            return
        last = chunk[-1][0]
        last = last.decode() if isinstance(last, bytes) else last
        start = "(" + last


async def verify(redis, stream: str, head_key: str) -> VerifyResult:
    """Recompute the whole chain; report the first entry that was modified, removed or inserted."""
    prev, expected_seq, count = GENESIS, 1, 0
    async for e in entries(redis, stream):
        if e.seq != expected_seq:
            return VerifyResult(False, count, prev, f"sequence {e.seq} where {expected_seq} was expected (entry removed or inserted)", e.stream_id)
        if e.prev != prev:
            return VerifyResult(False, count, prev, "its 'prev' does not match the previous entry's hash", e.stream_id)
        if entry_hash(prev, e.event, e.seq) != e.hash:
            return VerifyResult(False, count, prev, "its content does not match its hash (entry modified)", e.stream_id)
        prev, expected_seq, count = e.hash, expected_seq + 1, count + 1
    head = await redis.hmget(head_key, "seq", "hash")
    head_seq = int(head[0]) if head[0] else 0
    head_hash = head[1].decode() if head[1] else GENESIS
    if head_seq != count or head_hash != prev:
        return VerifyResult(False, count, prev, f"the chain head says {head_seq} entries ending in {head_hash[:16]}… (entries removed from the end)", "head")
    return VerifyResult(True, count, prev)


async def export(redis, stream: str, out: TextIO) -> int:
    """Write every entry as one JSON object per line; return the count."""
    n = 0
    async for e in entries(redis, stream):
        out.write(orjson.dumps(e.to_json()).decode() + "\n")
        n += 1
    return n
