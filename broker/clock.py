"""Time and randomness, injected so tests move time instead of sleeping."""

from __future__ import annotations

import secrets
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: float | None = None) -> None:
        self._t = time.time() if start is None else start

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        self._t += seconds


def new_id(prefix: str = "") -> str:
    """A URL-safe, unguessable id (128 bits)."""
    return prefix + secrets.token_urlsafe(16).replace("-", "x").replace("_", "y")
