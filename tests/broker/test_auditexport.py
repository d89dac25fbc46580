"""Audit export (issue 18.7): sealed entries streamed with their leaf index, resumable from a
cursor, as JSON or OCSF, and forwarded at least once to an HTTP collector and to syslog by an
exporter whose cursor lives in Redis; tested against a local HTTP recorder and local syslog
receivers (UDP and a unix datagram socket)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import socket

import orjson
import pytest
from aiohttp import web

from broker import audit
from broker.auditexport import (Cursor, Exporter, HttpDestination, SyslogDestination, cursor_for_last, ocsf_record,
                                read_sealed, render, Sealed)
from broker.config import Settings
from broker.errors import ConfigError, InvalidRequest
from broker.translog import leaf_hash


@pytest.fixture
async def quiet(harness):
    """The harness without its background sealer: each test seals when it wants."""
    await harness.broker.scheduler.stop()
    return harness


async def _seal(h) -> int:
    return await h.broker.lifecycle.audit.seal(force_checkpoint=True)


async def _grants(h, n: int) -> list[str]:
    rids = []
    for _ in range(n):
        rid = (await h.propose()).json()["id"]
        await h.approve(rid, "bob")
        await h.approve(rid, "erin")
        rids.append(rid)
    return rids


async def _all(h, cursor: Cursor = Cursor(), count: int = 1000) -> list[Sealed]:
    out: list[Sealed] = []
    while True:
        b = await read_sealed(h.broker.redis, h.broker.store.audit_stream, cursor, count)
        out += b.entries
        cursor = b.cursor
        if not b.entries:
            return out


class Recorder:
    """A local HTTP collector: records each POSTed batch; can refuse the first few, or take one
    and then not answer (the acknowledgement lost: the exporter must send it again)."""

    def __init__(self) -> None:
        self.batches: list[list[dict]] = []
        self.refuse = 0
        self.hang_once = False
        self.content_types: set[str] = set()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.content_types.add(request.headers.get("Content-Type", ""))
        if self.refuse:
            self.refuse -= 1
            return web.Response(status=503)
        self.batches.append([orjson.loads(line) for line in body.splitlines()])
        if self.hang_once:
            self.hang_once = False
            await asyncio.sleep(1.5)  # longer than the exporter's timeout: taken, never acknowledged
        return web.Response(status=204)

    @property
    def indexes(self) -> list[int]:
        return [row["leaf_index"] for batch in self.batches for row in batch]

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/collect", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/collect"

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


async def _until(cond, what: str, tries: int = 200) -> None:
    for _ in range(tries):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _always() -> bool:
    return True


# ---------------------------------------------------------------------- reading sealed entries
async def test_only_sealed_entries_are_read_each_with_its_leaf_index(quiet):
    """Issue 18.7: the stream shows entries as they are sealed (covered by a signed checkpoint),
    never the unsealed tail; each carries its leaf index in the tree."""
    await _grants(quiet, 1)
    await _seal(quiet)
    # Everything sealed so far (the start-up policy.loaded entry may have been sealed before).
    sealed_now = (await audit.TreeState.read(quiet.broker.redis, quiet.broker.store.audit_tree)).size
    await quiet.propose()  # appended, not sealed
    got = await _all(quiet)
    assert len(got) == sealed_now >= 5
    assert [s.index for s in got] == list(range(len(got)))
    assert [s.entry.seq for s in got] == list(range(1, len(got) + 1))
    await _seal(quiet)
    assert len(await _all(quiet)) > sealed_now


async def test_a_cursor_resumes_without_gaps_or_repeats(quiet):
    """Issue 18.7 (resumable): reading in small batches from each returned cursor, after a
    round trip through its text form, yields exactly the entries one read does."""
    await _grants(quiet, 2)
    await _seal(quiet)
    whole = await _all(quiet)
    cursor, pieces = Cursor(), []
    while True:
        b = await read_sealed(quiet.broker.redis, quiet.broker.store.audit_stream, cursor, 3)
        if not b.entries:
            break
        pieces += b.entries
        cursor = Cursor.parse(str(b.cursor))
    assert [s.entry.stream_id for s in pieces] == [s.entry.stream_id for s in whole]
    last = await cursor_for_last(quiet.broker.redis, quiet.broker.store.audit_stream, 2)
    assert [s.index for s in await _all(quiet, last)] == [whole[-2].index, whole[-1].index]
    with pytest.raises(InvalidRequest):
        Cursor.parse("12")


async def test_json_lines_are_the_stored_entries_and_verify_as_an_export(quiet):
    """Issue 18.7: `json` is the entry as stored (the exact sealed event) plus seq and leaf
    index, so the SIEM holds the bytes the proofs cover (`audit verify --file` accepts them)."""
    await _grants(quiet, 1)
    await _seal(quiet)
    got = await _all(quiet)
    lines = [render(s, "json", "x/audit").decode() for s in got]
    rows = [orjson.loads(x) for x in lines]
    assert {"id", "seq", "leaf", "event", "leaf_index"} == set(rows[0])
    assert all(bytes.fromhex(r["leaf"]) == leaf_hash(r["event"].encode()) for r in rows)
    assert str(audit.verify_export(lines)).startswith(f"export OK: {len(rows)} entries, seq 1 to {len(rows)}")


async def test_ocsf_maps_each_event_to_an_ocsf_class(quiet):
    """Issue 18.7: `ocsf` maps proposals to API Activity, approvals and grants to User Access
    Management, the token to Authorize Session; the raw event and the leaf index travel along."""
    (rid,) = await _grants(quiet, 1)
    assert (await quiet.collect(rid)).status_code == 200
    await _seal(quiet)
    recs = {}
    for s in await _all(quiet):
        rec = ocsf_record(s, "jitgate.test/audit")
        recs.setdefault(rec["message"], rec)
        assert rec["type_uid"] == rec["class_uid"] * 100 + rec["activity_id"]
        assert rec["metadata"]["uid"] == f"jitgate.test/audit#{s.index}" and rec["raw_data"] == s.entry.event.decode()
    assert recs["proposal.received"]["class_uid"] == 6003
    assert recs["approval.recorded"]["class_uid"] == 3005 and recs["approval.recorded"]["actor"]["user"]["uid"] == "bob"
    assert recs["request.approved"]["class_uid"] == 3005 and recs["request.approved"]["activity_id"] == 1
    assert recs["proposal.received"]["metadata"]["correlation_uid"]
    assert recs["token.collected"]["class_uid"] == 3003


# ---------------------------------------------------------------------- the export sink
async def test_an_http_collector_gets_every_entry_in_order_despite_refusals(quiet):
    """Issue 18.7: the exporter POSTs JSON Lines to the collector, retries a refusal with
    backoff without moving its cursor, and every sealed entry arrives in order."""
    rec = Recorder()
    async with rec as url:
        rec.refuse = 2
        await _grants(quiet, 2)
        await _seal(quiet)
        ex = Exporter(quiet.broker.redis, quiet.broker.store.audit_stream, HttpDestination(url), batch=4,
                      metrics=quiet.broker.metrics, max_backoff_s=0.2)
        task = asyncio.get_running_loop().create_task(ex.run(_always, 0.05))
        try:
            n = len(await _all(quiet))
            await _until(lambda: len(rec.indexes) >= n, "the collector to get every entry")
        finally:
            task.cancel()
            await ex.close()
    assert rec.indexes == list(range(n))  # no duplicate: nothing was taken and then lost
    assert rec.content_types == {"application/x-ndjson"}
    text = quiet.broker.metrics.render().decode()
    assert 'jitgate_audit_export_failures_total{destination="http://127.0.0.1' in text
    assert "jitgate_audit_export_lag_entries" in text


async def test_a_killed_exporter_resumes_from_its_cursor_without_loss(quiet):
    """Issue 18.7 (at least once): an exporter killed mid-stream, and one whose batch the
    collector took without acknowledging, go on from the cursor in Redis; every entry arrives,
    a duplicate only ever repeats a leaf index already seen (a SIEM drops it)."""
    rec = Recorder()
    async with rec as url:
        redis, stream = quiet.broker.redis, quiet.broker.store.audit_stream
        await _grants(quiet, 2)
        await _seal(quiet)
        first = Exporter(redis, stream, HttpDestination(url), batch=3)
        assert await first.step() == 3 and await first.step() == 3
        await first.close()  # killed: a new process starts with only Redis
        rec.hang_once = True
        lost_ack = Exporter(redis, stream, HttpDestination(url, timeout_s=0.5), batch=3)
        with pytest.raises(Exception):
            await lost_ack.step()  # the collector took it, the answer never came: the cursor stays
        await lost_ack.close()
        await _grants(quiet, 1)
        await _seal(quiet)
        again = Exporter(redis, stream, HttpDestination(url), batch=3)
        while await again.step():
            pass
        await again.close()
    n = len(await _all(quiet))
    seen = rec.indexes
    assert sorted(set(seen)) == list(range(n))  # nothing lost
    assert seen[:6] == list(range(6)) and seen[6:9] == seen[9:12] == [6, 7, 8]  # the one batch twice
    assert seen[9:] == list(range(6, n))  # in order


async def test_syslog_over_udp_and_a_unix_socket_gets_every_entry_in_order(quiet, tmp_path):
    """Issue 18.7: the syslog destination sends one RFC 5424 message per sealed entry, over UDP
    and over a local datagram socket, in order, each with its leaf index."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix_path = tmp_path / "log.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unix.bind(str(unix_path))
    for s in (udp, unix):
        s.settimeout(5)
    try:
        await _grants(quiet, 1)
        await _seal(quiet)
        n = len(await _all(quiet))
        redis, stream = quiet.broker.redis, quiet.broker.store.audit_stream
        for url, sock, fmt in ((f"syslog://127.0.0.1:{udp.getsockname()[1]}", udp, "json"),
                               (f"syslog://{unix_path}", unix, "ocsf")):
            ex = Exporter(redis, stream, SyslogDestination(url), fmt=fmt, origin="jitgate.test/audit")
            assert await ex.step() == n
            await ex.close()
            msgs = [sock.recv(65535) for _ in range(n)]
            assert all(m.startswith(b"<38>1 ") and b" jitgate-audit " in m for m in msgs)
            bodies = [orjson.loads(m[m.index(b"{"):]) for m in msgs]
            if fmt == "json":
                assert [b["leaf_index"] for b in bodies] == list(range(n))
            else:
                assert [b["metadata"]["sequence"] for b in bodies] == list(range(n))
    finally:
        udp.close()
        unix.close()


async def test_a_lagging_exporter_shows_in_metrics_and_never_holds_up_sealing(quiet, caplog):
    """Issue 18.7: a collector that never answers leaves the exporter behind (the lag in /metrics
    and the log) while sealing goes on."""
    ex = Exporter(quiet.broker.redis, quiet.broker.store.audit_stream,
                  HttpDestination("http://127.0.0.1:9/never"), metrics=quiet.broker.metrics, lag_warn_s=0.0,
                  max_backoff_s=0.1)
    task = asyncio.get_running_loop().create_task(ex.run(_always, 0.05))
    try:
        await _grants(quiet, 1)
        assert await _seal(quiet) >= 5  # sealing does not wait for the export
        await _until(lambda: ex.lag_entries >= 5, "the lag to show")
    finally:
        task.cancel()
        await ex.close()
    text = quiet.broker.metrics.render().decode()
    assert 'jitgate_audit_export_lag_entries{destination="http://127.0.0.1:9/never"} ' in text
    assert "lags" in caplog.text and "behind the sealed log" in caplog.text


async def test_the_serving_broker_exports_under_the_scheduler_lease(harness, tmp_path):
    """Issue 18.7: with JITGATE_AUDIT_EXPORT set, the replica holding the scheduler lease forwards
    what its sealer seals to the collector; a replica without the lease exports nothing."""
    rec = Recorder()
    async with rec as url:
        await harness.stop()
        harness.settings = dataclasses.replace(harness.settings, audit_export=(url,), audit_export_interval_s=0.05)
        await harness.start()
        sched = harness.broker.scheduler
        assert len(sched.exporters) == 1
        await _grants(harness, 1)
        await _until(lambda: len(rec.indexes) >= 5, "the background export")
        assert rec.indexes == list(range(len(rec.indexes)))
        await harness.broker.redis.set(sched.lease_key, "elsewhere:1:x", px=60_000)
        sched._export_checked = float("-inf")
        assert not await sched._export_lease()


def test_export_settings_are_checked_at_start():
    """Issue 18.7: JITGATE_AUDIT_EXPORT takes collector and syslog URLs; anything else refuses to start."""
    base = {"JITGATE_ISSUER": "https://j.example", "JITGATE_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
            "JITGATE_AUDIT_CHECKPOINT_FILE": "/tmp/x.jsonl"}
    s = Settings.from_env({**base, "JITGATE_AUDIT_EXPORT": "https://siem.example/in, syslog://10.0.0.1:514,"
                                                             "syslog:///dev/log", "JITGATE_AUDIT_EXPORT_FORMAT": "ocsf"})
    assert s.audit_export == ("https://siem.example/in", "syslog://10.0.0.1:514", "syslog:///dev/log")
    assert s.audit_export_format == "ocsf"
    for bad in ("ftp://x", "syslog://host", "siem.example", "syslog://h:port"):
        with pytest.raises(ConfigError, match="JITGATE_AUDIT_EXPORT"):
            Settings.from_env({**base, "JITGATE_AUDIT_EXPORT": bad})
    with pytest.raises(ConfigError, match="JITGATE_AUDIT_EXPORT_FORMAT"):
        Settings.from_env({**base, "JITGATE_AUDIT_EXPORT_FORMAT": "cef"})
