"""The console desk: when it is on, its (honest, silent) notifier, and its lifetime.

The console is on by default only when no chat platform is configured, and then only on
a loopback address: a newcomer's laptop must not serve an approval page to the network.
``JITGATE_CONSOLE=1`` turns it on deliberately on any address; ``0`` turns it off.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from broker.config import Settings
from broker.errors import ConfigError
from broker.notify import DeskContext, MessageRef, Notice

log = logging.getLogger("jitgate.console")

DEFAULT, EXPLICIT = "default", "explicit"


def console_mode(settings: Settings) -> str | None:
    """``"explicit"`` (JITGATE_CONSOLE=1), ``"default"`` (no chat platform) or None (off)."""
    if settings.console is True:
        return EXPLICIT
    if settings.console is False:
        return None
    if settings.env.get("SLACK_BOT_TOKEN") or settings.env.get("MICROSOFT_APP_ID"):
        return None
    return DEFAULT


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ConsoleNotifier:
    """The console posts nothing: its pages read the state live from Redis, so there is no
    message to keep in step. It exists so the broker counts the console as a desk."""

    name = "console"

    async def post_proposal(self, notice: Notice) -> list[MessageRef]:
        return []

    async def update(self, notice: Notice) -> None:
        return None

    async def remind(self, notice: Notice) -> None:
        return None

    async def alert_security(self, notice: Notice) -> None:
        return None

    async def announce(self, notice: Notice) -> None:
        return None


class ConsoleDesk:
    """Serves ``/console`` on the broker's server."""

    name = "console"

    def __init__(self, settings: Settings, *, explicit: bool = False, banner: bool | None = None,
                 chain_cache_s: float = 30.0) -> None:
        from .views import ConsoleViews  # noqa: PLC0415 - Jinja2 is loaded only when the console is on

        self.settings = settings
        self.explicit = explicit
        # The first-run banner (sign-in link + demo command), printed when a demo agent exists
        # and the broker was started with `jitgate serve --first-run` (what `make run` does):
        # a production start never prints a live sign-in link into its log.
        self.banner = settings.first_run if banner is None else banner
        self.notifier = ConsoleNotifier()
        self.views = ConsoleViews(settings, chain_cache_s=chain_cache_s)
        self._banner_task: asyncio.Task | None = None

    def routes(self) -> list:
        return self.views.routes()

    async def start(self, ctx: DeskContext) -> None:
        self.views.bind(ctx)
        if self.banner:
            from .demo import first_run_banner  # noqa: PLC0415

            text = await first_run_banner(ctx, self.views.sessions)
            if text:
                # Printed just after uvicorn says where it listens, so it is the last thing seen.
                self._banner_task = asyncio.get_running_loop().create_task(_print_later(text))

    async def stop(self) -> None:
        if self._banner_task is not None:
            self._banner_task.cancel()
            self._banner_task = None


async def _print_later(text: str, delay_s: float = 0.5) -> None:
    await asyncio.sleep(delay_s)
    print(text, flush=True)


def desk_from_settings(settings: Settings) -> ConsoleDesk | None:
    """The console desk, or None when it is off; refuses a default-on console on a
    non-loopback address (fail closed)."""
    mode = console_mode(settings)
    if mode is None:
        return None
    if mode == DEFAULT and not is_loopback(settings.host):
        raise ConfigError(
            f"JITGATE_HOST is {settings.host!r}, but the console is on because no chat platform is configured, "
            "and then it listens on 127.0.0.1 only. Set JITGATE_HOST=127.0.0.1, or JITGATE_CONSOLE=1 to serve "
            "the console on this address deliberately (behind TLS), or JITGATE_CONSOLE=0 to turn it off"
        )
    if mode == EXPLICIT and not is_loopback(settings.host) and not settings.issuer.startswith("https://"):
        log.warning("the console is served on %s over plain http (JITGATE_ISSUER %s): session cookies cross "
                    "the network unencrypted; put TLS in front and set an https issuer",
                    settings.host, settings.issuer)
    return ConsoleDesk(settings, explicit=mode == EXPLICIT)
