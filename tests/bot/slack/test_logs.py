"""PITFALLS: Bolt logs request bodies (on a bad signature at INFO, unhandled requests at
WARNING); the desk's loggers must never let a body through."""

from __future__ import annotations

import logging

from bot.slack.logs import NoBodies
from tests.bot.slack import slackreq
from tests.bot.slack.conftest import running

MARKER = "SECRET-MARKER-7f3a"


async def test_bad_signature_body_is_not_logged(tmp_path, redis_url, prefix, redis, fake_slack, caplog):
    """A request with a bad signature is refused without its body reaching any log, even with logging at DEBUG
    from the start (Bolt copies the root level when it builds its loggers)."""
    caplog.set_level(logging.DEBUG)
    async with running(tmp_path, redis_url, prefix, fake_slack) as slack:
        body = slackreq.form_payload(slackreq.block_actions("U0BOB", "jit_approve", value=MARKER))
        r = await slack.post(body, slackreq.signed(body, secret="wrong"))
        assert r.status_code == 401
    assert "Invalid request signature" not in caplog.text or "request body not logged" in caplog.text
    assert MARKER not in caplog.text


async def test_unhandled_request_body_is_not_logged(slack, caplog):
    """A signed request no listener handles is logged without its payload."""
    caplog.set_level(logging.DEBUG)
    body = slackreq.form_payload(slackreq.block_actions("U0BOB", "some_other_action", value=MARKER))
    r = await slack.post(body)
    assert r.status_code == 404
    assert MARKER not in caplog.text
    assert "request body not logged" in caplog.text


def test_filter_keeps_the_first_words():
    """The redacting filter keeps what happened and drops the body."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1,
                               "Invalid request signature detected (signature: %s, timestamp: 1, body: %s)",
                               ("v0=abc", f"payload={MARKER}"), None)
    assert NoBodies().filter(record)
    assert record.getMessage() == "Invalid request signature detected (request body not logged)"
