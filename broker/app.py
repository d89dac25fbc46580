"""Composition root: builds every part from the settings, explicitly, in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import redis.asyncio as aioredis
from starlette.applications import Starlette

from .api import exception_handlers, make_routes
from .audit import AuditKey, AuditLog
from .auditsinks import Sinks
from .breakglass import BreakGlass, BreakGlassLimits
from .clock import Clock, SystemClock
from .config import Settings
from .credentials import Credentials, PluginContext, load_plugins
from .directory import Directory
from .errors import ConfigError
from .identity import AssertionVerifier, Registry, SpiffeBundle
from .lifecycle import Lifecycle
from .metrics import Metrics
from .notices import Notices
from .notify import Desk, DeskContext, LoggingNotifier, Notifier
from .outbox import Outbox
from .policy import PolicyGate, PrincipalInfo
from .policyversions import PolicyVersions
from .redischeck import refuse_eviction
from .redisconn import connect
from .redisline import RedisLine
from .scheduler import Scheduler
from .ssf import Streams, Transmitter
from .ssf.routes import make_routes as ssf_routes
from .store import Store
from .tokens import KeyRing, key_retention_s
from .translog import origin_of
from .wakeups import Wakeups
from .watched import follow

log = logging.getLogger("jitgate")

@dataclass
class Broker:
    """Every long-lived part of one broker process."""

    settings: Settings
    redis: aioredis.Redis
    store: Store
    registry: Registry
    directory: Directory
    gate: PolicyGate
    keyring: KeyRing
    verifier: AssertionVerifier
    lifecycle: Lifecycle
    wakeups: Wakeups
    scheduler: Scheduler
    metrics: Metrics
    outbox: Outbox
    breakglass: BreakGlass
    desks: list = field(default_factory=list)
    credentials: Credentials | None = None
    ssf: Transmitter | None = None  # the Shared Signals transmitter (broker/ssf)
    versions: PolicyVersions | None = None  # policy.loaded / policy.load_failed entries
    _closing: set = field(default_factory=set)  # tasks ending removed agents' grants

    def maybe_reload(self) -> None:
        """Pick up edited agents, approvers, targets and policies. The scheduler's reload job
        (every 2 s) is its only caller: no request path reloads.

        Each file is followed on its own (:func:`broker.watched.follow`): a broken new version
        is logged and refused, the previous one stays in force, and the others still reload.
        """
        if follow("agents file", self.registry.reload_if_changed):
            self.gate.set_agents(principals(self.registry))
            if self.registry.last_removed:
                log.warning("agents removed or denied in %s: %s; ending their grants", self.registry.path,
                            ", ".join(sorted(self.registry.last_removed)))
                self.close_unregistered()
        changed = []
        if follow("approvers or targets file", self.directory.reload_if_changed):
            self.gate.set_directory(self.directory)
            changed.append("approvers or targets file reloaded")
        previous = self.gate.policy_set_hash
        try:
            reloaded = self.gate.reload_if_changed()
        except Exception as exc:  # noqa: BLE001 - keep serving with the last good version
            detail = getattr(exc, "detail", None) or str(exc)
            log.error("reload of the policy folder refused, keeping the previous version: %s", detail)
            reloaded = False
            if self.versions is not None:
                self.versions.failed(detail)
        if reloaded:
            changed.append("policy folder reloaded")
            if self.versions is not None:
                self.versions.reloaded(previous)
        if self.versions is not None and self.versions.pending:
            self._background(self.versions.flush())
        self.gate.reload_shadow_if_changed()  # never raises; never re-decides anything (issue 23 item 2)
        if changed:
            # What policies decide from changed: decide every open request again (issue 16, item 1).
            self._background(self._policies_changed("; ".join(changed)))

    async def drain(self) -> None:
        """The first step of a graceful stop (SIGTERM), before the open connections finish:
        waiting long polls answer a retryable 503 at once, and the scheduler lease is handed
        over (released), so another replica takes the jobs now, not when the lease runs out.
        Waiting SSF polls answer at once (what they hold stays queued for the next poll)."""
        self.wakeups.drain()
        if self.ssf is not None:
            self.ssf.draining = True
        await self.scheduler.stop()

    def close_unregistered(self) -> asyncio.Task | None:
        """End, in the background, the grants and pending requests of agents the registry no
        longer holds (see :meth:`Lifecycle.close_unregistered`); None outside an event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        task = loop.create_task(self._close_unregistered())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    def _background(self, coro) -> asyncio.Task | None:
        """Run ``coro`` in the background, kept until done (awaited at shutdown); None
        outside an event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return None
        task = loop.create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    async def _policies_changed(self, trigger: str) -> None:
        try:
            await self.lifecycle.policies_changed(trigger)
        except Exception:  # noqa: BLE001 - introspection still decides again (the epoch moved first)
            log.exception("could not decide the open requests again after: %s", trigger)

    async def _close_unregistered(self) -> None:
        try:
            n = await self.lifecycle.close_unregistered(lambda agent_id: self.registry.agent(agent_id) is not None)
        except Exception:  # noqa: BLE001 - the next reload or start-up tries again
            log.exception("could not end the grants of removed agents")
            return
        if n:
            log.warning("ended %d grant(s) or request(s) of agents no longer registered", n)


def load_desks(settings: Settings) -> list[Desk]:
    """The approval desks configured in ``settings``, found through the ``jitgate.desks``
    entry points (the core imports no desk). A desk configured wrongly raises."""
    desks = []
    names = set()
    for ep in sorted(entry_points(group="jitgate.desks"), key=lambda e: e.name):
        if ep.name in names:
            continue
        names.add(ep.name)
        desk = ep.load()(settings)
        if desk is not None:
            desks.append(desk)
    refuse_unbuilt_channels(settings, names)
    return desks


def refuse_unbuilt_channels(settings: Settings, available: set[str]) -> None:
    """Chat credentials for a desk this installation does not have: refuse rather than
    leave approvers waiting on a channel that will never show them anything."""
    env = settings.env
    if "slack" not in available and (env.get("SLACK_BOT_TOKEN") or env.get("SLACK_APP_TOKEN") or env.get("SLACK_SIGNING_SECRET")):
        raise ConfigError("SLACK_* is set, but this installation has no Slack desk; unset it and approve with "
                          "`jitgate requests approve`")
    if "teams" not in available and (env.get("MICROSOFT_APP_ID") or env.get("MICROSOFT_APP_PASSWORD")):
        raise ConfigError("MICROSOFT_APP_* is set, but this installation has no Teams desk; unset it and approve with "
                          "`jitgate requests approve`")


def principals(registry: Registry) -> list[PrincipalInfo]:
    return [PrincipalInfo(a.id, a.owner, a.team) for a in registry.agents]


async def build(
    settings: Settings,
    *,
    redis: aioredis.Redis | None = None,
    clock: Clock | None = None,
    notifiers: list[Notifier] | None = None,
    desks: list[Desk] | None = None,
    start_background: bool = True,
) -> Broker:
    """Build and start a broker. Refuses (ConfigError/PolicyError) when anything is missing.

    ``desks`` None loads the configured desks; ``notifiers`` None adds the logging one.
    With ``start_background`` False (operator CLI) nothing runs in the background and
    notifications wait in the outbox for a serving broker.
    """
    desks = load_desks(settings) if desks is None else desks
    if not settings.redis_url:
        raise ConfigError("no Redis: set REDIS_URL, or run `jitgate serve` which starts an embedded one")
    if start_background:
        from . import tracing  # noqa: PLC0415

        tracing.configure(settings.env)  # OTEL_EXPORTER_OTLP_ENDPOINT set: traces (broker/tracing.py)
    owned = redis is None
    if redis is None:
        redis = connect(settings.redis_url, settings.redis_max_connections)
    try:
        await refuse_eviction(redis)
    except BaseException:
        if owned:
            await redis.aclose()
        raise
    clock = clock or SystemClock()
    registry = Registry.load(settings.agents_file)
    directory = Directory.load(settings.approvers_file, settings.targets_file)
    gate = PolicyGate.load(settings.policy_dir, directory, principals(registry))
    # The hot path's own multiplexed connection (redis-py costs ~100 µs of CPU a command);
    # redis-py stays for pub/sub, streams and everything else.
    line = RedisLine(settings.redis_url)
    broker: Broker | None = None
    try:
        store = Store(redis, line, settings.redis_prefix)
        keyring = KeyRing(redis, settings.redis_prefix, settings.key_encryption_key, alg=settings.signing_alg,
                          clock=clock, rotation_s=settings.key_rotation_s,
                          # Every token lives at most this long, break-glass ones included.
                          retain_s=key_retention_s(max(settings.max_duration_s, settings.breakglass_max_s)))
        await keyring.ensure()
        verifier = AssertionVerifier(registry, line, settings.redis_prefix, audience=settings.issuer, clock=clock,
                                     spiffe=SpiffeBundle.from_settings(settings))
        metrics = Metrics()
        gate.on_shadow = metrics.shadow_disagreement
        all_notifiers = list(notifiers if notifiers is not None else [LoggingNotifier()])
        all_notifiers += [d.notifier for d in desks]
        lifecycle = Lifecycle(settings=settings, store=store, gate=gate, directory=directory, keyring=keyring,
                              notifiers=all_notifiers, clock=clock, metrics=metrics, registry=registry,
                              retention_s=settings.retention_s)
        wakeups = Wakeups(redis, store.channel)
        breakglass = BreakGlass(lifecycle, registry, BreakGlassLimits(
            max_duration_s=settings.breakglass_max_s, review_s=settings.breakglass_review_s,
            max_active=settings.breakglass_max_active, max_per_day=settings.breakglass_max_per_day))
        scheduler = Scheduler(lifecycle, keyring, sweep_interval_s=settings.sweep_interval_s, breakglass=breakglass)
        audit_key = await AuditKey.ensure(redis, store.audit_key, settings.key_encryption_key, origin_of(settings.issuer))
        auditlog = AuditLog(store, audit_key, max_lag_s=settings.audit_max_lag_s, sink_grace_s=settings.audit_sink_grace_s,
                            checkpoint_idle_s=settings.audit_checkpoint_idle_s, fail_closed=settings.audit_fail_closed,
                            metrics=metrics)
        if start_background:
            auditlog.sinks = Sinks.from_settings(settings, on_accept=auditlog.sink_accepted)
        lifecycle.audit = scheduler.audit = auditlog
        scheduler.seal_interval_s = settings.audit_seal_interval_s
        if start_background and settings.audit_export:
            from .auditexport import exporters_from_settings  # noqa: PLC0415 - only when an export is configured

            scheduler.exporters = exporters_from_settings(settings, redis, store.audit_stream, origin_of(settings.issuer),
                                                          metrics)
            scheduler.export_interval_s = settings.audit_export_interval_s
        credentials = Credentials(store, load_plugins(directory.targets, settings.credential_secrets,
                                                      PluginContext(settings.key_encryption_key, settings.data_dir)),
                                  clock=clock, metrics=metrics)
        lifecycle.credentials = scheduler.credentials = credentials
        scheduler.credential_settle_s = settings.credential_settle_s
        scheduler.credential_reconcile_s = settings.credential_reconcile_s

        lifecycle.notices = notices = Notices(lifecycle, breakglass)
        outbox = Outbox(redis, store.outbox, scheduler.holder, notices.deliver, on_give_up=lifecycle.notification_failed,
                        yield_to=scheduler.not_revoking)  # revocations first, then the messages about them
        broker = Broker(settings, redis, store, registry, directory, gate, keyring, verifier, lifecycle,
                        wakeups, scheduler, metrics, outbox, breakglass, list(desks), credentials=credentials)
        scheduler.reload = broker.maybe_reload  # the only reload path: requests never reload
        broker.versions = PolicyVersions(store, gate, replica=scheduler.holder, now=clock.now)
        broker.ssf = Transmitter(redis=redis, streams=Streams(redis, settings.redis_prefix, settings), keyring=keyring,
                                 registry=registry, settings=settings, clock=clock, source=store.outbox + ":ssf",
                                 consumer=scheduler.holder, metrics=metrics)
        if start_background:
            await broker.versions.startup()  # refuses to start when the audit log cannot record it
            # Agents removed from the file while no broker (or not this one) noticed: end their grants.
            await broker._close_unregistered()
            for desk in desks:
                await desk.start(DeskContext.of(broker))
            await wakeups.start()
            await scheduler.start()
            auditlog.start()
            await outbox.start()
            await broker.ssf.start()
        return broker
    except BaseException:
        # A start refused half-way (a desk that cannot start, an audit log that cannot record
        # the policy set) leaves nothing running and no connection open behind it.
        if broker is not None:
            with contextlib.suppress(Exception):
                await shutdown(broker)
        else:
            with contextlib.suppress(Exception):
                await line.aclose()
            if owned:
                with contextlib.suppress(Exception):
                    await redis.aclose()
        raise


async def shutdown(broker: Broker) -> None:
    """Stop background work, then the desks, then close Redis. Undelivered notifications
    stay in the outbox for the next broker."""
    await broker.scheduler.stop()
    if broker.lifecycle.audit is not None:
        await broker.lifecycle.audit.stop()
    if broker._closing:
        await asyncio.wait(set(broker._closing), timeout=10)
    await broker.outbox.stop()
    if broker.ssf is not None:
        await broker.ssf.stop()
    await broker.wakeups.stop()
    if broker.credentials is not None:
        await broker.credentials.close()
    for desk in broker.desks:
        try:
            await desk.stop()
        except Exception:  # noqa: BLE001 - stop the others regardless
            log.exception("desk %s did not stop cleanly", desk.name)
    await broker.store.line.aclose()
    await broker.redis.aclose()
    from . import tracing  # noqa: PLC0415

    tracing.shutdown()


def create_app(settings: Settings, *, broker: Broker | None = None, **build_kwargs) -> Starlette:
    """The ASGI app. With ``broker`` given (tests) it is used as is; otherwise one is built
    in the lifespan and shut down with it."""
    holder: dict = {"broker": broker}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        owned = holder["broker"] is None
        embedded = None
        if owned:
            run_settings = settings
            if not settings.redis_url:
                # Started and stopped with the app, so it goes down with the broker
                # even when uvicorn re-raises the signal that stopped it.
                from .embedded_redis import RedisServer  # noqa: PLC0415

                embedded = RedisServer(data_dir=settings.data_dir / "redis").start()
                log.warning("REDIS_URL unset: started an embedded Redis (AOF on) at %s", embedded.url)
                run_settings = dataclasses.replace(settings, redis_url=embedded.url)
            try:
                holder["broker"] = await build(run_settings, **build_kwargs)
            except BaseException:
                if embedded:
                    embedded.stop()
                raise
            _mount(app, holder["broker"])
        try:
            yield
        finally:
            if owned:
                try:
                    await shutdown(holder["broker"])
                finally:
                    if embedded:
                        embedded.stop()

    app = Starlette(lifespan=lifespan, exception_handlers=exception_handlers(lambda: holder["broker"]))
    if broker is not None:
        _mount(app, broker)
    return app


def _mount(app: Starlette, broker: Broker) -> None:
    app.router.routes.extend(make_routes(broker))
    app.router.routes.extend(ssf_routes(broker))
    for desk in broker.desks:
        app.router.routes.extend(desk.routes())
    app.state.broker = broker
