"""Bot Framework authentication for the Teams desk: inbound through botbuilder, outbound
through MSAL.

Inbound, botbuilder's ``ConfigurationBotFrameworkAuthentication`` validates the Bot
Connector's token (issuer, audience = app id, signing key from the OpenID metadata with
the ``msteams`` endorsement, the ``serviceurl`` claim) — jitgate never validates those JWTs
itself. The configuration always takes botbuilder's *parameterized* path, with Microsoft's
public-cloud endpoints as defaults, so production and the offline tests run the same code;
``TEAMS_OPENID_METADATA_URL`` / ``TEAMS_TOKEN_ISSUER`` / ``TEAMS_LOGIN_URL`` only move the
endpoints. Emulator and skill tokens have no metadata URL here and are therefore refused.

Outbound, :class:`MsalCredentialsFactory` gets tokens with MSAL's client-credentials grant
for the app id and password against ``TEAMS_LOGIN_URL`` (default: Microsoft's login
authority). MSAL is synchronous; the token is fetched in a worker thread when a request is
about to be sent, never on the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading

from botbuilder.integration.aiohttp import ConfigurationBotFrameworkAuthentication
from botframework.connector.auth import (
    AppCredentials,
    AuthenticationConstants,
    JwtTokenExtractor,
    ServiceClientCredentialsFactory,
)
from msal import ConfidentialClientApplication
from msrest.pipeline import AsyncHTTPPolicy

from broker.config import Secret

from .settings import TeamsSettings

log = logging.getLogger("jitgate.teams")

DEFAULT_LOGIN_HOST = "https://login.microsoftonline.com"
BOT_FRAMEWORK_SCOPE = AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE  # https://api.botframework.com
METADATA_REFRESH_S = 30 * 60  # botbuilder refreshes inline (blocking) when keys are a day old or a kid is unknown for an hour


class BotConfig:
    """The configuration object botbuilder reads (attribute names are botbuilder's)."""

    def __init__(self, teams: TeamsSettings) -> None:
        self.APP_ID = teams.app_id
        self.APP_PASSWORD = teams.app_password.reveal()
        self.APP_TYPE = teams.app_type
        self.APP_TENANTID = teams.tenant_id
        self.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = (
            teams.openid_metadata_url or AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL)
        self.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = (
            teams.token_issuer or AuthenticationConstants.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER)
        self.TO_CHANNEL_FROM_BOT_LOGIN_URL = login_authority(teams)
        self.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE = BOT_FRAMEWORK_SCOPE
        self.OAUTH_URL = AuthenticationConstants.OAUTH_URL
        self.VALIDATE_AUTHORITY = True

    def __repr__(self) -> str:  # never the password
        return f"BotConfig(APP_ID={self.APP_ID!r}, APP_TYPE={self.APP_TYPE!r})"


def login_authority(teams: TeamsSettings) -> str:
    """Where outbound tokens come from: ``TEAMS_LOGIN_URL``, else Microsoft's login authority
    for the tenant (single-tenant bots) or ``botframework.com`` (multi-tenant bots)."""
    if teams.login_url:
        return teams.login_url.rstrip("/")
    if teams.app_type.lower() == "singletenant":
        return f"{DEFAULT_LOGIN_HOST}/{teams.tenant_id}"
    return f"{DEFAULT_LOGIN_HOST}/botframework.com"


def build_authentication(teams: TeamsSettings, factory: ServiceClientCredentialsFactory) -> ConfigurationBotFrameworkAuthentication:
    """botbuilder's authentication for this bot, with jitgate's outbound credentials."""
    return ConfigurationBotFrameworkAuthentication(BotConfig(teams), credentials_factory=factory)


class MsalCredentialsFactory(ServiceClientCredentialsFactory):
    """Outbound credentials: MSAL client credentials for one app id (never "auth disabled")."""

    def __init__(self, app_id: str, password: Secret, authority: str, *, custom_authority: bool) -> None:
        if not app_id or not password:
            raise ValueError("an app id and a password are required")  # desk_from_settings says which
        self.app_id = app_id
        self._password = password
        self.authority = authority
        # A configured authority (sovereign cloud, tests) is taken as given: no call to
        # Microsoft's instance discovery, which MSAL makes for hosts it does not know.
        self._custom = custom_authority
        self._app: ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    async def is_valid_app_id(self, app_id: str) -> bool:
        return bool(app_id) and app_id == self.app_id

    async def is_authentication_disabled(self) -> bool:
        return False  # botbuilder turns inbound checks off when this is True: never

    async def create_credentials(self, app_id: str, oauth_scope: str, login_endpoint: str,
                                 validate_authority: bool) -> AppCredentials:
        if app_id != self.app_id:
            raise PermissionError("outbound credentials requested for another app id")
        return MsalCredentials(self, oauth_scope or BOT_FRAMEWORK_SCOPE)

    def _msal(self) -> ConfidentialClientApplication:
        with self._lock:
            if self._app is None:
                kwargs = {"instance_discovery": False, "validate_authority": False} if self._custom else {}
                self._app = ConfidentialClientApplication(self.app_id, client_credential=self._password.reveal(),
                                                          authority=self.authority, **kwargs)
            return self._app

    def token(self, scope: str) -> str:
        """A bearer token for ``scope`` (blocking: MSAL's own cache first, then the authority)."""
        scope = scope if scope.endswith("/.default") else scope.rstrip("/") + "/.default"
        result = self._msal().acquire_token_for_client(scopes=[scope])
        if "access_token" in result:
            return result["access_token"]
        raise PermissionError(f"could not get a Bot Framework token: {result.get('error', 'unknown error')}")

    async def token_async(self, scope: str) -> str:
        return await asyncio.to_thread(self.token, scope)


class MsalCredentials(AppCredentials, AsyncHTTPPolicy):
    """One connector's credentials. msrest runs it as a pipeline policy (it is an
    ``AsyncHTTPPolicy``), so the token is fetched off the event loop right before a
    request; synchronous clients (run in threads) use ``signed_session`` as usual."""

    def __init__(self, factory: MsalCredentialsFactory, scope: str) -> None:
        AppCredentials.__init__(self, app_id=factory.app_id, oauth_scope=scope)
        AsyncHTTPPolicy.__init__(self)
        self._factory = factory

    def get_access_token(self, force_refresh: bool = False) -> str:
        return self._factory.token(self.oauth_scope)

    async def send(self, request, **kwargs):
        token = await self._factory.token_async(self.oauth_scope)
        request.http_request.headers["Authorization"] = f"Bearer {token}"
        return await self.next.send(request, **kwargs)


class MetadataWarmer:
    """Keeps botbuilder's cached OpenID keys fresh from a worker thread.

    botbuilder refreshes them with a blocking ``requests.get`` (no timeout) inside the
    event loop when they are a day old, or when a token names an unknown key and the keys
    are over an hour old; refreshing every 30 minutes here means that never happens on the
    loop, and an attacker sending unknown key ids cannot stall the broker.
    """

    def __init__(self, metadata_url: str, interval_s: float = METADATA_REFRESH_S) -> None:
        self.metadata_url = metadata_url
        self.interval_s = interval_s
        self.last_ok: dt.datetime | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task | None = None

    async def refresh(self) -> bool:
        metadata = JwtTokenExtractor.get_open_id_metadata(self.metadata_url)
        try:
            await asyncio.wait_for(asyncio.to_thread(_refresh_blocking, metadata), timeout=30)
        except Exception as e:  # noqa: BLE001 - logged; retried every minute
            self.last_error = f"{e.__class__.__name__}: {e}"[:300]
            log.warning("Teams: could not fetch the Bot Framework signing keys from %s (%s)", self.metadata_url,
                        self.last_error)
            # Keep botbuilder from fetching them itself, blocking, on the next activity: with no
            # keys it refuses tokens (401) until a refresh here succeeds.
            if hasattr(metadata, "last_updated"):
                metadata.last_updated = dt.datetime.now()
            return False
        self.last_ok, self.last_error = dt.datetime.now(dt.timezone.utc), None
        return True

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s if self.last_error is None else 60)
            await self.refresh()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)
            self._task = None


def _refresh_blocking(metadata) -> None:
    # ``_OpenIdMetadata._refresh`` is declared async but only makes blocking calls.
    asyncio.run(metadata._refresh())
