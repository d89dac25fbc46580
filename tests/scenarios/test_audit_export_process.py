"""The audit export sink across a crash (issue 18.7): a broker process killed with SIGKILL while
it forwards sealed entries to a collector, and a new process that takes over, lose nothing."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.scenarios.test_processes import PROPOSAL, _auth, _kek
from tests.support.harness import write_agents
from tests.support.process import BrokerProcess, jitgate_env, run_cli


class _Collector(BaseHTTPRequestHandler):
    """A local HTTP collector: records each POSTed line (slowly, so a kill lands mid-stream)."""

    lines: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.05)
        type(self).lines.extend(json.loads(x) for x in body.splitlines())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        return None


def _wait(cond, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_killed_broker_and_its_successor_export_every_sealed_entry(tmp_path, redis_url, prefix, redis):
    """Issue 18.7 (at least once, resumable): entries sealed before and after a SIGKILL of the
    exporting broker all reach the collector in leaf order; a repeat only repeats a leaf index."""
    _Collector.lines = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    keys = write_agents(tmp_path / "agents.yaml")
    env = {**jitgate_env(tmp_path, prefix, _kek(), redis_url),
           "JITGATE_AUDIT_EXPORT": f"http://127.0.0.1:{server.server_address[1]}/ingest",
           "JITGATE_AUDIT_EXPORT_BATCH": "2", "JITGATE_AUDIT_EXPORT_INTERVAL_S": "0.05", "JITGATE_DEDUPE": "0"}
    first = None
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            first = BrokerProcess(env).start()
            assert first.proc is not None
            for n in range(4):
                r = await http.post(first.url + "/v1/escalations", json={**PROPOSAL, "justification": f"task {n}"},
                                    headers=_auth(keys))
                assert r.status_code == 201, r.text
            _wait(lambda: len(_Collector.lines) >= 2, "the first batches")
            first.proc.kill()  # a crash, mid-export
            first.proc.wait()
            first.stop()
            with BrokerProcess(env) as second:
                r = await http.post(second.url + "/v1/escalations", json={**PROPOSAL, "justification": "after"},
                                    headers=_auth(keys))
                assert r.status_code == 201, r.text
                rid = r.json()["id"]

                def all_there() -> bool:
                    return any(json.loads(x["event"]).get("request_id") == rid for x in _Collector.lines)

                _wait(all_there, "the entries sealed after the restart")
        sealed = run_cli(env, "audit", "tail", "--from-start")
        want = [json.loads(x)["leaf_index"] for x in sealed.stdout.splitlines()]
        got = [x["leaf_index"] for x in _Collector.lines]
        firsts = list(dict.fromkeys(got))
        assert firsts == want[:len(firsts)] and len(firsts) >= 8  # in order, nothing skipped
        assert all(got[i] <= got[i - 1] or got[i] == got[i - 1] + 1 for i in range(1, len(got)))  # only repeats
    finally:
        if first is not None:
            first.stop()
        server.shutdown()
        server.server_close()
