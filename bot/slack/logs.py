"""Loggers for Bolt and the Slack SDK that never write request bodies.

On a failed signature check Bolt's verification middleware logs the whole request body
at INFO, and its "unhandled request" warning carries the payload too; the SDK logs
payloads at DEBUG. Those bodies hold users' names, request ids and response URLs. Bolt
copies the level and filters of the logger it is given to every logger it derives, so
one logger at WARNING with a redacting filter covers it all.
"""

from __future__ import annotations

import logging
import re

_BODY = re.compile(r"body|payload|unhandled request|data:", re.IGNORECASE)


class NoBodies(logging.Filter):
    """Keeps a record's first words and drops anything that looks like a request body."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: say nothing of its arguments
            message = str(record.msg)
        if _BODY.search(message):
            head = re.split(r"[(:{]", message, maxsplit=1)[0].strip()
            record.msg = f"{head} (request body not logged)"
            record.args = None
        return True


def quiet_logger(name: str, level: int = logging.WARNING) -> logging.Logger:
    """A logger under ``jitgate.slack`` at ``level`` that redacts bodies (idempotent)."""
    logger = logging.getLogger(name)
    logger.setLevel(level)
    if not any(isinstance(f, NoBodies) for f in logger.filters):
        logger.addFilter(NoBodies())
    return logger
