"""The async agent client: propose, wait (with a deadline), collect, complete.

Every call signs a fresh assertion; every wait has a deadline; every retry has a budget;
a proposal carries one idempotency key across all its retries, so a retrying agent never
creates two requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import httpx

from ..jose import make_delegation, make_dpop_proof
from .credentials import AgentKey, Svid
from .errors import (
    ApiError,
    Cancelled,
    Conflict,
    Denied,
    Expired,
    NotGranted,
    Revoked,
    TimedOut,
    TransportError,
    api_error,
)
from .models import Escalation, Evidence, Grant, TaskOutcome, Token, evidence_list

log = logging.getLogger("jitgate.client")

MAX_POLL_S = 60  # the broker's longest long poll
_RETRY_STATUS = {429, 502, 503, 504}
_SAFE_STATUS = {429, 503}  # refused before anything changed: safe to retry any call
_MAX_BACKOFF_S = 5.0


class Client:
    """An agent's connection to a jitgate broker.

    ``Client(base_url, agent_id, private_key)`` for a registered key (a key object, PEM,
    or a PEM file path), or ``Client(base_url, credential=Svid(source))`` for a SPIFFE
    JWT-SVID. ``audience`` is the broker's issuer URL; unset, it is read once from the
    broker's metadata. With ``dpop`` (the default) tokens are bound to a key the agent
    holds (RFC 9449): the agent key, or ``dpop_key``.
    """

    def __init__(
        self,
        base_url: str,
        agent_id: str | None = None,
        private_key: Any = None,
        *,
        credential: AgentKey | Svid | None = None,
        audience: str | None = None,
        dpop: bool = True,
        dpop_key: Any = None,
        timeout_s: float = 10.0,
        retries: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if credential is None:
            if agent_id is None or private_key is None:
                raise ValueError("give agent_id and private_key, or a credential")
            credential = AgentKey(agent_id, private_key)
        self.credential = credential
        self.base_url = base_url.rstrip("/")
        self._audience = audience.rstrip("/") if audience else None
        self._dpop_key = (dpop_key or credential.signing_key) if dpop else None
        self.timeout_s = timeout_s
        self.retries = retries
        self._transport = transport
        # One httpx client per event loop: the sync wrapper runs calls in a loop of its own.
        self._http: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()

    @property
    def agent_id(self) -> str | None:
        """The agent id (for an SVID: its SPIFFE id, known after the first call)."""
        return self.credential.agent_id

    # ------------------------------------------------------------------ plumbing
    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        http = self._http.get(loop)
        if http is None or http.is_closed:
            http = httpx.AsyncClient(base_url=self.base_url, transport=self._transport,
                                     headers={"User-Agent": "jitgate-client/1"})
            self._http[loop] = http
        return http

    async def aclose(self) -> None:
        """Close this event loop's connections."""
        http = self._http.pop(asyncio.get_running_loop(), None)
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def audience(self) -> str:
        """The broker's issuer URL (assertion ``aud`` and the base of DPoP ``htu``)."""
        if self._audience is None:
            body = await self._send("GET", "/.well-known/oauth-authorization-server", auth=False)
            issuer = body.get("issuer") if isinstance(body, dict) else None
            self._audience = issuer.rstrip("/") if isinstance(issuer, str) and issuer else self.base_url
        return self._audience

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict | None = None,
        headers: dict | None = None,
        auth: bool = True,
        dpop: bool = False,
        safe: bool = True,
        timeout_s: float | None = None,
        deadline: float | None = None,
    ) -> Any:
        """One API call with retries. ``safe`` calls (idempotent ones) are retried on any
        transport failure and on 429/502/503/504; others only when the request cannot
        have been acted on (connection refused, 429, 503). Each attempt is signed anew."""
        attempt = 0
        while True:
            sent_headers = dict(headers or {})
            if auth:
                aud = await self.audience()
                if isinstance(self.credential, Svid):  # a file read or a Workload API call: off the loop
                    sent_headers["Authorization"] = await asyncio.to_thread(self.credential.authorization, aud)
                else:
                    sent_headers["Authorization"] = self.credential.authorization(aud)
                if dpop and self._dpop_key is not None:
                    sent_headers["DPoP"] = make_dpop_proof(self._dpop_key, method=method, url=aud + path)
            try:
                resp = await self._client().request(method, path, json=json, params=params, headers=sent_headers,
                                                    timeout=timeout_s or self.timeout_s)
            except httpx.TransportError as exc:
                retryable = safe or isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if not retryable or attempt >= self.retries:
                    raise TransportError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
                log.debug("%s %s failed (%s); retry %d of %d", method, path, exc.__class__.__name__, attempt + 1, self.retries)
                await self._backoff(attempt, None, deadline)
                attempt += 1
                continue
            if resp.status_code in _RETRY_STATUS and (safe or resp.status_code in _SAFE_STATUS) and attempt < self.retries:
                log.debug("%s %s answered %d; retry %d of %d", method, path, resp.status_code, attempt + 1, self.retries)
                await self._backoff(attempt, resp.headers.get("retry-after"), deadline)
                attempt += 1
                continue
            try:
                body = resp.json() if resp.content else None
            except ValueError:
                body = None
            if resp.status_code >= 400:
                raise api_error(resp.status_code, body)
            return body

    async def _backoff(self, attempt: int, retry_after: str | None, deadline: float | None) -> None:
        delay = min(_MAX_BACKOFF_S, 0.2 * 2**attempt) * (0.5 + random.random() / 2)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), _MAX_BACKOFF_S * 4))
            except ValueError:
                pass
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportError("the broker did not answer before the deadline")
            delay = min(delay, left)
        await asyncio.sleep(delay)

    # ------------------------------------------------------------------ the API
    async def propose(
        self,
        *,
        action: str,
        target: str,
        justification: str,
        evidence: Iterable[Evidence | dict] = (),
        duration: int = 300,
        confidence: float | None = None,
        tool: str | None = None,
        dataset: str | None = None,
        ticket: str | None = None,
        delegation: Iterable[str] = (),
        idempotency_key: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> Escalation:
        """Submit a proposal and return the escalation (pending, approved at once, or
        denied by policy). Retries reuse one Idempotency-Key (``idempotency_key`` or a
        fresh random one): at most one request is ever created for this call.

        ``tool``, ``dataset`` and ``arguments`` (a JSON object of at most 2048 bytes,
        nesting at most 4 deep) say what the agent will actually do: policy decides on
        them, approvers see them and the token carries them."""
        body: dict[str, Any] = {"action": action, "target": target, "justification": justification,
                                "duration_s": int(duration), "evidence": evidence_list(evidence)}
        for name, value in (("confidence", confidence), ("tool", tool), ("dataset", dataset), ("ticket", ticket)):
            if value is not None:
                body[name] = value
        if arguments is not None:
            body["arguments"] = dict(arguments)
        chain = list(delegation)
        if chain:
            body["delegation"] = chain
        key = idempotency_key or secrets.token_urlsafe(18)
        result = await self._send("POST", "/v1/escalations", json=body, headers={"Idempotency-Key": key})
        return Escalation.from_json(result)

    async def status(self, request_id: str) -> Escalation:
        """The escalation as it is now."""
        return Escalation.from_json(await self._send("GET", f"/v1/escalations/{request_id}"))

    async def wait(
        self,
        request_id: str,
        *,
        timeout: float = 600,
        on_update: Callable[[Escalation], Any] | None = None,
        current: Escalation | None = None,
    ) -> Escalation:
        """Long-poll until the request is decided (no longer pending); raise
        :class:`TimedOut` after ``timeout`` seconds. ``on_update`` sees every change."""
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        esc = current or await self.status(request_id)
        seen = None
        while True:
            state = (esc.status, len(esc.approvals))
            if state != seen:
                seen = state
                if on_update is not None:
                    on_update(esc)
            if esc.status != "pending":
                return esc
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimedOut(request_id, time.monotonic() - started)
            poll = min(MAX_POLL_S, max(left, 0.05))
            body = await self._send("GET", f"/v1/escalations/{request_id}", params={"wait": f"{poll:.2f}", "known": esc.status},
                                    timeout_s=poll + self.timeout_s, deadline=deadline + self.timeout_s)
            esc = Escalation.from_json(body)

    async def escalate(
        self,
        *,
        action: str,
        target: str,
        justification: str,
        evidence: Iterable[Evidence | dict] = (),
        duration: int = 300,
        wait: float = 600,
        confidence: float | None = None,
        tool: str | None = None,
        dataset: str | None = None,
        ticket: str | None = None,
        delegation: Iterable[str] = (),
        idempotency_key: str | None = None,
        on_update: Callable[[Escalation], Any] | None = None,
        cancel_on_timeout: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Grant:
        """Propose and wait up to ``wait`` seconds for the decision.

        Returns a :class:`Grant` when approved; raises :class:`Denied` (reason, policy
        ids), :class:`Expired`, :class:`Cancelled`, :class:`Revoked`, or
        :class:`TimedOut` (with ``cancel_on_timeout`` the pending request is withdrawn
        first, so approvers are not left deciding something nobody waits for).
        """
        esc = await self.propose(action=action, target=target, justification=justification, evidence=evidence,
                                 duration=duration, confidence=confidence, tool=tool, dataset=dataset, ticket=ticket,
                                 delegation=delegation, idempotency_key=idempotency_key, arguments=arguments)
        try:
            esc = await self.wait(esc.id, timeout=wait, on_update=on_update, current=esc)
        except TimedOut:
            if cancel_on_timeout:
                await self._withdraw_quietly(esc.id)
            raise
        return outcome(esc)

    async def collect(self, grant: Grant | str) -> Token:
        """Collect the token of an approved request (once). With DPoP on, the token is
        bound to this agent's key and ``token.headers()`` adds the proofs. Raises
        :class:`Expired` when the collection came after the broker's deadline (the request
        expired then and there), and :class:`Denied` (``by`` = ``policy``, the policy ids)
        when the policies, deciding again at collection, no longer permit it."""
        request_id = grant.request_id if isinstance(grant, Grant) else grant
        try:
            body = await self._send("POST", f"/v1/escalations/{request_id}/token", dpop=True, safe=False)
        except Conflict as exc:
            if exc.code == "deadline-passed":
                raise Expired(exc.detail, request_id=request_id, status="expired", escalation=None) from exc
            raise
        except ApiError as exc:
            if exc.code == "policy-denied":  # the policies, deciding again at collection, refused it
                problem = exc.body if isinstance(exc.body, dict) else {}
                policies = [p for p in problem.get("policies") or () if isinstance(p, str)]
                raise Denied(exc.detail, policies, by="policy", request_id=request_id) from exc
            raise
        return Token(body, request_id, self._dpop_key)

    async def complete(self, grant: Grant | Token | str, outcome: TaskOutcome | Mapping[str, Any] | None = None) -> Escalation:
        """Report the task done: the grant ends now (its token stops being active). ``outcome``
        (a :class:`TaskOutcome`, or the same as a dict: ``status`` success/failure, ``summary``,
        ``evidence`` links) is the resulting action, recorded with the completion."""
        request_id = grant if isinstance(grant, str) else grant.request_id
        body = None
        if outcome is not None:
            body = {"outcome": outcome.to_json() if isinstance(outcome, TaskOutcome) else dict(outcome)}
        return Escalation.from_json(await self._send("POST", f"/v1/escalations/{request_id}/complete", json=body))

    async def cancel(self, request_id: str) -> Escalation:
        """Withdraw a pending request."""
        return Escalation.from_json(await self._send("DELETE", f"/v1/escalations/{request_id}"))

    @contextlib.asynccontextmanager
    async def grant(self, **proposal: Any) -> AsyncIterator[Token]:
        """``async with client.grant(action=..., target=..., ...) as token:`` escalates
        (same arguments as :meth:`escalate`), collects the token, and on leaving the block
        - normally, by an exception or by cancellation - reports completion so the grant
        ends at once. Raises what :meth:`escalate` raises before the block runs."""
        proposal.setdefault("cancel_on_timeout", True)
        granted = await self.escalate(**proposal)
        try:
            yield await self.collect(granted)
        finally:
            await self._complete_quietly(granted.request_id)

    async def _complete_quietly(self, request_id: str) -> None:
        """Complete, shielded from cancellation; a failure is logged, not raised: the work
        is done either way, and the grant still ends at its expiry."""
        try:
            await asyncio.shield(self.complete(request_id))
        except Conflict:
            pass  # already over (expired or revoked): nothing left to end
        except (ApiError, TransportError) as exc:
            log.error("could not report completion of %s (%s); the grant ends at its expiry", request_id, exc)
        except asyncio.CancelledError:
            log.warning("cancelled while reporting completion of %s; it goes on in the background", request_id)
            raise

    async def _withdraw_quietly(self, request_id: str) -> None:
        try:
            await self.cancel(request_id)
        except (ApiError, TransportError) as exc:
            log.warning("could not withdraw %s after timing out: %s", request_id, exc)

    # ------------------------------------------------------------------ delegation
    async def delegate(
        self,
        to: str,
        *,
        actions: Iterable[str],
        targets: Iterable[str],
        ttl_s: int = 900,
        reason: str | None = None,
    ) -> str:
        """A delegation link signed by this agent: ``to`` may ask for ``actions`` on
        ``targets`` (exact names or prefixes ending in ``*``) for ``ttl_s`` seconds.
        Hand it to the sub-agent, which sends ``delegation=[*chain_it_got, link]``."""
        if not isinstance(self.credential, AgentKey):
            raise ValueError("only an agent with a registered key can sign a delegation")
        return make_delegation(self.credential.signing_key, delegator=self.credential.agent_id, delegate=to,
                               audience=await self.audience(), actions=list(actions), targets=list(targets),
                               ttl_s=ttl_s, reason=reason)


def outcome(esc: Escalation) -> Grant:
    """The grant of a decided escalation, or the NotGranted error that says why not."""
    raw = esc.raw
    if esc.status in ("approved", "active"):
        return Grant.from_escalation(esc)
    closed = raw.get("closed") or {}
    if esc.status == "denied":
        denial = esc.denial or {}
        return _raise(Denied(denial.get("reason") or esc.decision.get("reason") or "denied",
                             denial.get("policies") or [], by=denial.get("by"), request_id=esc.id, escalation=raw))
    reason = closed.get("reason") or esc.status
    kind = {"expired": Expired, "cancelled": Cancelled, "revoked": Revoked}.get(esc.status, NotGranted)
    return _raise(kind(reason, request_id=esc.id, status=esc.status, escalation=raw))


def _raise(error: Exception) -> Any:
    raise error
