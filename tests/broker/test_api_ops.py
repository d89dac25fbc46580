"""The operations endpoints: /metrics needs a bearer token (or is public on purpose), and
/readyz says states only, never internals."""

from __future__ import annotations

import base64
import logging
import os

import pytest

from broker.clock import ManualClock
from broker.config import Secret, Settings
from broker.errors import ConfigError
from tests.support.harness import Harness, make_settings, write_agents
from tests.support.redis_server import RedisServer, free_port, redis_server_binary

TOKEN = "scrape-" + "7f3a9c" * 6


async def _harness(tmp_path, redis_url, prefix, **overrides) -> Harness:
    settings = make_settings(tmp_path, redis_url, prefix, **overrides)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    return await h.start(background=False)


async def test_metrics_are_refused_by_default(harness):
    """Issue 14.14: "/metrics ... need no authentication": with neither JITGATE_METRICS_TOKEN
    nor JITGATE_METRICS_PUBLIC set, /metrics is refused (fail closed), naming both settings."""
    r = await harness.client.get("/metrics")
    assert r.status_code == 403
    assert "JITGATE_METRICS_TOKEN" in r.json()["detail"] and "JITGATE_METRICS_PUBLIC" in r.json()["detail"]
    assert "jitgate_" not in r.text


async def test_metrics_token_is_required_when_set(tmp_path, redis_url, prefix, redis):
    """Issue 14.14: with JITGATE_METRICS_TOKEN set, /metrics needs `Authorization: Bearer <token>`;
    none, a wrong one or another scheme is a 401 with WWW-Authenticate."""
    h = await _harness(tmp_path, redis_url, prefix, metrics_token=Secret(TOKEN))
    try:
        for headers in ({}, {"Authorization": "Bearer " + TOKEN[:-1] + "x"}, {"Authorization": "Basic " + TOKEN},
                        {"Authorization": "Bearer " + TOKEN + "x"}, {"Authorization": "Bearer"}):
            r = await h.client.get("/metrics", headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"].startswith("Bearer") and "jitgate_" not in r.text
        ok = await h.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and "jitgate_decisions_total" in ok.text
    finally:
        await h.stop()


async def test_metrics_public_on_purpose(tmp_path, redis_url, prefix, redis):
    """Issue 14.14: JITGATE_METRICS_PUBLIC=1 serves /metrics without authentication (a private scrape network)."""
    h = await _harness(tmp_path, redis_url, prefix, metrics_public=True)
    try:
        r = await h.client.get("/metrics")
        assert r.status_code == 200 and "jitgate_decisions_total" in r.text
    finally:
        await h.stop()


def test_metrics_settings_refuse_nonsense():
    """Issue 14.14: a short token, or a token and PUBLIC=1 together, refuse to start; the token never shows in repr."""
    base = {"JITGATE_ISSUER": "https://jitgate.test",
            "JITGATE_KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode()}
    with pytest.raises(ConfigError, match="JITGATE_METRICS_TOKEN must be at least"):
        Settings.from_env({**base, "JITGATE_METRICS_TOKEN": "short"})
    with pytest.raises(ConfigError, match="contradict"):
        Settings.from_env({**base, "JITGATE_METRICS_TOKEN": TOKEN, "JITGATE_METRICS_PUBLIC": "1"})
    s = Settings.from_env({**base, "JITGATE_METRICS_TOKEN": TOKEN})
    assert s.metrics_token.reveal() == TOKEN and not s.metrics_public and TOKEN not in repr(s)
    assert Settings.from_env({**base, "JITGATE_METRICS_PUBLIC": "yes"}).metrics_public is True


async def test_readyz_shows_states_without_internals(tmp_path, prefix, caplog):
    """Issue 14.14: "/readyz shows internal URLs when a fetch fails": when Redis goes away,
    /readyz is 503 naming the component only (no address, no exception text); the log has
    the details."""
    server = RedisServer(redis_server_binary(), port=free_port(), appendonly=False).start()
    try:
        h = await _harness(tmp_path, server.url, prefix)
        try:
            ready = await h.client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready", "components": {"redis": "ok"}}
            server.stop()
            with caplog.at_level(logging.WARNING, logger="jitgate.api"):
                down = await h.client.get("/readyz")
            assert down.status_code == 503
            body = down.json()
            assert body["components"] == {"redis": "not ready"} and body["detail"] == "not ready: redis"
            for internal in (str(server.port), "127.0.0.1", "Error", "refused", "redis://"):
                assert internal not in down.text, internal
            assert any("redis is not ready" in r.getMessage() and "Error" in r.getMessage() for r in caplog.records)
        finally:
            await h.stop()
    finally:
        server.stop()
