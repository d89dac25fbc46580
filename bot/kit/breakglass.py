"""The break-glass commands every desk offers, neutral: ``breakglass`` (check everything, keep
a one-time confirmation, answer with what would be granted) and ``breakglass-reinstate``
(security restores a suspended engineer's right). Each returns a small answer the desk
formats: Slack opens a modal and writes mrkdwn, Teams answers with a card and plain text.

What stays with a desk is only what is its platform's: how a person is named (Slack's
``<@U…>`` mention, found through :func:`engineer_id`'s ``mentioned``), where a confirmation
is shown, and how the answer reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from broker.breakglass import BreakGlass, Preview
from broker.directory import Approver, is_valid_id
from broker.errors import BrokerError, InvalidRequest
from broker.model import Request

from bot.commands import BreakGlassArgs, Usage
from bot.kit.confirmations import Confirmations, preview_digest

BREAKGLASS_ARGS = "<agent-id|me> <action> <target> <duration> <reason…> [--incident <ref>]"
REINSTATE_ARGS = "<approver-id>"
BY_ID = "name the engineer by approver id, as in the approvers file"

log = logging.getLogger("jitgate.breakglass")


def parse_person(rest: str) -> str:
    """Exactly one word naming a person, as typed (Usage otherwise); :func:`engineer_id` reads it."""
    parts = rest.split()
    if len(parts) != 1:
        raise Usage()
    return parts[0]


def engineer_id(who: str, mentioned: Callable[[str], str | None] | None = None, hint: str = BY_ID) -> str:
    """The approver id a typed person names: the desk's own mention form when ``mentioned``
    recognises it (it returns the approver id, None for "not a mention"), else ``id`` or
    ``@id``; InvalidRequest (saying ``hint``) for anything else."""
    found = mentioned(who) if mentioned is not None else None
    if found is not None:
        return found
    eid = who.removeprefix("@")
    if not is_valid_id(eid):
        raise InvalidRequest(hint)
    return eid


@dataclass(frozen=True)
class Confirm:
    """What ``breakglass`` would grant (nothing is granted yet): the core's preview, the
    nonce the desk's modal or card carries, and the parameters it holds."""

    preview: Preview
    nonce: str
    params: str
    review_s: int


async def breakglass(bg: BreakGlass, confirmations: Confirmations, engineer: Approver, args: BreakGlassArgs, *,
                     user: str, tenant: str | None, where: str | None) -> Confirm:
    """Check everything now (the core's preview raises what it refuses) and keep the one-time
    confirmation record for ``user`` in ``tenant``, shown ``where``."""
    pv = await bg.preview(engineer, subject=args.subject, action=args.action, target=args.target,
                          duration_s=args.duration_s, reason=args.reason, incident=args.incident)
    params = args.to_json()
    nonce = await confirmations.remember(user=user, tenant=tenant, where=where, engineer=engineer.id, params=params,
                                         shown=preview_digest(pv))
    return Confirm(pv, nonce, params, bg.limits.review_s)


@dataclass(frozen=True)
class Reinstated:
    """Whose right was restored, and the grant whose missed review had suspended it (None:
    it was not suspended by one, so no security thread to tell)."""

    engineer: str
    request_id: str | None


async def reinstate(bg: BreakGlass, by: Approver, engineer: str, *, channel: str) -> Reinstated:
    """Security restores ``engineer``'s break-glass right (the core checks the group and audits)."""
    suspension = await bg.suspension(engineer)
    await bg.reinstate(engineer, by, channel=channel)
    return Reinstated(engineer, (suspension or {}).get("request_id") or None)


async def revoke_undelivered(life, req: Request, *, channel: str) -> None:
    """The token for ``me`` surely reached nobody: end the grant at once rather than leave a
    live credential unaccounted for (a failure is logged; the grant then ends on its own)."""
    try:
        await life.revoke(req.id, by="jitgate", reason="the token could not be delivered to the engineer",
                          channel=channel)
    except BrokerError:
        log.warning("could not revoke undeliverable break-glass grant %s", req.id)


__all__ = ["BREAKGLASS_ARGS", "BY_ID", "Confirm", "REINSTATE_ARGS", "Reinstated", "breakglass", "engineer_id",
           "parse_person", "reinstate", "revoke_undelivered"]
