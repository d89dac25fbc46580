"""Chat identity → approver identity, through explicit bindings in the approvers file.

A Slack user may also be bound through Slack user groups (``slack_usergroups`` entries);
the desk asks Slack who is in them and :func:`with_slack_groups` folds the result in.

Matching by e-mail is opt-in (``JITGATE_EMAIL_BINDING``): an e-mail address is only as
trustworthy as the workspace that verified it. Desks call this on every click with the
platform's *verified* user id, never with anything taken from a button value or card.
"""

from __future__ import annotations

import dataclasses

from broker.directory import Approver, Directory, group_bound_id


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


def with_slack_groups(found: Approver | None, slack_user_id: str, groups: frozenset[str]) -> Approver | None:
    """``found`` (the explicit binding, if any) with the jitgate groups its Slack user groups give.

    Someone bound both explicitly and through a user group is one person: their own entry,
    with the groups added. Someone bound only through user groups acts as
    ``slack:<user id>``, so two people in one user group count as two approvers.
    """
    if not groups:
        return found
    if found is not None:
        return dataclasses.replace(found, groups=found.groups | groups)
    return Approver(id=group_bound_id(slack_user_id), groups=groups, slack=slack_user_id)
