"""JITGATE_RETENTION_S: how long a closed request stays readable (issue 8 item 5, "what
retention setting bounds the total")."""

from __future__ import annotations

import base64
import os

import pytest

from broker.clock import ManualClock
from broker.config import DEFAULT_RETENTION_S, Settings
from broker.errors import ConfigError
from tests.support.harness import Harness, make_settings, write_agents

BASE = {"JITGATE_ISSUER": "https://jitgate.test",
        "JITGATE_KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode()}


def test_retention_setting_is_parsed_and_bounded():
    """Default 30 days; an hour to ten years; anything else refuses start-up naming the setting."""
    assert Settings.from_env(BASE).retention_s == DEFAULT_RETENTION_S == 30 * 86400
    assert Settings.from_env({**BASE, "JITGATE_RETENTION_S": ""}).retention_s == DEFAULT_RETENTION_S
    assert Settings.from_env({**BASE, "JITGATE_RETENTION_S": "3600"}).retention_s == 3600
    assert Settings.from_env({**BASE, "JITGATE_RETENTION_S": str(10 * 365 * 86400)}).retention_s == 10 * 365 * 86400
    for bad in ("3599", str(10 * 365 * 86400 + 1), "30d", "-1"):
        with pytest.raises(ConfigError, match="JITGATE_RETENTION_S"):
            Settings.from_env({**BASE, "JITGATE_RETENTION_S": bad})


@pytest.fixture
async def short(tmp_path, redis_url, prefix, redis):
    """A broker that keeps closed requests for two hours."""
    settings = make_settings(tmp_path, redis_url, prefix, retention_s=7200)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    yield h
    await h.stop()


async def _pttl_s(h, rid: str) -> float:
    return await h.broker.redis.pttl(h.broker.store.req_key(rid)) / 1000


async def test_closed_request_is_kept_for_the_retention_setting(short):
    """A denied and a completed request expire from Redis after JITGATE_RETENTION_S; an open one does not."""
    denied = (await short.propose()).json()["id"]
    assert await short.broker.redis.pttl(short.broker.store.req_key(denied)) == -1  # open: its deadline closes it
    await short.life.deny(denied, short.approver("bob"), channel="cli", reason="not now")
    assert 7190 < await _pttl_s(short, denied) <= 7200

    done = (await short.propose("reader-bot", action="read", target="staging/payments-api", duration_s=60)).json()
    assert done["status"] == "approved"  # staging-read: granted at once
    assert (await short.collect(done["id"], "reader-bot")).status_code == 200
    assert (await short.complete(done["id"], "reader-bot")).status_code == 200
    assert 7190 < await _pttl_s(short, done["id"]) <= 7200
