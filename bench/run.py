"""``python -m bench [--smoke]``: start Redis and brokers on loopback, measure the six
figures of issue 8, stop everything, write the results and the plot, and say plainly
which targets were missed.

Exit status: 0 when the harness ran (targets missed or not), 1 when it broke.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import psutil

from . import autogrant, credentials, introspect, killswitch, memory, reeval, revocation, ssf, wakeup
from .limits import INFLIGHT
from .load import Client, HarnessError, closed_loop, summary
from .procs import (ROOT, BusyMeter, CpuMeter, Processes, bench_redis_binary, cpu_plan, hello_server, pin, redis_version,
                    run_async)
from .profile import Profile, summarize
from .report import write_all
from .stack import POOL, Stack


@dataclass(frozen=True)
class Sizes:
    limits_n: int
    hello_s: float
    levels: tuple[int, ...]
    both_levels: tuple[int, ...]
    level_s: float
    warmup_s: float
    profile_s: float
    tokens: int
    introspect_levels: tuple[int, ...]
    offline_s: float
    wake_n: int
    wake_gap_s: float
    memory_n: int
    revoke_n: int
    revoke_window_s: int
    revoke_bound_s: float
    credential_n: int = 50
    killswitch_n: int = 10_000
    ssf_n: int = 500  # figure 8: tokens revoked while a verifier follows the SSF stream
    ssf_rate: float = 50.0  # revocations per second
    reeval_n: int = 10_000
    reeval_trials: int = 200
    reeval_sample: int = 200


FULL = Sizes(limits_n=2000, hello_s=4, levels=(1, 16, 64), both_levels=(16, 64), level_s=8, warmup_s=1,
             profile_s=6, tokens=200, introspect_levels=(1, 16, 64), offline_s=3, wake_n=200, wake_gap_s=0.01,
             memory_n=2000, revoke_n=100_000, revoke_window_s=10, revoke_bound_s=120)
SMOKE = Sizes(limits_n=50, hello_s=0.7, levels=(1, 4), both_levels=(4,), level_s=0.7, warmup_s=0.2,
              profile_s=1, tokens=10, introspect_levels=(1, 4), offline_s=0.3, wake_n=10, wake_gap_s=0.005,
              memory_n=50, revoke_n=500, revoke_window_s=2, revoke_bound_s=30, credential_n=5,
              killswitch_n=600, ssf_n=50, ssf_rate=50.0, reeval_n=300, reeval_trials=10, reeval_sample=20)


_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:5.1f}s] {msg}" if msg else "", flush=True)


def _limits(stack, plan, n: int) -> dict:
    """bench/limits.py in its own process on the server core."""
    import subprocess  # noqa: PLC0415

    from .procs import _preexec  # noqa: PLC0415

    import json  # noqa: PLC0415
    import resource  # noqa: PLC0415

    def children_cpu() -> float:
        u = resource.getrusage(resource.RUSAGE_CHILDREN)
        return u.ru_utime + u.ru_stime

    machine, redis, own, child0 = BusyMeter(), CpuMeter(stack.redis_pid), CpuMeter(os.getpid()), children_cpu()
    out = subprocess.run([sys.executable, "-m", "bench.limits", stack.redis_url, str(n), str(stack.redis_pid)],
                         cwd=ROOT, capture_output=True,
                         text=True, timeout=600, preexec_fn=_preexec(plan["server"]))
    if out.returncode != 0:
        raise HarnessError(f"bench.limits failed: {out.stderr[-2000:]}")
    redis_cpu, wall = redis.read()
    ours = (children_cpu() - child0) + redis_cpu + own.read()[0]
    parts = json.loads(out.stdout.strip().splitlines()[-1])
    return parts, round(max(0.0, machine.read() - ours) / wall, 2)


async def _hello(ps, plan, seconds: float) -> dict:
    """HTTP hello-world: the bare route's server CPU per request, at 16 in flight."""
    server = ps.add(hello_server(plan["server"]).start())
    try:
        body = autogrant.PROPOSAL
        client = Client(16)

        async def op(rec):
            await client.call(rec, "hello", "POST", server.url + "/hello", data=body, headers=autogrant.JSON)

        meter = CpuMeter(server.pid)
        try:
            rec, done, elapsed = await closed_loop(op, concurrency=16, duration_s=seconds, max_ops=10**7, warmup_s=0.3)
        finally:
            await client.close()
        cpu, wall = meter.read()  # warm-up included, as in rec.ops_total
        return {"requests_per_s": round(done / elapsed, 1), "server_cpu_cores": round(cpu / wall, 2),
                "us_per_request": round(cpu / rec.ops_total * 1e6, 1), "latency": summary(rec.latencies["hello"])}
    finally:
        ps.stop(server)


async def _profile_autogrant(stack, plan, seconds: float, out: Path) -> dict:
    """A py-spy profile of the broker at 16 concurrent grants (a separate, unmeasured run)."""
    async with stack.brokers(1) as (b,):
        pool = autogrant.mint_triples(stack.agents, int(2000 * (seconds + 1)))
        # Redis moves to the load core meanwhile: on the broker's core, a write that wakes it
        # lets Redis run inside the broker's system call, and py-spy counts that as the broker's.
        pin(stack.redis_pid, plan["load"])
        prof = Profile(b.pid, seconds, out, plan["load"])
        try:
            if prof.error:
                return {"error": prof.error}
            client = Client(16)
            try:
                await closed_loop(autogrant.grant_operation(client, [b.url], pool), concurrency=16,
                                  duration_s=seconds, max_ops=len(pool), warmup_s=0.5)
            finally:
                await client.close()
            prof.wait()
        finally:
            pin(stack.redis_pid, plan["server"])
        return summarize(out) if prof.error is None else {"error": prof.error}


async def run_all(args, sizes: Sizes, plan: dict, ps: Processes, work: Path, out_dir: Path, stamp: str) -> dict:
    results: dict = {}
    stack = Stack(ps, work, plan)
    binary = bench_redis_binary()
    results["meta"] = {
        "date": stamp,
        "mode": "smoke" if args.smoke else "full",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpus": psutil.cpu_count(),
        "pinned": plan["pinned"],
        "server_cpus": sorted(plan["server"]),
        "load_cpus": sorted(plan["load"]),
        "redis": f"{binary} ({redis_version(binary)})",
        "redis_aof": "off (nothing here measures persistence)",
        "redis_pool": POOL,
        "sweep_interval_s": "default (JITGATE_SWEEP_INTERVAL_S unset)",
        "desks": _desks(stack),
        "policies": "tests/fixtures/policies (staging-read: auto-grant; prod-restart: 1 sre; prod-deploy: 2 sre)",
    }
    t0 = time.monotonic()

    want = (lambda name: name in args.only) if args.only else (lambda name: True)
    if not args.only or "autogrant" in args.only or "introspection" in args.only:
        await _limits_section(stack, plan, ps, sizes, results)
    if want("autogrant"):
        await _autogrant_section(stack, plan, sizes, results, out_dir, stamp)
    if want("introspection"):
        await _introspection_section(stack, sizes, results)
    if not args.only or "autogrant" in args.only or "introspection" in args.only:
        await _limits_again(stack, plan, ps, sizes, results)
    if want("wakeup"):
        await _wakeup_section(args, stack, plan, sizes, results)
    if want("memory"):
        log("5. memory")
        await stack.flush()
        async with stack.brokers(1) as (b,):
            results["memory"] = await memory.measure(stack, b, sizes.memory_n, log)
    if want("revocation"):
        log(f"4. revocation at scale ({sizes.revoke_n} grants ending within {sizes.revoke_window_s} s)")
        await stack.flush()
        async with stack.brokers(1) as (b,):
            results["revocation"] = await revocation.measure(
                stack, b, sizes.revoke_n, sizes.revoke_window_s, sizes.revoke_bound_s,
                out_dir / f"{stamp}-profile-sweep.folded", log, plan["load"], idle_s=3 if sizes is FULL else 1)
    if want("killswitch"):
        log(f"7. kill switch ({sizes.killswitch_n} active grants: --all vs one by one)")
        await stack.flush()
        results["killswitch"] = await killswitch.measure(stack, sizes.killswitch_n, log)
    if want("ssf"):
        log(f"8. revocation -> subscribed verifier (SSF), {sizes.ssf_n} tokens at {sizes.ssf_rate:g} revocations/s")
        await stack.flush()
        async with stack.brokers(1) as (b,):
            results["ssf"] = await ssf.measure(stack, b, sizes.ssf_n, sizes.ssf_rate, log)
    if want("reevaluation"):
        log(f"9. deciding again after a posture change ({sizes.reeval_n} active grants)")
        await stack.flush()
        async with stack.brokers(1) as (b,):
            results["reevaluation"] = await reeval.measure(stack, b, sizes.reeval_n, sizes.reeval_trials,
                                                           sizes.reeval_sample, log)
    if want("mcpgateway"):
        log(f"10. MCP gateway: added latency per forwarded call when policy grants it ({sizes.level_s:g} s per way)")
        await stack.flush()
        from . import mcpgateway  # noqa: PLC0415 - needs the mcp extra

        async with stack.brokers(1) as (b,):
            results["mcpgateway"] = await mcpgateway.measure(stack, b.url, sizes.level_s, log)
    if want("credentials"):
        log(f"6. real credentials ({sizes.credential_n} grants per plugin, against PostgreSQL and OpenBao)")
        await stack.flush()
        results["credentials"] = await credentials.measure(stack.redis_url, sizes.credential_n, log)
    await stack.flush()
    results["meta"]["seconds"] = round(time.monotonic() - t0, 1)
    return results


async def _limits_section(stack, plan, ps, sizes, results) -> None:
    log("limit: parts on the server core")
    parts, other = _limits(stack, plan, sizes.limits_n)
    hello = await _hello(ps, plan, sizes.hello_s)
    for kind in ("wall", "cpu"):  # the server's CPU per request is also what it needs of the core
        parts[kind]["http_hello_us"] = hello["us_per_request"]
    results["limits"] = {"parts_us": parts, "hello": hello, "inflight": INFLIGHT, "other_cpu_cores": other}
    log("  µs per call (wall / CPU): " + ", ".join(f"{k.removesuffix('_us')} {v} / {parts['cpu'][k]}"
                                                 for k, v in parts["wall"].items()))



async def _limits_again(stack, plan, ps, sizes, results) -> None:
    """The parts once more, after the paths: this shared machine's speed drifts by tens of
    per cent within minutes, so the limit is the mean of a measurement on each side of
    the paths it bounds, and both are kept (the report shows how far they differ)."""
    log("limit: parts on the server core, again after the paths")
    first = results["limits"]
    parts, other = _limits(stack, plan, sizes.limits_n)
    hello = await _hello(ps, plan, sizes.hello_s)
    for kind in ("wall", "cpu"):
        parts[kind]["http_hello_us"] = hello["us_per_request"]
    runs = [first["parts_us"], parts]
    first["parts_us_runs"] = runs
    first["parts_us"] = {kind: {k: round((runs[0][kind][k] + runs[1][kind][k]) / 2, 2) for k in runs[0][kind]}
                         for kind in ("wall", "cpu")}
    first["other_cpu_cores"] = round((first["other_cpu_cores"] + other) / 2, 2)
    log("  µs per call (wall / CPU): " + ", ".join(f"{k.removesuffix('_us')} {v} / {parts['cpu'][k]}"
                                                 for k, v in parts["wall"].items()))


async def _autogrant_section(stack, plan, sizes, results, out_dir, stamp) -> None:
    log("1. auto-grant (one server core)")
    await stack.flush()
    async with stack.brokers(1) as brokers:
        rows = await autogrant.run_levels(stack, brokers, list(sizes.levels), sizes.level_s, sizes.warmup_s,
                                          first_rate=300, label="1 core", log=log)
    log("1. auto-grant (both cores: two broker processes, Redis and the load generator unpinned)")
    await stack.flush()
    for pid in (stack.redis_pid, os.getpid()):
        pin(pid, plan["all"])
    try:
        async with stack.brokers(2, cpus=plan["all"]) as brokers:
            rows += await autogrant.run_levels(stack, brokers, list(sizes.both_levels), sizes.level_s, sizes.warmup_s,
                                               first_rate=600, label="2 cores", log=log)
    finally:
        pin(stack.redis_pid, plan["server"])
        pin(os.getpid(), plan["load"])
    results["autogrant"] = rows
    log("   profile of the broker at 16 concurrent grants (py-spy)")
    await stack.flush()
    results["autogrant_profile"] = await _profile_autogrant(stack, plan, sizes.profile_s,
                                                            out_dir / f"{stamp}-profile-autogrant.folded")



async def _introspection_section(stack, sizes, results) -> None:
    log("3. introspection and offline verification")
    await stack.flush()
    async with stack.brokers(1) as (b,):
        tokens = await introspect.issue_tokens(stack, b.url, sizes.tokens)
        results["introspection"] = await introspect.run_levels(stack, b, tokens, list(sizes.introspect_levels),
                                                               sizes.level_s, sizes.warmup_s, log)
        results["offline_verification"] = await introspect.offline_rate(b.url, tokens, sizes.offline_s)
        log(f"  offline: {results['offline_verification']['per_s_one_core']} verifications/s on one core")



async def _wakeup_section(args, stack, plan, sizes, results) -> None:
    log("2. approval wake-up")
    results["wakeup"] = []
    await stack.flush()
    slack = None if args.no_slack else _slack_clicker(stack)
    if slack:
        await slack.start_fake()
    try:
        async with stack.brokers(2, **(slack.broker_env() if slack else {})) as (a, b):
            # The approval lands on (or beside) broker A; the agents poll A, then B.
            clicker = slack.bound(a) if slack else wakeup.OperatorClicker(stack.env(), plan["server"])
            await clicker.start()
            try:
                for label, polls in (("one broker", [a.url]), ("two brokers", [b.url])):
                    results["wakeup"].append(await wakeup.measure(stack, a.url, polls, clicker, sizes.wake_n,
                                                                  sizes.wake_gap_s, log, label))
            finally:
                await clicker.stop()
    finally:
        if slack:
            await slack.stop_fake()
    if slack is None:
        results["wakeup_note"] = ("--no-slack: approvals through the operator path" if args.no_slack
                                  else "Slack path pending: " + _slack_missing_reason())



def _desks(stack) -> list[str]:
    """The approval desks a bench broker loads with its settings (the notifiers it feeds)."""
    from broker.app import load_desks  # noqa: PLC0415
    from broker.config import Settings  # noqa: PLC0415

    try:
        return [d.name for d in load_desks(Settings.from_env(stack.env()))]
    except Exception as e:  # noqa: BLE001 - the brokers will refuse too, and say why
        return [f"error: {e}"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _slack_missing_reason() -> str:
    try:
        import bot.slack.desk  # noqa: F401, PLC0415
        import support.fake_slack  # noqa: F401, PLC0415
    except Exception as e:  # noqa: BLE001
        return f"the Slack desk or its stand-in is not importable ({e.__class__.__name__}: {e})"
    return "unknown"


def _slack_clicker(stack):
    """The signed-Slack-click approval path when the Slack desk is installed, else None."""
    from .slack import SlackClicker  # noqa: PLC0415

    return SlackClicker.create(stack)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="small numbers, under a minute: keeps the harness working")
    p.add_argument("--out", type=Path, help="results folder (default bench/results; smoke: a temporary folder)")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite the tables in bench/README.md and docs/")
    p.add_argument("--no-slack", action="store_true", help="approve through the operator path even if Slack is there")
    p.add_argument("--only", type=lambda v: set(v.split(",")), metavar="FIGURES",
                   help="measure only these (comma-separated: autogrant, introspection, wakeup, memory, revocation, credentials, "
                        "killswitch, ssf, reevaluation, mcpgateway) "
                        "and print the results; writes no report")
    p.add_argument("--ssf-n", type=int, help="tokens for the SSF figure (default: 2000; smoke: 50)")
    p.add_argument("--revoke-n", type=int, help="grants for the revocation figure (default: 100000; smoke: 500)")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: rewrite the report, plot and docs from a results file of an earlier run")
    args = p.parse_args(argv)
    if args.render:
        import json  # noqa: PLC0415

        results = json.loads(args.render.read_text())
        results.pop("derived", None)
        out_dir = args.out or ROOT / "bench" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        write_all(results, out_dir, results["meta"]["date"], update_docs=not args.no_docs, log=log)
        return 0
    sizes = SMOKE if args.smoke else FULL
    if args.revoke_n:
        sizes = dataclasses.replace(sizes, revoke_n=args.revoke_n)
    if args.ssf_n:
        sizes = dataclasses.replace(sizes, ssf_n=args.ssf_n)
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="jitgate-bench-")) if args.smoke else ROOT / "bench" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    plan = cpu_plan()
    pin(os.getpid(), plan["load"])
    log(f"jitgate bench ({'smoke' if args.smoke else 'full'}): server side on CPU {sorted(plan['server'])}, "
        f"load on CPU {sorted(plan['load'])}" + ("" if plan["pinned"] else " (one core: nothing pinned)"))
    work = Path(tempfile.mkdtemp(prefix="jitgate-bench-work-"))
    try:
        with Processes() as ps:
            results = run_async(run_all(args, sizes, plan, ps, work, out_dir, stamp))
    except (HarnessError, RuntimeError, OSError, AssertionError) as e:
        traceback.print_exc()
        log(f"bench: the harness broke: {e}")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.only:
        import json  # noqa: PLC0415

        print(json.dumps({k: v for k, v in results.items() if k != "meta"}, indent=1, default=str)[:20000])
        return 0
    missed = write_all(results, out_dir, stamp, update_docs=not (args.smoke or args.no_docs), log=log)
    log(f"bench: done in {results['meta']['seconds']} s; results in {out_dir}")
    if missed:
        log(f"bench: {missed} target(s) MISSED (see above); the harness itself ran fine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
