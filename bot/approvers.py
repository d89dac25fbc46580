"""Chat identity → approver identity, through explicit bindings in the approvers file.

A Slack user may also be bound through Slack user groups (``slack_usergroups`` entries);
the desk asks Slack who is in them and :func:`with_slack_groups` folds the result in.

Matching by e-mail is opt-in (``JITGATE_EMAIL_BINDING``): an e-mail address is only as
trustworthy as the workspace that verified it. Desks call this on every click with the
platform's *verified* user id, never with anything taken from a button value or card.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Awaitable, Callable

from broker.directory import Approver, Directory, SlackGroupBinding, group_bound_id
from broker.errors import NotApprover

log = logging.getLogger("jitgate.slack")


class UserGroupUnavailable(Exception):
    """Slack did not say who is in a user group (``usergroup`` and Slack's ``why``)."""

    def __init__(self, usergroup: str, why: str) -> None:
        super().__init__(f"{usergroup}: {why}")
        self.usergroup = usergroup
        self.why = why


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


async def slack_approver(binder: Binder, user_id: str, *, email_of: Callable[[str], Awaitable[str | None]],
                         groups_of: Callable[[str, tuple[SlackGroupBinding, ...]], Awaitable[frozenset[str]]]) -> Approver:
    """The approver bound to this *verified* Slack user id: explicitly, by the e-mail Slack
    confirmed (``email_of``, only with e-mail binding on), or through Slack user groups
    (``groups_of``, which raises :class:`UserGroupUnavailable`); :class:`NotApprover` if none.

    Fails closed: an e-mail that belongs to an approver bound to another Slack account binds
    nobody; a user group Slack does not answer for adds nothing (and binds nobody new); a
    member of a bound user group becomes ``slack:<id>`` only when they cannot also be someone
    the file names."""
    directory = binder.directory
    found = binder.slack(user_id)
    email = None
    if found is None and binder.email_binding and user_id:
        email = await email_of(user_id)
        found = binder.slack(user_id, email) if email else None
        if found is not None and found.slack and found.slack != user_id:
            log.warning("Slack user %s has the e-mail of approver %s, who is bound to Slack user %s; refused",
                        user_id, found.id, found.slack)
            raise NotApprover(f"your e-mail address belongs to approver {found.id}, whose entry names another "
                              "Slack account; nothing changed. Ask an operator to fix the approvers file.")
    bindings = directory.slack_bindings
    if bindings and user_id:
        try:
            groups = await groups_of(user_id, bindings)
            if found is None and groups:
                _check_new_identity(binder, user_id, email)
            found = with_slack_groups(found, user_id, groups)
        except UserGroupUnavailable as e:
            if found is None:
                raise NotApprover(f"jitgate could not ask Slack who is in the user group {e.usergroup} ({e.why}), "
                                  "so it cannot count you as an approver right now; nothing changed. Try again "
                                  "in a minute.") from None
            # Fail closed for what the user group would add; the explicit binding still stands.
            log.warning("Slack user group %s unavailable (%s); %s acts with their own groups only",
                        e.usergroup, e.why, found.id)
    if found is None:
        also = ", or to add you to a Slack user group that the file binds" if bindings else ""
        raise NotApprover(f"your Slack account ({user_id or 'unknown'}) is not bound to an approver in "
                          f"jitgate's approvers file; ask an operator to add `slack: {user_id}` to your entry{also}")
    return found


def _check_new_identity(binder: Binder, user_id: str, email: str | None) -> None:
    """Before a member of a bound user group acts as ``slack:<id>``: make sure they cannot be
    someone the file already names (who would then count twice); NotApprover otherwise."""
    directory = binder.directory
    problem = directory.slack_alias_problem(binder.email_binding)
    if problem:  # a reloaded file broke the rule the start-up check enforced
        log.error("refusing Slack user group member %s: %s", user_id, problem)
        raise NotApprover("jitgate's approvers file does not let it tell whether you are also someone it names "
                          "(an operator must fix it; the log says how), so it cannot count you now; nothing changed")
    if directory.slack_unbound_people() and email is None:
        # Someone in the file is known here only by e-mail: without a confirmed address this
        # user might be them, so no new identity is minted.
        log.warning("refusing Slack user group member %s: no confirmed e-mail to tell them apart from the "
                    "approvers the file names only by e-mail", user_id)
        raise NotApprover("Slack did not confirm your e-mail address for this workspace, so jitgate cannot tell "
                          "whether you are also someone its approvers file names; nothing changed")
