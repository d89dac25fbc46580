"""Issuing, revoking and reconciling real credentials: the core's side of the port.

The record comes first. Before a plugin creates a credential, its handle is written to a
Redis hash (``cred:issued``: handle → request, target, the time by which collection must
have recorded it); the collect transition then records it on the request and in the audit log
(fingerprint, never the secret). So whatever ends a grant — completion, revocation, expiry,
a kill switch, a removed agent, a crash half-way through collection — the revocation never
depends on memory or on which code path ended it: :meth:`Credentials.settle` (a leased job)
revokes every recorded credential whose grant is no longer active, and keeps retrying, with
back-off, the ones the target refused (``cred:retry``; they survive restarts with Redis).
:meth:`Credentials.reconcile` (a slower leased job) also lists what each plugin finds in its
target under jitgate's prefix and revokes anything nobody recorded: a credential someone
else made, or one that outlived its record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import orjson

from ..audit import event
from ..errors import ConfigError
from ..model import ACTIVE, APPROVED, iso
from .port import CredentialPlugin, CredentialUnavailable, Grant, IssueFailed, Issued, RevokeFailed

log = logging.getLogger("jitgate.credentials")

# Collection records the credential within this long of creating it, or settle() revokes it.
ISSUE_GRACE_S = 30.0
RETRY_BASE_S = 1.0
RETRY_MAX_S = 300.0
SETTLE_BATCH = 1000
# Test hook: pause between creating a credential and recording the collection (tests kill -9 there).
PAUSE_ENV = "JITGATE_TEST_PAUSE_AFTER_ISSUE_S"

# Notice kinds (broker.notify.Kind values) the settle and reconcile jobs queue for the desks.
REVOCATION_PENDING = "cred.revocation_pending"
ORPHAN_REVOKED = "cred.orphan"


@dataclass(frozen=True)
class Binding:
    """A target's credential plugin."""

    target: str
    plugin: CredentialPlugin


@dataclass(frozen=True)
class PluginContext:
    """What a plugin may need of the broker beyond its secrets: the key-encryption key (the SSH
    plugin encrypts its CA key with it) and the data folder."""

    kek: bytes | None = None
    data_dir: Path = Path(".jitgate")


def load_plugins(targets, secrets: dict[str, str], context: PluginContext | None = None) -> dict[str, Binding]:
    """A plugin for each target whose ``credential:`` names one, through the
    ``jitgate.credentials`` entry points (factories ``(target_id, config, secrets, context)``);
    an unknown plugin or a wrong config raises."""
    factories = {ep.name: ep for ep in entry_points(group="jitgate.credentials")}
    out: dict[str, Binding] = {}
    for target in targets:
        config = getattr(target, "credential", None)
        if not config:
            continue
        name = config.get("plugin")
        if name not in factories:
            raise ConfigError(f"target {target.id}: credential plugin {name!r} is not installed "
                              f"(known: {', '.join(sorted(factories)) or 'none'})")
        out[target.id] = Binding(target.id, factories[name].load()(target.id, dict(config), secrets,
                                                                  context or PluginContext()))
    return out


class Credentials:
    """The credentials of every target with a plugin."""

    def __init__(self, store, bindings: dict[str, Binding], *, clock, metrics=None, notify=None) -> None:
        self.store = store
        self.bindings = bindings
        self.clock = clock
        self.metrics = metrics
        self.issued_key = f"{store.prefix}cred:issued"
        self.retry_key = f"{store.prefix}cred:retry"
        self.attempts_key = f"{store.prefix}cred:attempts"

    def __bool__(self) -> bool:
        return bool(self.bindings)

    def _now(self) -> float:
        return self.clock.now()

    def _count(self, name: str, n: int = 1, **labels: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name, n, **labels)

    # ------------------------------------------------------------------ issue
    async def issue(self, request_id: str, agent: str, action: str, target: str, expires_at: int) -> Issued | None:
        """Issue the credential for a grant being collected, or None when the target has no
        plugin or its mapping does not name the action. Raises :class:`CredentialUnavailable`
        (audited) when the target cannot issue now."""
        binding = self.bindings.get(target)
        if binding is None or not binding.plugin.mapped(action):
            return None
        plugin = binding.plugin
        grant = Grant(request_id, agent, action, target, expires_at)
        handle = plugin.handle_for(grant)
        now = self._now()
        # The record first: a crash from here on leaves something settle() will revoke.
        await self.store.redis.hset(self.issued_key, handle, orjson.dumps({
            "request_id": request_id, "target": target, "plugin": plugin.name,
            "grace_ms": int((now + ISSUE_GRACE_S) * 1000)}))
        try:
            issued = await plugin.issue(handle, grant)
        except IssueFailed as e:
            self._count("credential_failures", op="issue", plugin=plugin.name)
            await self._forget(handle)
            retry = 5
            await self.store.append([event("credential.unavailable", iso(now), request_id, {"by": "broker"},
                                           target=target, plugin=plugin.name, reason=str(e)[:500])])
            # The agent is told what to do, not the target's inner workings (hosts, SQL errors):
            # those are in the audit entry and the log.
            log.warning("credential for %s on %s not issued: %s", request_id, target, e)
            raise CredentialUnavailable(
                f"{target} cannot issue a credential now; no token was issued and the grant can still be "
                f"collected until its deadline: retry in {retry} s", retry_after=retry) from e
        self._count("credentials_issued", plugin=plugin.name)
        if issued.ref:
            await self.store.redis.hset(self.issued_key, handle, orjson.dumps({
                "request_id": request_id, "target": target, "plugin": plugin.name, "ref": issued.ref,
                "grace_ms": int((now + ISSUE_GRACE_S) * 1000)}))
        pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
        if pause > 0:
            log.warning("%s: pausing %s s between issue and record", PAUSE_ENV, pause)
            await asyncio.sleep(pause)
        return issued

    async def discard(self, issued: Issued, request_id: str) -> None:
        """Revoke a credential whose collection did not go through (best effort: settle()
        revokes it otherwise)."""
        try:
            raw = await self.store.redis.hget(self.issued_key, issued.handle)
            rec = orjson.loads(raw) if raw else {"request_id": request_id, "target": "", "plugin": issued.plugin,
                                                 "ref": issued.ref}
            await self._revoke_one(issued.handle, rec, why="collection did not complete")
        except Exception:  # noqa: BLE001 - the record stays; settle() retries
            log.exception("could not revoke credential %s at once", issued.handle)

    # ------------------------------------------------------------------ settle
    async def pending(self) -> int:
        """How many recorded credentials still wait for a revocation that failed."""
        return int(await self.store.redis.zcard(self.retry_key))

    async def settle(self) -> int:
        """Revoke every recorded credential whose grant is over (or never got recorded within
        the grace), unless its retry back-off has not run out; returns how many were revoked."""
        entries = await self.store.redis.hgetall(self.issued_key)
        if not entries:
            return 0
        now = self._now()
        now_ms = int(now * 1000)
        items = [(h.decode(), orjson.loads(v)) for h, v in list(entries.items())[:SETTLE_BATCH]]
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for handle, rec in items:
                pipe.hmget(self.store.req_key(rec["request_id"]), "status", "credential", "grant_exp")
                pipe.zscore(self.retry_key, handle)
            rows = await pipe.execute()
        revoked = 0
        for i, (handle, rec) in enumerate(items):
            (status, cred, exp), retry_at = rows[2 * i], rows[2 * i + 1]
            if retry_at is not None and retry_at > now_ms:
                continue
            status = status.decode() if status else None
            recorded = orjson.loads(cred).get("handle") if cred else None
            if status == ACTIVE and recorded == handle and exp and float(exp) > now:
                continue  # the grant is live
            if status in (ACTIVE, APPROVED) and recorded != handle and now_ms < rec.get("grace_ms", 0):
                continue  # being collected now
            why = f"grant {status}" if status and recorded == handle else "never recorded" if status else "request gone"
            if status == ACTIVE and recorded == handle:
                why = "grant expired"
            if await self._revoke_one(handle, rec, why=why):
                revoked += 1
        return revoked

    async def _revoke_one(self, handle: str, rec: dict, *, why: str, orphan: bool = False) -> bool:
        binding = self.bindings.get(rec.get("target", ""))
        plugin = binding.plugin if binding else next((b.plugin for b in self.bindings.values()
                                                      if b.plugin.name == rec.get("plugin")
                                                      and handle.startswith(b.plugin.prefix)), None)
        rid = rec.get("request_id")
        now = self._now()
        if plugin is None:
            log.error("credential %s: no plugin for target %r any more; it stays recorded", handle, rec.get("target"))
            return False
        try:
            existed = await plugin.revoke(handle, rec.get("ref"))
        except RevokeFailed as e:
            await self._failed(handle, rid, plugin.name, str(e), now)
            return False
        kind = "credential.orphan_revoked" if orphan else "credential.revoked"
        await self.store.append([event(kind, iso(now), rid, {"by": "reconciler" if orphan else "broker"},
                                       plugin=plugin.name, handle=handle, existed=existed, reason=why)])
        await self._forget(handle)
        self._count("credentials_revoked", plugin=plugin.name)
        return True

    async def _failed(self, handle: str, rid: str | None, plugin: str, reason: str, now: float) -> None:
        attempts = int(await self.store.redis.hincrby(self.attempts_key, handle, 1))
        delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (attempts - 1))
        await self.store.redis.zadd(self.retry_key, {handle: int((now + delay) * 1000)})
        self._count("credential_failures", op="revoke", plugin=plugin)
        log.warning("revoking credential %s failed (attempt %d, next in %.0f s): %s", handle, attempts, delay, reason)
        if attempts == 1:
            # Said once (audit, and the desks: "revocation pending"); every retry is counted.
            ev = event("credential.revocation_failed", iso(now), rid, {"by": "broker"}, plugin=plugin, handle=handle,
                       reason=reason[:500], retry_in_s=delay)
            if rid and await self.store.redis.exists(self.store.req_key(rid)):
                await self.store.append([ev], rid, notify=REVOCATION_PENDING)
            else:
                await self.store.append([ev])

    async def _forget(self, handle: str) -> None:
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.issued_key, handle)
            pipe.zrem(self.retry_key, handle)
            pipe.hdel(self.attempts_key, handle)
            await pipe.execute()

    # ------------------------------------------------------------------ reconcile
    async def reconcile(self) -> list[dict[str, Any]]:
        """Revoke what each plugin finds in its target under jitgate's prefix that no record
        names (made by someone else, or outliving its record), each an audit entry and a
        security alert; then settle the recorded ones. Returns the findings."""
        findings: list[dict[str, Any]] = []
        seen: set[int] = set()
        for binding in self.bindings.values():
            plugin = binding.plugin
            if id(plugin) in seen:
                continue
            seen.add(id(plugin))
            try:
                handles = await plugin.list_issued()
            except Exception as e:  # noqa: BLE001 - one target down must not stop the others
                log.warning("reconciler: cannot list %s credentials of %s: %s", plugin.name, binding.target, e)
                continue
            if not handles:
                continue
            known = await self.store.redis.hmget(self.issued_key, handles)
            for handle, rec in zip(handles, known):
                if rec is not None:
                    continue  # recorded: settle() decides
                rid = await self._request_of(handle, plugin.prefix)
                finding = {"target": binding.target, "plugin": plugin.name, "handle": handle, "request_id": rid}
                if await self._revoke_one(handle, {"request_id": rid, "target": binding.target, "plugin": plugin.name},
                                          why="no active grant behind it (found by the reconciler)", orphan=True):
                    findings.append(finding)
                    await self._alert(finding)
        await self.settle()
        return findings

    async def _request_of(self, handle: str, prefix: str) -> str | None:
        """The request a handle names (``<prefix><request id>_<hex>``), if it still exists."""
        m = re.fullmatch(r"([A-Za-z0-9]+)[-_][0-9a-f]{6}", handle[len(prefix):])
        if m is None:
            return None
        rid = m.group(1)
        return rid if await self.store.redis.exists(self.store.req_key(rid)) else None

    async def _alert(self, finding: dict) -> None:
        """The security alert: the desks' security channel when a request is named, the log always."""
        log.warning("SECURITY: credential %s in %s had no active grant behind it; revoked",
                    finding["handle"], finding["target"])
        self._count("credential_orphans", plugin=finding["plugin"])
        rid = finding.get("request_id")
        if rid:
            ev = event("security.alert", iso(self._now()), rid, {"by": "reconciler"}, finding="credential.orphan",
                       handle=finding["handle"], target=finding["target"])
            await self.store.append([ev], rid, notify=ORPHAN_REVOKED)

    async def close(self) -> None:
        for binding in self.bindings.values():
            try:
                await binding.plugin.close()
            except Exception:  # noqa: BLE001
                log.exception("closing the %s plugin of %s", binding.plugin.name, binding.target)
