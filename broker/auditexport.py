"""Audit export (issue 18.7): the sealed audit entries, as the proofs cover them, for a SIEM.

* **Only sealed entries.** :func:`read_sealed` reads the entries after a cursor up to the last
  one the sealer integrated into the tree (``last_id`` of ``{prefix}audit:tree``, written in the
  same compare-and-set as the signed checkpoint that covers it), each with its RFC 9162 leaf
  index (``seq - 1 - offset``): a SIEM that receives an entry can ask for its inclusion proof,
  and drops a duplicate by its leaf index.
* **Cursors.** A cursor is ``<seq>:<stream id>`` of the last entry delivered (``0:0-0`` is the
  start). Reading resumes strictly after it, so a consumer that persists the cursor *after* it
  has handed a batch on gets every entry at least once. An entry trimmed before it was read is
  a gap: reported (logged, counted), never hidden.
* **Formats.** ``json``: the entry as stored (``id``, ``seq``, ``leaf``, ``event`` — the exact
  string sealed, so ``jitgate audit verify --file`` checks the lines) plus ``leaf_index``.
  ``ocsf``: one OCSF 1.3 event per entry (:func:`ocsf_record`; the class table is in
  ``docs/audit-export.md``), the exact sealed event kept in ``raw_data``.
* **The export sink.** :class:`Exporter` forwards sealed entries to one destination (an HTTP
  collector: POST of JSON Lines; syslog over UDP or a local datagram socket), at least once,
  with its cursor in Redis (``{prefix}audit:export:<destination id>``) advanced only after the
  destination took the batch; a failure is retried with backoff. It runs on the replica that
  holds the scheduler lease, in its own task: it reads Redis and never holds up sealing. How far
  it lags shows in ``/metrics`` (``jitgate_audit_export_lag_entries``/``_seconds``) and in the
  log once it passes ``lag_warn_s``.

What it does not do: a syslog datagram that the network drops is not seen (UDP and datagram
sockets say nothing back); use the HTTP collector where every entry must be acknowledged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson

from .audit import Entry, TreeState, tree_key
from .errors import ConfigError, InvalidRequest
from .outage import Outage

log = logging.getLogger("jitgate.audit.export")

START = "0:0-0"
_CURSOR = re.compile(r"(\d+):(\d+-\d+)")
FORMATS = ("json", "ocsf")
OCSF_VERSION = "1.3.0"


# ---------------------------------------------------------------------- cursors and reading
@dataclass(frozen=True)
class Cursor:
    """Where a reader stands: the seq and stream id of the last entry it delivered."""

    seq: int = 0
    stream_id: str = "0-0"

    def __str__(self) -> str:
        return f"{self.seq}:{self.stream_id}"

    @classmethod
    def parse(cls, text: str | bytes | None) -> "Cursor":
        """A cursor as :meth:`__str__` wrote it (None or empty: the start); raises
        :class:`~broker.errors.InvalidRequest` on anything else."""
        if not text:
            return cls()
        text = text.decode() if isinstance(text, bytes) else text.strip()
        m = _CURSOR.fullmatch(text)
        if not m:
            raise InvalidRequest(f"not an audit cursor (<seq>:<stream id>, e.g. 42:1733300000000-0): {text[:60]!r}")
        return cls(int(m.group(1)), m.group(2))


@dataclass(frozen=True)
class Sealed:
    """One sealed entry and its leaf index in the tree."""

    entry: Entry
    index: int


@dataclass(frozen=True)
class Batch:
    entries: list[Sealed]
    cursor: Cursor  # after the last entry of the batch (the old cursor when empty)
    gap: tuple[int, int] | None = None  # seqs (first, last) trimmed before they were read
    sealed_seq: int = 0  # the last sealed seq when read (for the lag)


async def read_sealed(redis, stream: str, cursor: Cursor, count: int = 500) -> Batch:
    """Up to ``count`` sealed entries after ``cursor``, oldest first, with their leaf indexes."""
    st = await TreeState.read(redis, tree_key(stream))
    sealed_seq = st.offset + st.size
    if not st.last_id or cursor.seq >= sealed_seq:
        return Batch([], cursor, None, sealed_seq)
    rows = await redis.xrange(stream, min="(" + cursor.stream_id, max=st.last_id, count=count)
    out = [Entry.from_stream(sid, f) for sid, f in rows]
    gap = None
    if out and out[0].seq > cursor.seq + 1:
        gap = (cursor.seq + 1, out[0].seq - 1)
    sealed = [Sealed(e, e.seq - 1 - st.offset) for e in out]
    new = Cursor(out[-1].seq, out[-1].stream_id) if out else cursor
    return Batch(sealed, new, gap, sealed_seq)


async def cursor_for_last(redis, stream: str, n: int) -> Cursor:
    """The cursor before the last ``n`` sealed entries (``jitgate audit tail`` without a cursor)."""
    st = await TreeState.read(redis, tree_key(stream))
    if not st.last_id:
        return Cursor()
    if n <= 0:
        rows = await redis.xrange(stream, min=st.last_id, max=st.last_id, count=1)
        e = Entry.from_stream(*rows[0]) if rows else None
        return Cursor(e.seq, e.stream_id) if e else Cursor()
    rows = await redis.xrevrange(stream, max=st.last_id, min="-", count=n + 1)
    if len(rows) <= n:
        return Cursor()
    e = Entry.from_stream(*rows[-1])
    return Cursor(e.seq, e.stream_id)


# ---------------------------------------------------------------------- formats
def json_record(s: Sealed) -> dict:
    """The entry as stored plus its leaf index (an `audit export` line with ``leaf_index``)."""
    return {**s.entry.to_json(), "leaf_index": s.index}


# OCSF 1.3 classes: (class_uid, class name, category_uid, category name).
API_ACTIVITY = (6003, "API Activity", 6, "Application Activity")
USER_ACCESS = (3005, "User Access Management", 3, "Identity & Access Management")
AUTHORIZE_SESSION = (3003, "Authorize Session", 3, "Identity & Access Management")
DETECTION = (2004, "Detection Finding", 2, "Findings")

# event type -> (class, activity_id, activity name, status_id (1 success, 2 failure, 0 unknown), severity_id)
OCSF_MAP: dict[str, tuple[tuple[int, str, int, str], int, str, int, int]] = {
    "proposal.received": (API_ACTIVITY, 1, "Create", 1, 1),
    "proposal.repeated": (API_ACTIVITY, 1, "Create", 1, 1),
    "policy.decision": (USER_ACCESS, 99, "Decide", 1, 1),
    "approval.recorded": (USER_ACCESS, 99, "Approve", 1, 1),
    "request.approved": (USER_ACCESS, 1, "Assign Privileges", 1, 1),
    "request.denied": (USER_ACCESS, 99, "Deny", 2, 2),
    "request.cancelled": (USER_ACCESS, 99, "Cancel", 2, 1),
    "request.escalated": (USER_ACCESS, 99, "Escalate", 1, 2),
    "requests.redecided": (USER_ACCESS, 99, "Decide", 1, 1),
    "token.collected": (AUTHORIZE_SESSION, 1, "Assign Privileges", 1, 1),
    "grant.completed": (USER_ACCESS, 2, "Revoke Privileges", 1, 1),
    "grant.revoked": (USER_ACCESS, 2, "Revoke Privileges", 1, 2),
    "grant.expired": (USER_ACCESS, 2, "Revoke Privileges", 1, 1),
    "requests.expired": (USER_ACCESS, 2, "Revoke Privileges", 1, 1),
    "killswitch.engaged": (USER_ACCESS, 2, "Revoke Privileges", 1, 4),
    "breakglass.granted": (USER_ACCESS, 1, "Assign Privileges", 1, 4),
    "breakglass.refused": (USER_ACCESS, 99, "Deny", 2, 3),
    "breakglass.suspended": (USER_ACCESS, 2, "Revoke Privileges", 1, 3),
    "breakglass.reinstated": (USER_ACCESS, 1, "Assign Privileges", 1, 2),
    "breakglass.reviewed": (API_ACTIVITY, 3, "Update", 1, 1),
    "posture.changed": (API_ACTIVITY, 3, "Update", 1, 3),
    "policy.loaded": (API_ACTIVITY, 3, "Update", 1, 2),
    "audit.trimmed": (API_ACTIVITY, 4, "Delete", 1, 2),
    "audit.failing": (DETECTION, 1, "Create", 0, 5),
    "audit.recovered": (DETECTION, 3, "Close", 0, 1),
    "security.alert": (DETECTION, 1, "Create", 0, 4),
    "credential.revocation_failed": (DETECTION, 1, "Create", 0, 4),
}
_OTHER = (API_ACTIVITY, 99, "Other", 0, 1)
_STATUS = {0: "Unknown", 1: "Success", 2: "Failure"}
_SEVERITY = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}


def _ms(at: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _actor(actor: Any) -> dict:
    """OCSF ``actor`` from the event's actor: who (an approver, an agent, an operator) and how."""
    if not isinstance(actor, dict):
        return {}
    for field_name, kind in (("approver", "User"), ("agent", "Agent"), ("operator", "Operator"), ("by", "System")):
        if actor.get(field_name):
            user: dict[str, Any] = {"uid": str(actor[field_name]), "name": str(actor[field_name]), "type": kind}
            if actor.get("owner"):
                user["groups"] = [{"name": f"owner:{actor['owner']}"}]
            out: dict[str, Any] = {"user": user}
            if actor.get("channel"):
                out["app_name"] = str(actor["channel"])
            return out
    return {}


def ocsf_record(s: Sealed, origin: str, product_version: str = "") -> dict:
    """One OCSF 1.3 event for a sealed entry (class by :data:`OCSF_MAP`, else API Activity
    "Other"). The exact sealed event is ``raw_data``; jitgate's own fields go in ``unmapped``;
    ``metadata.uid`` (``<origin>#<leaf index>``) is what a SIEM de-duplicates on."""
    body = s.entry.body() or {}
    kind = str(body.get("type", ""))
    (class_uid, class_name, cat_uid, cat_name), act_id, act_name, status_id, sev = OCSF_MAP.get(kind, _OTHER)
    rid = body.get("request_id")
    data: dict = body["data"] if isinstance(body.get("data"), dict) else {}
    rec: dict[str, Any] = {
        "class_uid": class_uid, "class_name": class_name, "category_uid": cat_uid, "category_name": cat_name,
        "activity_id": act_id, "activity_name": act_name, "type_uid": class_uid * 100 + act_id,
        "type_name": f"{class_name}: {act_name}", "severity_id": sev, "severity": _SEVERITY[sev],
        "status_id": status_id, "status": _STATUS[status_id], "time": _ms(body.get("at")) or s.entry.ms,
        "message": kind,
        "metadata": {"version": OCSF_VERSION, "uid": f"{origin}#{s.index}", "sequence": s.index, "log_name": origin,
                     "original_time": body.get("at"), "event_code": kind,
                     "product": {"name": "jitgate", "vendor_name": "jitgate", **({"version": product_version}
                                                                                 if product_version else {})}},
        "raw_data": s.entry.event.decode(errors="replace"),
        "unmapped": {"jitgate": {"type": kind, "seq": s.entry.seq, "leaf_index": s.index, "leaf": s.entry.leaf.hex(),
                                 "stream_id": s.entry.stream_id, "data": data}},
    }
    if rid:
        rec["metadata"]["correlation_uid"] = rid
    actor = _actor(body.get("actor"))
    if actor:
        rec["actor"] = actor
    if class_uid == API_ACTIVITY[0]:
        rec["api"] = {"operation": kind, "service": {"name": "jitgate"}}
        rec["src_endpoint"] = {"name": "jitgate"}
    elif class_uid == DETECTION[0]:
        rec["finding_info"] = {"uid": f"{origin}#{s.index}", "title": kind,
                               "desc": str(data.get("reason") or data.get("detail") or kind)[:500]}
    elif class_uid in (USER_ACCESS[0], AUTHORIZE_SESSION[0]):
        if data.get("action") or data.get("target"):
            rec["privileges"] = [str(x) for x in (data.get("action"), data.get("target")) if x]
        rec["user"] = rec.get("actor", {}).get("user", {"name": "unknown"})
    return rec


def render(s: Sealed, fmt: str, origin: str, product_version: str = "") -> bytes:
    """One line (no newline) of ``fmt`` for a sealed entry."""
    rec = ocsf_record(s, origin, product_version) if fmt == "ocsf" else json_record(s)
    return orjson.dumps(rec)


# ---------------------------------------------------------------------- destinations
class ExportFailed(Exception):
    """A destination did not take a batch (retried)."""


class Destination(Protocol):
    name: str

    async def send(self, lines: list[bytes]) -> None: ...

    async def close(self) -> None: ...


def _safe_name(url: str) -> str:
    """The destination without credentials, query or fragment (for logs and metric labels)."""
    p = urlsplit(url)
    host = p.hostname or ""
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{host}{port}{p.path}"


class HttpDestination:
    """POST each batch as JSON Lines (``application/x-ndjson``) to a collector; a 2xx takes it."""

    def __init__(self, url: str, *, authorization: str = "", timeout_s: float = 10.0,
                 client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.name = _safe_name(url)
        self.headers = {"Content-Type": "application/x-ndjson"}
        if authorization:
            self.headers["Authorization"] = authorization
        self.client = client or httpx.AsyncClient(timeout=timeout_s)

    async def send(self, lines: list[bytes]) -> None:
        try:
            r = await self.client.post(self.url, content=b"".join(x + b"\n" for x in lines), headers=self.headers)
        except httpx.HTTPError as e:
            raise ExportFailed(f"{e.__class__.__name__}") from None
        if not 200 <= r.status_code < 300:
            raise ExportFailed(f"HTTP {r.status_code}")

    async def close(self) -> None:
        await self.client.aclose()


class SyslogDestination:
    """One RFC 5424 message per entry (facility auth, severity info, app name ``jitgate-audit``,
    msgid ``audit``, the rendered line as the message), over UDP (``syslog://host:port``) or a local
    datagram socket (``syslog:///dev/log``)."""

    def __init__(self, url: str) -> None:
        p = urlsplit(url)
        self.name = _safe_name(url)
        self.host_port = (p.hostname, p.port or 514) if p.hostname else None
        self.path = p.path
        self.sock: socket.socket | None = None
        self.address: Any = None
        self.host = socket.gethostname()[:255] or "-"

    async def _open(self) -> tuple[socket.socket, Any]:
        """The socket and address, resolved without blocking the loop (again after a failure)."""
        if self.sock is None or self.address is None:
            address: Any
            if self.host_port is None:
                sock, address = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM), self.path
            else:
                infos = await asyncio.get_running_loop().getaddrinfo(*self.host_port, type=socket.SOCK_DGRAM)
                family, _, _, _, address = infos[0]
                sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self.sock, self.address = sock, address
        return self.sock, self.address

    async def send(self, lines: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock, address = await self._open()
            for line in lines:
                ts = datetime.now().astimezone().isoformat(timespec="milliseconds")
                msg = f"<38>1 {ts} {self.host} jitgate-audit {os.getpid()} audit - ".encode() + line
                await asyncio.wait_for(loop.sock_sendto(sock, msg, address), 5)
        except (OSError, asyncio.TimeoutError) as e:
            await self.close()  # opened and resolved afresh on the retry
            raise ExportFailed(f"syslog {e.__class__.__name__}: {e}") from None

    async def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = self.address = None


def destination(url: str, *, authorization: str = "") -> Destination:
    """The destination a ``JITGATE_AUDIT_EXPORT`` URL names; raises :class:`ConfigError`."""
    p = urlsplit(url)
    if p.scheme in ("http", "https") and p.netloc:
        return HttpDestination(url, authorization=authorization)
    if p.scheme == "syslog" and (p.hostname or p.path.startswith("/")):
        return SyslogDestination(url)
    raise ConfigError(f"JITGATE_AUDIT_EXPORT holds {url!r}: an https:// or http:// collector URL, "
                      "syslog://host:port (UDP) or syslog:///path/to/socket (a local datagram socket)")


# ---------------------------------------------------------------------- the export sink
# KEYS: cursor. ARGV: expected ('' none), new. Advance only from where this exporter read
# (a lease hand-over: the other exporter's cursor stands, and this one re-reads from it).
_ADVANCE_LUA = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class Exporter:
    """Forwards sealed entries to one destination, at least once, resumable (cursor in Redis)."""

    def __init__(self, redis, stream: str, dest: Destination, *, fmt: str = "json", origin: str = "",
                 cursor_key: str | None = None, batch: int = 500, lag_warn_s: float = 60.0, metrics=None,
                 product_version: str = "", max_backoff_s: float = 30.0) -> None:
        self.redis = redis
        self.stream = stream
        self.dest = dest
        self.fmt = fmt
        self.origin = origin
        digest = hashlib.sha256(dest.name.encode()).hexdigest()[:16]
        self.cursor_key = cursor_key or f"{stream}:export:{digest}"
        self.batch = batch
        self.lag_warn_s = lag_warn_s
        self.metrics = metrics
        self.product_version = product_version
        self.max_backoff_s = max_backoff_s
        self.exported = 0
        self.lag_entries = 0
        self.lag_s = 0.0
        self._advance = redis.register_script(_ADVANCE_LUA)
        self._outage = Outage(log, f"exporting audit entries to {dest.name}")
        self._lagging = False

    async def cursor(self) -> Cursor:
        return Cursor.parse(await self.redis.get(self.cursor_key))

    async def step(self) -> int:
        """Forward one batch after the stored cursor; returns how many entries the destination
        took. Raises :class:`ExportFailed` (the cursor stays) when it did not."""
        raw = await self.redis.get(self.cursor_key)
        cur = Cursor.parse(raw)
        b = await read_sealed(self.redis, self.stream, cur, self.batch)
        if b.gap:
            log.error("audit export to %s: seq %d to %d were trimmed before they were exported (a gap the SIEM "
                      "will not see; the `audit export` file made before the trim holds them)", self.dest.name, *b.gap)
            if self.metrics is not None:
                self.metrics.audit_export_gaps.labels(destination=self.dest.name).inc(b.gap[1] - b.gap[0] + 1)
        await self._measure(b.sealed_seq, cur)  # before sending: a destination that fails still shows its lag
        if b.entries:
            await self.dest.send([render(s, self.fmt, self.origin, self.product_version) for s in b.entries])
            expected = raw.decode() if isinstance(raw, bytes) else (raw or "")
            await self._advance(keys=[self.cursor_key], args=[expected, str(b.cursor)])
            self.exported += len(b.entries)
            if self.metrics is not None:
                self.metrics.audit_exported.labels(destination=self.dest.name).inc(len(b.entries))
            await self._measure(b.sealed_seq, b.cursor)
        return len(b.entries)

    async def _measure(self, sealed_seq: int, cursor: Cursor) -> None:
        """How far behind the sealed log this destination is (entries and the oldest one's age)."""
        self.lag_entries = max(0, sealed_seq - cursor.seq)
        age = 0.0
        if self.lag_entries:
            nxt = await self.redis.xrange(self.stream, min="(" + cursor.stream_id, max="+", count=1)
            if nxt:
                age = max(0.0, time.time() - Entry.from_stream(*nxt[0]).ms / 1000)
        self.lag_s = age
        if self.metrics is not None:
            self.metrics.audit_export_lag_entries.labels(destination=self.dest.name).set(self.lag_entries)
            self.metrics.audit_export_lag_seconds.labels(destination=self.dest.name).set(age)
        if age > self.lag_warn_s and not self._lagging:
            self._lagging = True
            log.warning("audit export to %s lags %d entries (%.0f s) behind the sealed log", self.dest.name,
                        self.lag_entries, age)
        elif self._lagging and age <= self.lag_warn_s / 2:
            self._lagging = False
            log.warning("audit export to %s caught up (%d entries behind)", self.dest.name, self.lag_entries)

    async def run(self, may_run, interval_s: float = 0.5) -> None:
        """Forward until cancelled, while ``may_run()`` (the scheduler lease) says so; a full
        batch goes on at once, a failure waits with exponential backoff (to ``max_backoff_s``)."""
        delay = interval_s
        while True:
            try:
                if not await may_run():
                    await asyncio.sleep(interval_s)
                    continue
                n = await self.step()
                self._outage.ok()
                delay = interval_s
                if n >= self.batch:
                    await asyncio.sleep(0)
                    continue
                await asyncio.sleep(interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - logged once per outage, counted, retried with backoff
                self._outage.failed(str(e) or e.__class__.__name__)
                if self.metrics is not None:
                    self.metrics.audit_export_failures.labels(destination=self.dest.name).inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    async def close(self) -> None:
        await self.dest.close()


def exporters_from_settings(settings, redis, stream: str, origin: str, metrics=None) -> list[Exporter]:
    """One :class:`Exporter` per ``JITGATE_AUDIT_EXPORT`` destination."""
    auth = settings.audit_export_authorization.reveal() if settings.audit_export_authorization else ""
    return [Exporter(redis, stream, destination(url, authorization=auth), fmt=settings.audit_export_format,
                     origin=origin, batch=settings.audit_export_batch, lag_warn_s=settings.audit_export_lag_warn_s,
                     metrics=metrics)
            for url in settings.audit_export]


def write_cursor_file(path: Path, cursor: Cursor) -> None:
    """Replace the cursor file atomically (written, fsynced, renamed): a crash leaves the old
    cursor or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{cursor}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
