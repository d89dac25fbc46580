"""Chat identity → approver identity, through explicit bindings in the approvers file.

Matching by e-mail is opt-in (``JITGATE_EMAIL_BINDING``): an e-mail address is only as
trustworthy as the workspace that verified it. Desks call this on every click with the
platform's *verified* user id, never with anything taken from a button value or card.
"""

from __future__ import annotations

from broker.directory import Approver, Directory


class Binder:
    """Looks approvers up by their chat identities (re-reads the directory every call)."""

    def __init__(self, directory: Directory, *, email_binding: bool = False, teams_tenant: str | None = None) -> None:
        self.directory = directory
        self.email_binding = email_binding
        self.teams_tenant = teams_tenant or None

    def slack(self, user_id: str | None, email: str | None = None) -> Approver | None:
        """The approver bound to a Slack user id (or, if enabled, their verified e-mail)."""
        if not user_id:
            return None
        found = self.directory.by_slack(user_id)
        if found is None and self.email_binding and email:
            found = self.directory.by_email(email)
        return found

    def teams(self, aad_object_id: str | None, tenant_id: str | None, email: str | None = None) -> Approver | None:
        """The approver bound to an Entra object id, from the configured tenant only."""
        if not aad_object_id:
            return None
        if self.teams_tenant and tenant_id != self.teams_tenant:
            return None
        found = self.directory.by_teams(aad_object_id)
        if found is None and self.email_binding and email:
            found = self.directory.by_email(email)
        return found
