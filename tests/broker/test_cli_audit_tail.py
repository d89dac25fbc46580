"""`jitgate audit tail` (issue 18.7), run as a real process against the real Redis: sealed
entries only, the cursor after each batch, a restart from the cursor without gaps."""

from __future__ import annotations

import json

from tests.broker.test_cli import _propose_async, cli_env  # noqa: F401 - the fixture, shared
from tests.support.process import run_cli


async def test_tail_streams_sealed_entries_and_resumes_from_its_cursor(cli_env, tmp_path):  # noqa: F811
    """Issue 18.7: tail prints only sealed entries with their leaf index and writes its cursor;
    restarted with that cursor it prints exactly the entries sealed since (no gap, no repeat),
    and the lines together verify as an export."""
    await _propose_async(cli_env)
    assert run_cli(cli_env, "audit", "tail", "--from-start").stdout == ""  # nothing sealed yet
    assert run_cli(cli_env, "audit", "seal").returncode == 0
    cursor = tmp_path / "tail.cursor"
    first = run_cli(cli_env, "audit", "tail", "--from-start", "--cursor-file", str(cursor), "--batch", "2")
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    assert rows and [r["leaf_index"] for r in rows] == list(range(len(rows)))
    assert cursor.read_text().strip() == f"{rows[-1]['seq']}:{rows[-1]['id']}"

    await _propose_async(cli_env, justification="a second task")
    assert run_cli(cli_env, "audit", "seal").returncode == 0
    again = run_cli(cli_env, "audit", "tail", "--cursor-file", str(cursor))
    more = [json.loads(line) for line in again.stdout.splitlines()]
    assert more and more[0]["leaf_index"] == len(rows)  # resumes right after the cursor
    whole = tmp_path / "tail.jsonl"
    whole.write_text(first.stdout + again.stdout)
    v = run_cli({}, "audit", "verify", "--file", str(whole))
    assert v.returncode == 0 and f"seq 1 to {len(rows) + len(more)}" in v.stdout

    by_cursor = run_cli(cli_env, "audit", "tail", "--cursor", f"{rows[-1]['seq']}:{rows[-1]['id']}", "--format", "ocsf")
    ocsf = [json.loads(line) for line in by_cursor.stdout.splitlines()]
    assert [r["metadata"]["sequence"] for r in ocsf] == [r["leaf_index"] for r in more]
    assert f"cursor: {more[-1]['seq']}:{more[-1]['id']}" in by_cursor.stderr
    bad = run_cli(cli_env, "audit", "tail", "--cursor", "nonsense")
    assert bad.returncode == 2 and "not an audit cursor" in bad.stderr
