"""What a bot command answers, and where it was typed: shared by the command table
(``commands``) and the break-glass commands (``breakglass``), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from broker.errors import BrokerError

from . import cards


from bot.commands import Usage  # noqa: E402,F401 - one Usage for every desk
from bot.kit.commands import ErrorKind, error_kind  # noqa: E402


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
    return Answer(_ERROR_TEXT[error_kind(e)].format(detail=e.detail))


_ERROR_TEXT = {
    ErrorKind.FORBIDDEN: "You may not do that: {detail}",
    ErrorKind.POLICY_DENIED: "Denied by policy: {detail}",
    ErrorKind.TOO_LATE: "Too late: {detail}",
    ErrorKind.UNCHANGED: "Nothing changed: {detail}",
    ErrorKind.NOT_FOUND: "{detail}",
    ErrorKind.INVALID: "That did not work: {detail}",
    ErrorKind.OTHER: "jitgate could not do that: {detail}",
}


def unbound_answer(aad_object_id: str | None) -> Answer:
    return Answer(f"Your Teams account (Entra object id {aad_object_id or 'unknown'}) is not bound to a jitgate "
                  "approver, or it is not in this organisation's tenant. Ask an admin to add it as `teams:` to your "
                  "entry in the approvers file.")
