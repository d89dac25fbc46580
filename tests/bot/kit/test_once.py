"""The desk kit's say-once markers on their own, against real Redis (issue 15: "say-once markers ... in bot/kit,
used by both" desks). The outbox delivers each change at least once; a desk says each thing at most once."""

from __future__ import annotations

import pytest

from bot.kit.once import say_once


class Sent:
    def __init__(self, fail: int = 0) -> None:
        self.count, self.fail = 0, fail

    async def __call__(self) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the platform is away")
        self.count += 1


@pytest.mark.parametrize("field", [None, "thread:1:approved"])
async def test_said_once_however_often_delivered(redis, prefix, field):
    """Issue 15: a retried delivery says nothing twice; the marker expires after ttl_s (as a hash field or a key)."""
    key, sent = prefix + "marks", Sent()
    assert await say_once(redis, key, sent, field=field, ttl_s=60) is True
    assert await say_once(redis, key, sent, field=field, ttl_s=60) is False
    assert sent.count == 1
    assert 0 < await redis.ttl(key) <= 60
    if field is not None:
        assert await redis.hget(key, field) == b"1"
        other = Sent()
        assert await say_once(redis, key, other, field="thread:1:denied", ttl_s=60) is True  # another event
        assert other.count == 1


async def test_a_failed_send_is_tried_again(redis, prefix):
    """The marker is written only after the send returned: a failure leaves no marker, so the outbox's retry says it."""
    key, sent = prefix + "mark", Sent(fail=1)
    with pytest.raises(ConnectionError):
        await say_once(redis, key, sent, ttl_s=60)
    assert await redis.exists(key) == 0
    assert await say_once(redis, key, sent, ttl_s=60) is True and sent.count == 1
