"""What a bot command answers, and where it was typed: shared by the command table
(``commands``) and the break-glass commands (``breakglass``), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from broker.errors import BrokerError, Conflict, DeadlinePassed, Forbidden, InvalidRequest, NotApprover, NotFound

from . import cards


from bot.commands import Usage  # noqa: E402,F401 - one Usage for every desk


@dataclass(frozen=True)
class Turn:
    """Where and by whom a command was typed, as the verified activity says."""

    aad_object_id: str | None
    tenant_id: str | None
    user_id: str | None  # the Teams user id (29:…)
    conversation_id: str  # without ";messageid=…"
    conversation_type: str | None  # personal | groupChat | channel
    service_url: str
    bot_id: str | None = None


@dataclass(frozen=True)
class Answer:
    """What the bot says back: plain text lines, or a card. ``posted`` (if any) is called
    with the activity id of the reply once Teams accepted it."""

    text: str = ""
    lines: tuple[str, ...] = ()
    card: dict | None = None
    posted: Callable[[str | None], Awaitable[None]] | None = None

    def to_card(self) -> dict:
        return self.card or cards.notice_card(self.text, lines=list(self.lines))


def error_answer(e: BrokerError) -> Answer:
    """A broker error as a short answer (branching on the class, not the text)."""
    if isinstance(e, (NotApprover, Forbidden)):
        return Answer(f"You may not do that: {e.detail}")
    if isinstance(e, DeadlinePassed):  # a Conflict, but the request did change: it expired
        return Answer(f"Too late: {e.detail}")
    if isinstance(e, Conflict):
        return Answer(f"Nothing changed: {e.detail}")
    if isinstance(e, NotFound):
        return Answer(e.detail)
    if isinstance(e, InvalidRequest):
        return Answer(f"That did not work: {e.detail}")
    return Answer(f"jitgate could not do that: {e.detail}")


def unbound_answer(aad_object_id: str | None) -> Answer:
    return Answer(f"Your Teams account (Entra object id {aad_object_id or 'unknown'}) is not bound to a jitgate "
                  "approver, or it is not in this organisation's tenant. Ask an admin to add it as `teams:` to your "
                  "entry in the approvers file.")
