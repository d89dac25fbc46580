"""Which Slack users jitgate may recognise by e-mail (``JITGATE_EMAIL_BINDING``), from their
``users.info`` record.

An e-mail address is only as trustworthy as the workspace that vouches for it. So only a full
member of this workspace (its ``team_id``), who is no guest (``is_restricted``,
``is_ultra_restricted``), no external Slack Connect user (``is_stranger``), no bot or app
(``is_bot``, ``is_app_user``) and not deleted, and whose address Slack reports as confirmed
(``is_email_confirmed`` explicitly ``true``: a missing field is no confirmation), is bound by the
address, compared after :func:`broker.directory.email_key`'s normalisation. Everyone else is
refused, and the reason logged.
"""

from __future__ import annotations

from broker.directory import email_key

_REFUSING_FLAGS = (
    ("deleted", "a deleted user"),
    ("is_bot", "a bot"),
    ("is_app_user", "an app user"),
    ("is_stranger", "an external (Slack Connect) user"),
    ("is_restricted", "a guest"),
    ("is_ultra_restricted", "a single-channel guest"),
)


def bindable_email(user: object, team_id: str | None) -> tuple[str | None, str]:
    """(the address to bind by, "ok") for a Slack user record that qualifies, else (None, why not)."""
    if not isinstance(user, dict):
        return None, "Slack returned no user record"
    if not team_id:
        return None, "this workspace's team id is unknown (auth.test has not answered)"
    if user.get("team_id") != team_id:
        return None, f"a member of another workspace ({user.get('team_id')!r}, not {team_id!r})"
    for flag, what in _REFUSING_FLAGS:
        if user.get(flag) is not False and user.get(flag) is not None:
            return None, what
    if user.get("is_email_confirmed") is not True:
        return None, "Slack does not report the address as confirmed"
    address = (user.get("profile") or {}).get("email")
    if not address:
        return None, "Slack shows no e-mail address"
    if email_key(address) is None:
        return None, "the address is not plain ASCII (jitgate binds only normalisable addresses)"
    return address, "ok"
