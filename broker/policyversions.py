"""Policy versions in the audit log (issue 18, item 5).

Every policy set a broker loads has a content hash (:func:`broker.policy.set_hash`). Loading at
start-up, and every hot reload that changes the set, appends a ``policy.loaded`` entry (the file
names and their sha256, the set hash, the previous set hash, what changed it, which replica); a
reload that fails keeps the old set in force and appends ``policy.load_failed``.

Once per distinct change per replica, at most: the reload job runs every 2 s on every replica,
and each replica records its own switch (an auditor sees when each replica began deciding with
the new set; the entry names the replica). A broken folder is retried every 2 s, but its failure
is recorded once per (attempted set hash, error) until the folder changes or loads. Operator
commands (``jitgate requests approve`` …) also decide with the policies they loaded: they record
``policy.loaded`` (by ``cli``) only when their set is not the one last recorded by anyone
(``<prefix>policy:last``), so a listing does not write an entry.

An entry that cannot be written (Redis down) is kept in order and written at the next reload
tick; at start-up it is a refusal to start, like every other audit failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .audit import event
from .model import iso
from .policy import PolicyGate, folder_hash

log = logging.getLogger("jitgate.policy")

STARTUP = "startup"
RELOAD = "reload: file changed"
LOADED = "policy.loaded"
LOAD_FAILED = "policy.load_failed"
_MAX_PENDING = 100  # entries waiting for Redis; the oldest are kept (they say what changed first)


class PolicyVersions:
    """Writes the ``policy.loaded`` / ``policy.load_failed`` entries of one process."""

    def __init__(self, store, gate: PolicyGate, *, replica: str, now: Callable[[], float]) -> None:
        self.store = store
        self.gate = gate
        self.replica = replica
        self._now = now
        self.last_key = f"{store.prefix}policy:last"
        self._pending: list[bytes] = []
        self._last_failure: tuple[str, str] | None = None
        self._lock = asyncio.Lock()

    def _loaded_event(self, by: str, previous: str | None) -> bytes:
        return event(LOADED, str(iso(self._now())), None, {"by": by, "replica": self.replica},
                     policy_dir=str(self.gate.policy_dir),
                     files=[{"name": n, "sha256": h} for n, h in self.gate.policy_files],
                     policy_set_hash=self.gate.policy_set_hash, previous_policy_set_hash=previous)

    async def startup(self, by: str = STARTUP) -> None:
        """Record the set loaded at start-up (raises when the entry cannot be written)."""
        await self._write([self._loaded_event(by, None)])

    async def operator(self, by: str) -> bool:
        """An operator command's set: recorded only when it is not the one last recorded."""
        last = await self.store.redis.get(self.last_key)
        if last is not None and last.decode() == self.gate.policy_set_hash:
            return False
        await self._write([self._loaded_event(by, last.decode() if last else None)])
        return True

    def reloaded(self, previous: str, by: str = RELOAD) -> bool:
        """A reload put a new set in force: queue its entry (when the content changed; a file
        only touched changes nothing). Returns whether an entry was queued."""
        self._last_failure = None
        if self.gate.policy_set_hash == previous:
            return False
        self._queue(self._loaded_event(by, previous))
        return True

    def failed(self, error: str, by: str = RELOAD) -> bool:
        """A reload was refused (the old set stays): queue ``policy.load_failed`` once per
        distinct attempted content and error. Returns whether an entry was queued."""
        try:
            files, attempted = folder_hash(self.gate.policy_dir)
        except OSError:
            files, attempted = (), ""
        key = (attempted, error)
        if key == self._last_failure:
            return False
        self._last_failure = key
        self._queue(event(LOAD_FAILED, str(iso(self._now())), None, {"by": by, "replica": self.replica},
                          policy_dir=str(self.gate.policy_dir), error=error[:1000],
                          files=[{"name": n, "sha256": h} for n, h in files], attempted_policy_set_hash=attempted,
                          policy_set_hash=self.gate.policy_set_hash))
        return True

    @property
    def pending(self) -> int:
        """Entries waiting to be written."""
        return len(self._pending)

    def _queue(self, ev: bytes) -> None:
        if len(self._pending) < _MAX_PENDING:
            self._pending.append(ev)
        else:
            log.error("policy version entries waiting for Redis exceed %d; dropping the newest", _MAX_PENDING)

    async def flush(self) -> int:
        """Write the queued entries, in order; what fails stays queued for the next tick."""
        async with self._lock:
            if not self._pending:
                return 0
            batch = list(self._pending)
            try:
                await self._write(batch)
            except Exception:  # noqa: BLE001 - kept; the reload job tries again in 2 s
                log.exception("could not record %d policy version entries; retrying", len(batch))
                return 0
            del self._pending[: len(batch)]
            return len(batch)

    async def _write(self, events: list[bytes]) -> None:
        await self.store.append(events)
        await self.store.redis.set(self.last_key, self.gate.policy_set_hash)
