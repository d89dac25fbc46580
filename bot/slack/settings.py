"""The Slack desk's own settings, read from the broker's environment (the process
environment over ``.env``, ``Settings.env``) by the desk's factory: the core knows none of
them. The variable names are part of the external contract (docs/configuration.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from broker.config import Secret
from broker.errors import ConfigError

# Slack's signing secrets are 32 hex characters; anything this short is a placeholder.
MIN_SIGNING_SECRET_CHARS = 16


@dataclass(frozen=True)
class SlackSettings:
    """``SLACK_BOT_TOKEN``, ``SLACK_SIGNING_SECRET`` (HTTP mode), ``SLACK_APP_TOKEN`` (Socket
    Mode), ``SLACK_APPROVALS_CHANNEL``, ``SLACK_SECURITY_CHANNEL``, ``SLACK_API_URL``."""

    bot_token: Secret = field(default_factory=lambda: Secret(""), repr=False)
    signing_secret: Secret = field(default_factory=lambda: Secret(""), repr=False)
    app_token: Secret = field(default_factory=lambda: Secret(""), repr=False)
    approvals_channel: str = ""
    security_channel: str = ""
    api_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "SlackSettings":
        return cls(
            bot_token=Secret(env.get("SLACK_BOT_TOKEN", "")),
            signing_secret=Secret(env.get("SLACK_SIGNING_SECRET", "")),
            app_token=Secret(env.get("SLACK_APP_TOKEN", "")),
            approvals_channel=env.get("SLACK_APPROVALS_CHANNEL", ""),
            security_channel=env.get("SLACK_SECURITY_CHANNEL", ""),
            api_url=env.get("SLACK_API_URL", ""),
        )

    def check(self) -> bool:
        """True when Slack is configured, False when it is off; ConfigError (naming the
        setting) when it is half-configured: never run with verification off."""
        token = self.bot_token.reveal().strip()
        secret = self.signing_secret.reveal().strip()
        app_token = self.app_token.reveal().strip()
        if not (token or secret or app_token):
            return False
        if not token:
            raise ConfigError("SLACK_BOT_TOKEN is not set, but other SLACK_* settings are: set the bot token "
                              "(xoxb-…) or unset them all to turn Slack off")
        if app_token:
            if not app_token.startswith("xapp-"):
                raise ConfigError("SLACK_APP_TOKEN must be an app-level token (xapp-…) with the connections:write "
                                  "scope")
        elif not secret:
            raise ConfigError("SLACK_SIGNING_SECRET is not set: HTTP mode cannot verify that requests come from "
                              "Slack (or set SLACK_APP_TOKEN to use Socket Mode)")
        if secret and len(secret) < MIN_SIGNING_SECRET_CHARS:
            raise ConfigError(f"SLACK_SIGNING_SECRET is {len(secret)} characters long: a real one (Basic Information "
                              f"→ Signing Secret) is 32; fewer than {MIN_SIGNING_SECRET_CHARS} is a placeholder anyone "
                              "can guess")
        if not self.approvals_channel.strip():
            raise ConfigError("SLACK_APPROVALS_CHANNEL is not set: name the channel (id or #name) where proposals go")
        if self.api_url and not self.api_url.startswith(("https://", "http://")):
            raise ConfigError("SLACK_API_URL must be an http(s) URL")
        return True
