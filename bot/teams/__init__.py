"""The Microsoft Teams approval desk (Bot Framework, Adaptive Cards with Universal Actions).

``desk_from_settings`` is the ``jitgate.desks`` entry point: no Teams settings, no desk;
Teams settings that would run the bot unsafely refuse start-up, naming the setting
(:mod:`bot.teams.settings`).
"""

from __future__ import annotations

from broker.config import Settings

from .settings import TeamsSettings


def desk_from_settings(settings: Settings):
    """The Teams desk, or None when Teams is not configured (``jitgate.desks`` entry point).
    Its settings are its own (:class:`~bot.teams.settings.TeamsSettings`), read from the
    broker's environment; ConfigError names a bad one."""
    teams = TeamsSettings.from_env(settings.env)
    if not teams.check():
        return None
    from .desk import TeamsDesk  # noqa: PLC0415 - botbuilder is imported only when Teams is on

    return TeamsDesk(settings, teams)
