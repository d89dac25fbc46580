"""A console request refused before reaching the lifecycle (session, origin, CSRF)."""

from __future__ import annotations


class Refused(Exception):
    """A console request refused before reaching the lifecycle (session, origin, CSRF)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
