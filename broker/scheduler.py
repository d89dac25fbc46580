"""APScheduler jobs: deadline sweeps and key rotation, run by the replica holding a lease.

Deadlines live in one Redis sorted set (score = deadline in ms), so a sweep costs what
is due, not what exists, and anything missed while no broker ran is caught by the first
sweep after start. Every job is a compare-and-set, so a duplicate run (two replicas
during a lease hand-over, a retry) is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .clock import new_id
from .outage import Outage
from .watched import RELOAD_INTERVAL_S

log = logging.getLogger("jitgate.scheduler")

# The lease is renewed by every job run (the sweep runs every sweep interval), so a holder that
# dies is replaced within this long: the longer of 0.8 s and four sweep intervals (issue 21.4;
# it was 5 s). A holder stalled for longer loses it to another replica; a sweep twice is harmless.
LEASE_TTL_MIN_MS = 800
SWEEP_BATCH = 500
SEAL_FULL = 2000  # a seal pass this large found a backlog: the next one starts at once

# Take the lease if free, ours, or held by ARGV[3] (a holder this process proved dead); one
# atomic step. Returns 1 when this process holds it, else the holder.
_LEASE_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] or (ARGV[3] ~= '' and cur == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return cur
"""


def lease_ttl_ms(sweep_interval_s: float) -> int:
    return max(LEASE_TTL_MIN_MS, int(4 * sweep_interval_s * 1000))


def holder_is_dead(holder: str, *, host: str | None = None, pid: int | None = None) -> bool:
    """True when ``holder`` (``host:pid:id``) is provably a dead process: on this host, with this
    process's own pid (a container restarted: its pid is reused, the id is not) or a pid no process
    has. Another host's holder is never judged here: its lease runs out instead."""
    host = socket.gethostname() if host is None else host
    pid = os.getpid() if pid is None else pid
    try:
        h_host, h_pid, _ = holder.rsplit(":", 2)
        other = int(h_pid)
    except ValueError:
        return False
    if h_host != host or other <= 0:
        return False
    if other == pid:
        return True  # this pid is ours now: the holder was an earlier process
    try:
        os.kill(other, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists (another user's process): alive as far as we can tell
    return False
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Scheduler:
    """Owns the APScheduler instance and the jobs."""

    def __init__(self, lifecycle, keyring, *, sweep_interval_s: float = 0.2, rotation_check_s: float = 60.0,
                 breakglass=None) -> None:
        self.breakglass = breakglass
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.keyring = keyring
        self.sweep_interval_s = sweep_interval_s
        self.rotation_check_s = rotation_check_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{new_id()}"
        self.lease_ttl_ms = lease_ttl_ms(sweep_interval_s)
        self.lease_key = self.store.prefix + "scheduler:lease"
        self._lease_outage = Outage(log, "taking the scheduler lease (Redis)")
        self._lease = self.store.redis.register_script(_LEASE_LUA)
        self._release = self.store.redis.register_script(_RELEASE_LUA)
        self.aps = AsyncIOScheduler(timezone="UTC")
        self._running: set[asyncio.Task] = set()  # jobs in flight, awaited by stop()
        self._stopping = False
        self.swept = 0
        # One sweep at a time in this process: a sweep called directly (shutdown, tests, the CLI)
        # waits for the job's sweep in flight instead of racing it for the same due requests.
        self._sweep_lock = asyncio.Lock()
        # Clear while a sweep works through a backlog (full batches): the outbox waits meanwhile.
        self.not_revoking = asyncio.Event()
        self.not_revoking.set()
        # Re-reads edited agents/approvers/targets/policies (Broker.maybe_reload); set by the
        # composition root. The only reload path; every replica runs it: each holds its own copy of the files.
        self.reload = None
        # Real credentials (broker/credentials.Credentials), set by the composition root: their
        # settle job revokes those whose grant ended; the reconciler removes what nobody recorded.
        self.credentials = None
        self.credential_settle_s = 0.5
        self.credential_reconcile_s = 300.0
        # The audit sealer (broker/audit.AuditLog), set by the composition root. It runs in its own
        # loop, not as an APScheduler job beside the sweep: sharing the sweep's tick starved it
        # (the unsealed tail's p99 reached 279 ms against a 250 ms bound).
        self.audit = None
        self.seal_interval_s = 0.05
        self._seal_task: asyncio.Task | None = None
        self._seal_stopping = False
        self._seal_outage = Outage(log, "sealing the audit log")
        # The audit export sink (broker/auditexport.Exporter, one per destination), set by the
        # composition root: each forwards sealed entries in its own task while this replica holds
        # the lease, so a slow collector never holds up sealing or the sweep.
        self.exporters: list = []
        self.export_interval_s = 0.5
        self._export_tasks: list[asyncio.Task] = []
        self._export_checked = float("-inf")
        self._export_held = False

    async def start(self) -> None:
        """Run one catch-up sweep now, then the periodic jobs."""
        if await self.has_lease():
            await self.sweep()
        self.aps.add_job(self._sweep_job, "interval", seconds=self.sweep_interval_s, id="sweep",
                         max_instances=1, coalesce=True, misfire_grace_time=None)
        self.aps.add_job(self._rotate_job, "interval", seconds=self.rotation_check_s, id="rotate",
                         max_instances=1, coalesce=True, misfire_grace_time=None)
        self.aps.add_job(self._reload_job, "interval", seconds=RELOAD_INTERVAL_S, id="reload",
                         max_instances=1, coalesce=True, misfire_grace_time=None)
        self.aps.add_job(self._remind_job, "interval", seconds=max(self.sweep_interval_s, 1.0), id="remind",
                         max_instances=1, coalesce=True, misfire_grace_time=None)
        if self.credentials:
            self.aps.add_job(self._settle_job, "interval", seconds=self.credential_settle_s, id="credentials",
                             max_instances=1, coalesce=True, misfire_grace_time=None)
            self.aps.add_job(self._reconcile_job, "interval", seconds=self.credential_reconcile_s, id="reconcile",
                             max_instances=1, coalesce=True, misfire_grace_time=None)
        self.aps.start()
        if self.audit is not None:
            self._seal_task = asyncio.get_running_loop().create_task(self._seal_loop())
        for exporter in self.exporters:
            self._export_tasks.append(asyncio.get_running_loop().create_task(
                exporter.run(self._export_lease, self.export_interval_s)))

    async def stop(self) -> None:
        """Stop the jobs, let one in flight finish (it holds Redis connections that are about
        to be closed), and give up the lease."""
        self._stopping = True
        if self.aps.running:
            self.aps.shutdown(wait=False)
        if self._seal_task is not None:
            # A flag as well as the cancellation: a cancellation that lands inside a Redis call
            # can be swallowed by the client, and the loop must end regardless.
            self._seal_stopping = True
            self._seal_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._seal_task, 5)
            self._seal_task = None
            with contextlib.suppress(Exception):
                if await self.has_lease():
                    await self.audit.seal()  # what the last tick missed: sealed before the lease goes
        for task in self._export_tasks:
            task.cancel()
        for task in self._export_tasks:
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
                await asyncio.wait_for(task, 5)
        self._export_tasks = []
        for exporter in self.exporters:
            with contextlib.suppress(Exception):
                await exporter.close()
        running = {t for t in self._running if not t.done() and t is not asyncio.current_task()}
        if running:
            await asyncio.wait(running, timeout=10)
        try:
            if await self._release(keys=[self.lease_key], args=[self.holder]):
                log.info("scheduler lease handed over (%s)", self.holder)
        except Exception:  # noqa: BLE001 - best effort; the lease times out anyway
            pass

    @contextlib.contextmanager
    def _tracked(self):
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            yield
        except asyncio.CancelledError:
            # APScheduler's shutdown cancels a job in flight (a sweep under SIGTERM): each step of a
            # job is one atomic script, so a cancelled job left nothing half done; not an error.
            if not self._stopping:
                raise
            log.debug("a scheduler job in flight was cancelled by the shutdown")
        finally:
            self._running.discard(task)

    async def has_lease(self) -> bool:
        """Take or renew the scheduler lease; True if this process holds it."""
        try:
            got = await self._lease(keys=[self.lease_key], args=[self.holder, self.lease_ttl_ms, ""])
            if got != 1:
                other = got.decode() if isinstance(got, bytes) else str(got)
                if holder_is_dead(other):  # a restart on this host: take over now, not at the TTL
                    got = await self._lease(keys=[self.lease_key], args=[self.holder, self.lease_ttl_ms, other])
                    if got == 1:
                        log.info("took the scheduler lease from %s, a process that is gone", other)
        except Exception as e:  # noqa: BLE001 - no Redis, no lease
            self._lease_outage.failed(e.__class__.__name__)
            return False
        self._lease_outage.ok()
        return got == 1

    async def _seal_loop(self) -> None:
        """Seal the audit log every ``seal_interval_s`` while this replica holds the lease; a
        full batch goes on at once (a backlog after an outage is caught up without waiting)."""
        lease_checked = 0.0
        held = False
        loop = asyncio.get_running_loop()
        self._seal_stopping = False
        while not self._seal_stopping:
            started = loop.time()
            try:
                # The lease is re-checked (and renewed) every quarter TTL, not every tick.
                if started - lease_checked >= self.lease_ttl_ms / 4000:
                    held, lease_checked = await self.has_lease(), started
                if held:
                    with self._tracked():
                        n = await self.audit.seal()
                    self._seal_outage.ok()
                    if n >= SEAL_FULL:
                        await asyncio.sleep(0)
                        continue
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - logged once per outage; the health check fails closed
                self._seal_outage.failed(repr(e))
            await asyncio.sleep(max(0.0, self.seal_interval_s - (loop.time() - started)))

    async def _export_lease(self) -> bool:
        """Whether this replica may export now: it holds the lease (checked at most every
        quarter TTL, like the seal loop; an export twice during a hand-over is a duplicate the
        leaf index names, never a loss)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._export_checked >= self.lease_ttl_ms / 4000:
            self._export_held, self._export_checked = await self.has_lease(), now
        return self._export_held

    async def _sweep_job(self) -> None:
        with self._tracked():
            if await self.has_lease():
                await self.sweep(renew=True)
            else:
                self.not_revoking.set()  # another replica sweeps: nothing here to wait for

    async def _reload_job(self) -> None:
        with self._tracked():
            if self.reload is not None:
                try:
                    self.reload()
                except Exception:  # noqa: BLE001 - maybe_reload logs and keeps the last good version
                    log.exception("reload check failed")

    async def _remind_job(self) -> None:
        with self._tracked():
            if await self.has_lease():
                try:
                    await self.lifecycle.remind_due()
                    await self._review_check()
                    if self.breakglass is not None:
                        await self.breakglass.sweep_reviews()
                except Exception:  # noqa: BLE001
                    log.exception("reminders failed")

    async def _review_check(self) -> None:
        """The policy review reminder (issue 23 item 5): Redis is asked at most hourly per
        process, the reminder goes at most daily (broker/policyreview.py)."""
        from .policyreview import CHECK_EVERY_S, remind_if_due  # noqa: PLC0415

        now = self.lifecycle._now()
        if now < getattr(self, "_review_next", 0.0):
            return
        self._review_next = now + CHECK_EVERY_S
        try:
            await remind_if_due(self.lifecycle)
        except Exception:  # noqa: BLE001 - a reminder never stops the other jobs
            log.exception("policy review check failed")

    async def _settle_job(self) -> None:
        with self._tracked():
            if await self.has_lease():
                try:
                    await self.credentials.settle()
                    if self.lifecycle.metrics is not None:
                        self.lifecycle.metrics.revocations_pending.set(await self.credentials.pending())
                except Exception:  # noqa: BLE001 - the next run tries again; nothing is forgotten
                    log.exception("settling credentials failed")

    async def _reconcile_job(self) -> None:
        with self._tracked():
            if await self.has_lease():
                try:
                    await self.credentials.reconcile()
                except Exception:  # noqa: BLE001
                    log.exception("reconciling credentials failed")

    async def _rotate_job(self) -> None:
        with self._tracked():
            if await self.has_lease():
                try:
                    if await self.keyring.rotate():
                        log.info("signing key rotated; current kid %s", self.keyring.current_kid)
                except Exception:  # noqa: BLE001
                    log.exception("key rotation failed")
            else:
                await self.keyring.refresh()

    async def sweep(self, max_batches: int = 200, *, renew: bool = False) -> int:
        """Expire everything whose deadline has passed, a batch at a time (one script call
        and one audit entry per batch); returns how many changed. With ``renew`` (the job, which
        holds the lease) the lease is renewed after each full batch, and the sweep stops if lost."""
        async with self._sweep_lock:
            return await self._sweep(max_batches, renew=renew)

    async def _sweep(self, max_batches: int, *, renew: bool) -> int:
        changed, held = 0, False
        try:
            for _ in range(max_batches):
                now_ms = int(self.lifecycle.clock.now() * 1000)
                due = await self.store.due(now_ms, SWEEP_BATCH)
                if not due:
                    break
                if len(due) == SWEEP_BATCH and not held:
                    held = True
                    self.not_revoking.clear()  # a backlog: the desks wait a moment
                try:
                    n = await self.lifecycle.expire_due(due)
                except Exception:  # noqa: BLE001 - a bad batch must not stop the sweep: go one by one
                    log.exception("could not expire a batch of %d; trying one by one", len(due))
                    n = await self._one_by_one(due)
                changed += n
                if len(due) < SWEEP_BATCH or n == 0:
                    break
                if renew and not await self.has_lease():
                    break  # another replica took over while this backlog ran
        finally:
            # Under a storm (this sweep found a backlog) the desks stay held until a sweep
            # finds less than a batch due: telling waits, revoking does not.
            if changed < SWEEP_BATCH:
                self.not_revoking.set()
        self.swept += changed
        return changed

    async def _one_by_one(self, due: list[str]) -> int:
        changed = 0
        for rid in due:
            try:
                if (await self.lifecycle.expire(rid)).ok:
                    changed += 1
            except Exception:  # noqa: BLE001 - one bad request must not stop the sweep
                log.exception("could not expire %s", rid)
        return changed
