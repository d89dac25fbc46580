"""The Teams desk's own settings, read from the broker's environment (the process
environment over ``.env``, ``Settings.env``) by the desk's factory: the core knows none of
them. The variable names are part of the external contract (docs/configuration.md).

botbuilder turns inbound authentication *off* when the app id is empty, so an empty app
id with any other Teams setting is refused rather than "not configured"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlparse

from broker.config import Secret
from broker.errors import ConfigError

APP_TYPES = {"multitenant": "MultiTenant", "singletenant": "SingleTenant"}


@dataclass(frozen=True)
class TeamsSettings:
    """``MICROSOFT_APP_ID``, ``MICROSOFT_APP_PASSWORD``, ``MICROSOFT_APP_TENANT_ID``,
    ``MICROSOFT_APP_TYPE``, ``TEAMS_APPROVALS_CONVERSATION``, ``TEAMS_SECURITY_CONVERSATION``,
    and another Bot Framework cloud's ``TEAMS_OPENID_METADATA_URL``, ``TEAMS_TOKEN_ISSUER``,
    ``TEAMS_LOGIN_URL``."""

    app_id: str = ""
    app_password: Secret = field(default_factory=lambda: Secret(""), repr=False)
    tenant_id: str = ""
    app_type: str = "MultiTenant"
    approvals_conversation: str = ""
    security_conversation: str = ""
    openid_metadata_url: str = ""
    token_issuer: str = ""
    login_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "TeamsSettings":
        return cls(
            app_id=env.get("MICROSOFT_APP_ID", ""),
            app_password=Secret(env.get("MICROSOFT_APP_PASSWORD", "")),
            tenant_id=env.get("MICROSOFT_APP_TENANT_ID", ""),
            app_type=env.get("MICROSOFT_APP_TYPE", "MultiTenant"),
            approvals_conversation=env.get("TEAMS_APPROVALS_CONVERSATION", ""),
            security_conversation=env.get("TEAMS_SECURITY_CONVERSATION", ""),
            openid_metadata_url=env.get("TEAMS_OPENID_METADATA_URL", ""),
            token_issuer=env.get("TEAMS_TOKEN_ISSUER", ""),
            login_url=env.get("TEAMS_LOGIN_URL", ""),
        )

    def _given(self) -> list[str]:
        given = {
            "MICROSOFT_APP_PASSWORD": bool(self.app_password),
            "MICROSOFT_APP_TENANT_ID": bool(self.tenant_id),
            "TEAMS_APPROVALS_CONVERSATION": bool(self.approvals_conversation),
            "TEAMS_SECURITY_CONVERSATION": bool(self.security_conversation),
            "TEAMS_OPENID_METADATA_URL": bool(self.openid_metadata_url),
            "TEAMS_TOKEN_ISSUER": bool(self.token_issuer),
            "TEAMS_LOGIN_URL": bool(self.login_url),
        }
        return [name for name, on in given.items() if on]

    def check(self) -> bool:
        """True when Teams is configured (and safely); False when it is off; ConfigError otherwise."""
        if not self.app_id.strip():
            given = self._given()
            if given:
                raise ConfigError(f"MICROSOFT_APP_ID is empty but {', '.join(given)} is set: with an empty app id "
                                  "botbuilder would accept unauthenticated activities. Set MICROSOFT_APP_ID (the "
                                  "Azure Bot's app id) or unset the Teams settings.")
            return False
        if not self.app_password:
            raise ConfigError("MICROSOFT_APP_ID is set but MICROSOFT_APP_PASSWORD is empty: the bot could neither be "
                              "verified by Teams nor post; set the app registration's client secret")
        if self.app_type.lower() not in APP_TYPES:
            raise ConfigError(f"MICROSOFT_APP_TYPE must be SingleTenant or MultiTenant, got {self.app_type!r} "
                              "(managed identities are not supported by this desk)")
        if not self.tenant_id.strip():
            raise ConfigError("MICROSOFT_APP_TENANT_ID is required with Teams: approvers are accepted only from your "
                              "organisation's Entra tenant")
        if bool(self.openid_metadata_url) != bool(self.token_issuer):
            raise ConfigError("TEAMS_OPENID_METADATA_URL and TEAMS_TOKEN_ISSUER must be set together (the keys and "
                              "the issuer of the same Bot Framework cloud)")
        if self.openid_metadata_url:
            u = urlparse(self.openid_metadata_url)
            if u.scheme not in ("http", "https") or not u.netloc:
                raise ConfigError(f"TEAMS_OPENID_METADATA_URL must be an http(s) URL, got {self.openid_metadata_url!r}")
        if self.login_url:
            u = urlparse(self.login_url)
            if u.scheme != "https" or not u.netloc or u.path.strip("/") == "":
                raise ConfigError("TEAMS_LOGIN_URL must be an https authority with the tenant, e.g. "
                                  f"https://login.microsoftonline.us/<tenant>, got {self.login_url!r}")
        return True
