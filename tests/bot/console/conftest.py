"""A broker with the console desk on the test prefix, and signed-in browsers (one cookie
jar per approver) that talk to the real Starlette app."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest

from broker.app import create_app
from bot.console import ConsoleDesk
from tests.support.harness import ISSUER, Harness, make_settings, write_agents

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Browser:
    """One approver's cookie jar against the console."""

    http: httpx.AsyncClient
    approver: str | None = None

    async def page(self, path: str = "/console") -> httpx.Response:
        return await self.http.get(path)

    async def csrf(self) -> str:
        found = CSRF_RE.search((await self.page()).text)
        assert found, "no CSRF token on the page (not signed in?)"
        return found.group(1)

    async def post(self, path: str, data: dict | None = None, *, csrf: bool = True, **kw) -> httpx.Response:
        body = dict(data or {})
        if csrf:
            body.setdefault("csrf", await self.csrf())
        return await self.http.post(path, data=body, **kw)

    async def act(self, rid: str, what: str, **data) -> httpx.Response:
        return await self.post(f"/console/requests/{rid}/{what}", data)


class Console:
    """The harness plus the console desk and a way to sign people in."""

    def __init__(self, harness: Harness, desk: ConsoleDesk) -> None:
        self.h = harness
        self.desk = desk
        self.app = create_app(harness.settings, broker=harness.broker)
        self._clients: list[httpx.AsyncClient] = []

    def browser(self) -> Browser:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=ISSUER)
        self._clients.append(http)
        return Browser(http)

    async def link(self, approver: str) -> str:
        link = await self.desk.views.sessions.issue_link(approver, now=self.h.clock.now(), issued_by="test")
        return link.token

    async def signed_in(self, approver: str) -> Browser:
        b = self.browser()
        r = await b.http.post("/console/login", data={"token": await self.link(approver)})
        assert r.status_code == 303, r.text
        b.approver = approver
        return b

    async def close(self) -> None:
        for c in self._clients:
            await c.aclose()


@pytest.fixture
async def console(tmp_path, redis_url, prefix, redis):
    """A running broker (manual clock) with only the console desk; chain status uncached."""
    from broker.clock import ManualClock

    settings = make_settings(tmp_path, redis_url, prefix)
    keys = write_agents(settings.agents_file)
    desk = ConsoleDesk(settings, chain_cache_s=0)
    h = Harness(settings, keys, ManualClock(), desks=[desk])
    await h.start()
    c = Console(h, desk)
    yield c
    await c.close()
    await h.stop()
