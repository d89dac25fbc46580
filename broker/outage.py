"""Say a Redis outage once, not once per retry.

Background loops (the scheduler's lease, the outbox consumer, the wake-up subscription)
retry every fraction of a second while Redis is away. Each keeps an :class:`Outage`: the
first failure is a warning, later ones are debug lines with a warning summary every
``summary_every_s``, and the first success after failures says how long it lasted.
"""

from __future__ import annotations

import logging
import time
from typing import Callable


class Outage:
    """The state of one loop's dependency: up, or down since when and how many failures."""

    def __init__(self, log: logging.Logger, what: str, *, summary_every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.what = what
        self.summary_every_s = summary_every_s
        self.clock = clock
        self.since: float | None = None  # None: up
        self.failures = 0
        self._summarised = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, reason: str) -> None:
        now = self.clock()
        self.failures += 1
        if self.since is None:
            self.since = self._summarised = now
            self.log.warning("%s failed (%s); retrying", self.what, reason)
        elif now - self._summarised >= self.summary_every_s:
            self._summarised = now
            self.log.warning("%s still failing after %.0f s (%d attempts; last: %s)", self.what,
                             now - self.since, self.failures, reason)
        else:
            self.log.debug("%s failed again (%s)", self.what, reason)

    def ok(self) -> None:
        if self.since is None:
            return
        self.log.warning("%s works again after %.1f s (%d failed attempts)", self.what,
                         self.clock() - self.since, self.failures)
        self.since, self.failures = None, 0
