"""A thin synchronous face on :class:`~broker.client.Client` for code without an event loop.

The async client runs in one event loop on a daemon thread owned by this object, so it
works the same inside a thread pool, a Jupyter cell or a plain script.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from .client import Client
from .models import Escalation, Grant, TaskOutcome, Token

T = TypeVar("T")


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread, client: Client) -> None:
    if thread is threading.current_thread():  # collected on its own thread: it cannot join itself
        loop.call_soon(loop.stop)
        return
    try:
        asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(5)
    except Exception:  # noqa: BLE001 - closing is best effort
        pass
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    if not thread.is_alive():
        loop.close()


class SyncClient:
    """``SyncClient(base_url, agent_id, private_key, ...)`` (the :class:`Client` arguments)
    or ``SyncClient(client=an_async_client)``; the same methods, blocking."""

    def __init__(self, *args: Any, client: Client | None = None, **kwargs: Any) -> None:
        self.client = client if client is not None else Client(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._loop.run_forever, name="jitgate-client", daemon=True)
                thread.start()
                # Closed with the object too, so a forgotten close() leaks no loop or sockets.
                self._finalizer = weakref.finalize(self, _shutdown, self._loop, thread, self.client)
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def close(self) -> None:
        """Close connections and stop the client's thread."""
        with self._lock:
            finalizer, self._loop, self._finalizer = self._finalizer, None, None
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> "SyncClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def agent_id(self) -> str | None:
        """The agent id (see :attr:`Client.agent_id`)."""
        return self.client.agent_id

    def propose(self, **proposal: Any) -> Escalation:
        """:meth:`Client.propose <broker.client.Client.propose>`, blocking."""
        return self._run(self.client.propose(**proposal))

    def status(self, request_id: str) -> Escalation:
        """The escalation as it is now."""
        return self._run(self.client.status(request_id))

    def wait(self, request_id: str, **kwargs: Any) -> Escalation:
        """Block until decided; :class:`TimedOut` after ``timeout`` seconds (see :meth:`Client.wait`)."""
        return self._run(self.client.wait(request_id, **kwargs))

    def escalate(self, **proposal: Any) -> Grant:
        """Propose and wait: a :class:`Grant`, or Denied / Expired / Cancelled / Revoked / TimedOut."""
        return self._run(self.client.escalate(**proposal))

    def collect(self, grant: Grant | str) -> Token:
        """Collect the token of an approved request (once)."""
        return self._run(self.client.collect(grant))

    def complete(self, grant: Grant | Token | str, outcome: TaskOutcome | Mapping[str, Any] | None = None) -> Escalation:
        """Report the task done: the grant ends now; ``outcome`` as in :meth:`Client.complete`."""
        return self._run(self.client.complete(grant, outcome))

    def cancel(self, request_id: str) -> Escalation:
        """Withdraw a pending request."""
        return self._run(self.client.cancel(request_id))

    def delegate(self, to: str, **kwargs: Any) -> str:
        """A signed delegation link for a sub-agent (see :meth:`Client.delegate`)."""
        return self._run(self.client.delegate(to, **kwargs))

    @contextlib.contextmanager
    def grant(self, **proposal: Any) -> Iterator[Token]:
        """``with client.grant(...) as token:`` - completion is reported on leaving, also on exceptions."""
        proposal.setdefault("cancel_on_timeout", True)
        granted = self.escalate(**proposal)
        try:
            yield self.collect(granted)
        finally:
            self._run(self.client._complete_quietly(granted.request_id))
