"""``@requires_approval``: a tool function that runs only with an approved grant.

The function receives the token (keyword ``token`` by default); when the answer is no -
denied, expired, withdrawn, or no decision in time - the caller gets a :class:`Refusal`
instead of an exception: a dict an LLM can read and act on.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from .client import Client
from .errors import Denied, InvalidRequest, NotGranted, TimedOut
from .models import Escalation, Token
from .sync import SyncClient

_ARGUMENTS = ("target", "justification", "evidence", "duration", "confidence", "tool", "dataset", "arguments", "ticket",
              "delegation", "idempotency_key")


class Refusal(dict):
    """Why a tool did not run: ``{"approved": False, "status", "reason", "policies",
    "request_id", "action", "target", "message"}``. A dict, so any framework can
    serialise it as the tool's result; ``message`` is a sentence for the model."""

    @classmethod
    def from_error(cls, error: Exception, *, action: str, target: str, wait: float) -> "Refusal":
        request_id: str | None
        if isinstance(error, InvalidRequest):  # the broker refused the proposal itself (its arguments, its size)
            message = (f"Not performed: jitgate refused the proposal for {action} on {target}: {error.detail}. "
                       "Change the arguments, or report this to the user.")
            return cls(approved=False, status="invalid", reason=error.detail, policies=[], request_id=None,
                       action=action, target=target, message=message)
        if isinstance(error, TimedOut):
            status, reason, policies = "timed_out", f"no decision within {wait:.0f} s; the request was withdrawn", []
            request_id = error.request_id
        else:
            assert isinstance(error, NotGranted)
            status, reason, request_id = error.status or "not_granted", error.reason, error.request_id
            policies = error.policy_ids if isinstance(error, Denied) else []
        who = f" by {error.by}" if isinstance(error, Denied) and error.by and error.by != "policy" else ""
        message = {
            "denied": f"Not approved: {action} on {target} was denied{who}: {reason}.",
            "timed_out": f"Not approved: nobody decided on {action} on {target} in time ({reason}).",
            "expired": f"Not approved: the request for {action} on {target} expired ({reason}).",
        }.get(status, f"Not approved: the request for {action} on {target} ended as {status} ({reason}).")
        message += " The action was not performed. Do not retry the same request unchanged; " \
                   "report this to the user or choose another approach."
        return cls(approved=False, status=status, reason=reason, policies=list(policies), request_id=request_id,
                   action=action, target=target, message=message)

    @property
    def status(self) -> str:
        """``denied``, ``expired``, ``cancelled``, ``revoked``, ``timed_out``, or ``invalid``
        (a proposal the broker refused, only from the framework adapters)."""
        return self["status"]

    @property
    def reason(self) -> str:
        """Why, in the decider's words."""
        return self["reason"]

    def __str__(self) -> str:
        return self["message"]


def _value(spec: Any, args: tuple, kwargs: dict) -> Any:
    return spec(*args, **kwargs) if callable(spec) else spec


def _resolved_hints(fn: Callable) -> dict[str, Any]:
    """The function's annotations with string annotations resolved in its own module (the
    wrapper lives in this one, where a framework reading it could not resolve them)."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - an unresolvable forward reference: keep the annotations as written
        return dict(getattr(fn, "__annotations__", {}))


def _without_token(wrapper: Callable, fn: Callable, token_param: str) -> Callable:
    """The wrapper's signature and annotations are the tool's minus the token parameter,
    so frameworks that build a tool schema from them do not ask the model for a token."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return wrapper
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    if token_param not in sig.parameters and not takes_any:
        raise TypeError(f"{getattr(fn, '__name__', fn)!r} must accept the keyword argument {token_param!r} (the grant's token)")
    hints = _resolved_hints(fn)
    params = [p.replace(annotation=hints.get(n, p.annotation)) for n, p in sig.parameters.items() if n != token_param]
    wrapper.__signature__ = sig.replace(parameters=params,  # type: ignore[attr-defined]
                                        return_annotation=hints.get("return", sig.return_annotation))
    wrapper.__annotations__ = {k: v for k, v in hints.items() if k != token_param}
    del wrapper.__wrapped__  # type: ignore[attr-defined]  # inspect would follow it back to the token
    return wrapper


class ToolGate:
    """What ``@requires_approval`` does around one call, for the decorator and the framework
    adapters (``broker.client.adapters``): build the proposal from the call's arguments,
    escalate and wait (bounded, withdrawn on timeout), collect the token, run the body with
    it, report completion when the body returns or raises. A no (denied, expired, withdrawn,
    no decision in time) is a :class:`Refusal`; broker or network failures raise.

    Arguments as for :func:`requires_approval`; ``name`` is the tool's name in the default
    justification; ``on_update`` sees every change of the request while it waits (e.g. to
    tell the user which request to approve). With ``refuse_invalid`` a proposal the broker
    refuses as malformed (400: arguments too large or too deep, a target too long), and
    arguments the proposal's callables cannot take, are a Refusal too (status ``invalid``),
    for a model that sent those arguments and can change them."""

    def __init__(
        self,
        *,
        client: Client | SyncClient | Callable[[], Client | SyncClient],
        action: str,
        target: str | Callable[..., str],
        justification: str | Callable[..., str] | None = None,
        evidence: Any = None,
        duration: int | Callable[..., int] = 300,
        wait: float = 600,
        name: str = "tool",
        on_update: Callable[[Escalation], Any] | None = None,
        refuse_invalid: bool = False,
        **more: Any,
    ) -> None:
        unknown = set(more) - set(_ARGUMENTS)
        if unknown:
            raise TypeError(f"unknown proposal field(s): {', '.join(sorted(unknown))}")
        self._client_spec = client
        self.action = action
        self.wait = wait
        self.name = name
        self.on_update = on_update
        self.refuse_invalid = refuse_invalid
        self._refused: tuple[type[Exception], ...] = (NotGranted, TimedOut, InvalidRequest) if refuse_invalid \
            else (NotGranted, TimedOut)
        self._justification = justification
        self._specs: dict[str, Any] = {"target": target, "evidence": evidence or (), "duration": duration, **more}
        self._resolved: dict[Any, Any] = {}

    def proposal(self, args: tuple, kwargs: dict) -> dict:
        """The keyword arguments of :meth:`Client.escalate` for a call with ``args``, ``kwargs``."""
        p = {k: _value(v, args, kwargs) for k, v in self._specs.items()}
        if self._justification is None:
            shown = ", ".join([*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())])
            p["justification"] = f"tool {self.name}({shown[:500]})"
        else:
            p["justification"] = _value(self._justification, args, kwargs)
        return {"action": self.action, "wait": self.wait, "on_update": self.on_update, **p}

    def client(self, kind: type) -> Any:
        """The client (built from the factory on first use) as ``kind``: Client or SyncClient."""
        if "given" not in self._resolved:
            spec = self._client_spec
            self._resolved["given"] = spec() if callable(spec) and not isinstance(spec, (Client, SyncClient)) else spec
        if kind not in self._resolved:  # one of each kind at most, both on the same connection settings
            c = self._resolved["given"]
            if kind is SyncClient and isinstance(c, Client):
                c = SyncClient(client=c)
            if kind is Client and isinstance(c, SyncClient):
                c = c.client
            self._resolved[kind] = c
        return self._resolved[kind]

    def _refusal(self, error: Exception, p: dict) -> Refusal:
        return Refusal.from_error(error, action=self.action, target=p["target"], wait=self.wait)

    def _proposal(self, args: tuple, kwargs: dict) -> tuple[dict, Refusal | None]:
        """The proposal, or (with ``refuse_invalid``) the Refusal of arguments the proposal's
        callables cannot take (a model that left out or misnamed an argument)."""
        if not self.refuse_invalid:
            return self.proposal(args, kwargs), None
        try:
            return self.proposal(args, kwargs), None
        except (TypeError, KeyError, ValueError) as exc:
            target = self._specs["target"]
            error = InvalidRequest(400, "arguments-do-not-fit", f"the call's arguments do not fit the proposal ({exc})")
            return {}, Refusal.from_error(error, action=self.action, wait=self.wait,
                                          target=target if isinstance(target, str) else "its target")

    # Only the decision is turned into a Refusal; whatever the body itself raises propagates.
    async def run(self, args: tuple, kwargs: dict, body: Callable[[Token], Awaitable[Any]]) -> Any:
        """Run ``await body(token)`` under a grant for this call, or return a :class:`Refusal`."""
        p, refused = self._proposal(args, kwargs)
        if refused is not None:
            return refused
        c = self.client(Client)
        try:
            granted = await c.escalate(cancel_on_timeout=True, **p)
        except self._refused as error:
            return self._refusal(error, p)
        try:
            token = await c.collect(granted)
            return await body(token)
        finally:
            await c._complete_quietly(granted.request_id)

    def run_sync(self, args: tuple, kwargs: dict, body: Callable[[Token], Any]) -> Any:
        """Run ``body(token)`` under a grant for this call (blocking), or return a :class:`Refusal`."""
        p, refused = self._proposal(args, kwargs)
        if refused is not None:
            return refused
        c = self.client(SyncClient)
        try:
            granted = c.escalate(cancel_on_timeout=True, **p)
        except self._refused as error:
            return self._refusal(error, p)
        try:
            return body(c.collect(granted))
        finally:
            c._run(c.client._complete_quietly(granted.request_id))


def requires_approval(
    *,
    client: Client | SyncClient | Callable[[], Client | SyncClient],
    action: str,
    target: str | Callable[..., str],
    justification: str | Callable[..., str] | None = None,
    evidence: Any = None,
    duration: int | Callable[..., int] = 300,
    wait: float = 600,
    token_param: str = "token",
    **more: Any,
) -> Callable:
    """Wrap a tool function (async or sync) so it runs only under an approved grant.

    ``target``, ``justification``, ``evidence``, ``duration`` and the other proposal
    fields (``confidence``, ``tool``, ``dataset``, ``arguments``, ``ticket``, ``delegation``,
    ``idempotency_key``) are values or callables of the tool's own arguments. The token
    is passed as the keyword ``token_param``; completion is reported when the function
    returns or raises. A refusal returns a :class:`Refusal`; broker or network failures
    raise as usual. ``client`` may be a zero-argument factory (built on first use).
    """
    unknown = set(more) - set(_ARGUMENTS)
    if unknown:
        raise TypeError(f"unknown proposal field(s): {', '.join(sorted(unknown))}")

    def decorate(fn: Callable) -> Callable:
        gate = ToolGate(client=client, action=action, target=target, justification=justification, evidence=evidence,
                        duration=duration, wait=wait, name=getattr(fn, "__name__", "tool"), **more)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                return await gate.run(args, kwargs, lambda token: fn(*args, **kwargs, **{token_param: token}))
            return _without_token(run_async, fn, token_param)

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            return gate.run_sync(args, kwargs, lambda token: fn(*args, **kwargs, **{token_param: token}))
        return _without_token(run_sync, fn, token_param)

    return decorate
