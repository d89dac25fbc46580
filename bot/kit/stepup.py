"""Step-up from chat (issue 19, item 6): what every chat desk does when someone presses
Approve on a request whose approval needs a security key.

A chat identity is the whole proof a chat click carries, so such a click records nothing:
the desk answers that person alone with a link to the console, where the key is asked for.
The link is single-use, expires after ``LINK_TTL_S``, and is bound to that person and that
request; only a SHA-256 digest of its token is kept in Redis (``{prefix}stepup:link:<digest>``),
so reading Redis hands out no usable link. The console takes it (:meth:`StepUpLinks.consume`,
one GETDEL) and then asks for the WebAuthn assertion before anything is recorded.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import orjson

from broker.directory import Approver
from broker.model import PENDING
from broker.notify import DeskContext, KeySpace

LINK_TTL_S = 600
PATH = "/console/step-up"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _plausible(token: str) -> bool:
    return 20 <= len(token) <= 100 and token.isascii()


@dataclass(frozen=True)
class LinkFor:
    """Whom and what a step-up link is for."""

    approver: str
    request_id: str
    platform_user: str | None = None


class StepUpLinks:
    """Single-use step-up links kept in Redis under the broker's key prefix."""

    def __init__(self, keys: KeySpace, *, ttl_s: int = LINK_TTL_S) -> None:
        self.keys = keys
        self.ttl_s = ttl_s

    def _key(self, token: str) -> str:
        return self.keys.key("stepup", "link", _digest(token))

    async def issue(self, approver_id: str, request_id: str, *, now: float, platform_user: str | None = None) -> str:
        """A new link token for ``approver_id`` to approve ``request_id`` (shown once)."""
        token = secrets.token_urlsafe(32)
        value = orjson.dumps({"approver": approver_id, "request": request_id, "exp": now + self.ttl_s,
                              "platform_user": platform_user})
        # The Redis TTL cleans up; the stored expiry (the broker's clock) is what is checked.
        await self.keys.redis.set(self._key(token), value, px=self.ttl_s * 1000 + 1000)
        return token

    async def peek(self, token: str, *, now: float) -> LinkFor | None:
        """What a still-valid link is for, without using it (the console's confirm page)."""
        if not _plausible(token):
            return None
        return _valid(await self.keys.redis.get(self._key(token)), now)

    async def consume(self, token: str, *, now: float) -> LinkFor | None:
        """Use the link up (atomically); None when unknown, used already or expired."""
        if not _plausible(token):
            return None
        return _valid(await self.keys.redis.getdel(self._key(token)), now)


def _valid(raw: bytes | None, now: float) -> LinkFor | None:
    if not raw:
        return None
    value = orjson.loads(raw)
    if now >= float(value.get("exp", 0)) or not value.get("approver") or not value.get("request"):
        return None
    return LinkFor(value["approver"], value["request"], value.get("platform_user"))


def console_url(ctx: DeskContext) -> str:
    """Where the console is, as browsers reach it (JITGATE_WEBAUTHN_ORIGIN, else the issuer's origin)."""
    return ctx.settings.step_up_origin


def console_on(ctx: DeskContext) -> bool:
    """Whether this broker serves the console (JITGATE_CONSOLE=1, or unset without a chat platform)."""
    setting = ctx.settings.console
    if setting is not None:
        return bool(setting)
    env = ctx.settings.env
    return not (env.get("SLACK_BOT_TOKEN") or env.get("MICROSOFT_APP_ID"))


@dataclass(frozen=True)
class StepUp:
    """The answer to a chat Approve that needs step-up: nothing was recorded; ``url`` (None when
    the console is off) is the single-use link; ``text`` says so in plain words (no markup)."""

    kind: str
    url: str | None
    text: str


async def step_up_instead(ctx: DeskContext, req, approver: Approver, *, platform_user: str | None) -> StepUp | None:
    """For a chat Approve on ``req`` by ``approver``: None when the approval needs no step-up
    (the desk goes on to the lifecycle, which checks everything else); else a :class:`StepUp`,
    and the desk records nothing. Only someone who may still decide ``req`` gets a link; anyone
    else is left to the lifecycle's refusal (the desk calls ``approve``, which raises it)."""
    kind = ctx.lifecycle.step_up_needed(approver, req)
    if kind is None or req.status != PENDING or not ctx.lifecycle.may_still_decide(approver, req):
        return None
    what = f"{req.proposal.action} on {req.proposal.target}"
    if not console_on(ctx):
        return StepUp(kind, None, f"Approving {what} needs your security key, which only the jitgate console can "
                                  "ask for, and the console is off on this broker (JITGATE_CONSOLE). "
                                  "Nothing was recorded.")
    token = await StepUpLinks(ctx.keys).issue(approver.id, req.id, now=ctx.clock.now(), platform_user=platform_user)
    url = f"{console_url(ctx)}{PATH}?token={token}"
    minutes = LINK_TTL_S // 60
    return StepUp(kind, url, f"Approving {what} needs your security key. Nothing was recorded yet: open this "
                             f"link (for you only, once, within {minutes} minutes) and approve there with your key: "
                             f"{url}")
