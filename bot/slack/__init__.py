"""The Slack approval desk (Bolt for Python, async): proposals as interactive messages,
verified clicks, the deny modal, ``/jit``, HTTP and Socket Mode.

Registered as the ``slack`` entry point of ``jitgate.desks``; the core imports none of it.
"""

from .desk import SlackDesk, desk_from_settings

__all__ = ["SlackDesk", "desk_from_settings"]
