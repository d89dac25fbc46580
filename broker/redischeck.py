"""What the broker requires of its Redis before it starts: that Redis never evicts a key.

Under any eviction policy a full Redis silently drops keys: requests, replay-guard keys
(they carry a TTL, so ``volatile-*`` policies drop them first, and a dropped one lets an
assertion be replayed) or audit entries. With ``noeviction`` a full Redis refuses writes
and the broker fails closed (503). Several managed services default to ``volatile-lru``, so
this is checked, not assumed (docs/production.md, "Redis").
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

SAFE_POLICY = "noeviction"


def eviction_problem(memory: dict[str, Any]) -> str | None:
    """Why a Redis whose ``INFO memory`` is ``memory`` would lose state, or None when it would not.

    An eviction policy matters only with a memory limit: without ``maxmemory`` Redis never evicts."""
    policy = str(memory.get("maxmemory_policy", "")).strip()
    try:
        limit = int(memory.get("maxmemory", 0))
    except (TypeError, ValueError):
        limit = -1  # unreadable: assume a limit, so an evicting policy is refused
    if not policy:
        return "Redis did not report its maxmemory-policy (INFO memory); jitgate needs noeviction"
    if policy != SAFE_POLICY and limit != 0:
        return (
            f"Redis evicts keys when full (maxmemory-policy {policy}, maxmemory {limit}): it could drop "
            f"requests, replay guards or audit entries. Set maxmemory-policy {SAFE_POLICY} "
            "(see docs/production.md, Redis)"
        )
    return None


async def refuse_eviction(redis: Any) -> None:
    """Refuse to start (ConfigError) on a Redis that may evict keys."""
    problem = eviction_problem(await redis.info("memory"))
    if problem:
        raise ConfigError(problem)
