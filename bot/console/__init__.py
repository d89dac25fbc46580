"""The local web approval console, served by the broker under ``/console``.

An approval desk for people without Slack or Teams (and for security reviewers): pending
requests with the full proposal, active grants, recent history with audit trails, the
risk posture and whether the audit chain verifies. Registered as the ``console`` entry
point of ``jitgate.desks``.
"""

from .desk import ConsoleDesk, ConsoleNotifier, console_mode, desk_from_settings, is_loopback

__all__ = ["ConsoleDesk", "ConsoleNotifier", "console_mode", "desk_from_settings", "is_loopback"]
