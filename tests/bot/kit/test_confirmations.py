"""The desk kit's one-time confirmation store on its own, against real Redis (issue 15: "one one-time
confirmation store (keep the stricter of today's two)"). The desks' own tests check the same rules end to end:
tests/bot/slack/test_breakglass.py and tests/bot/teams/test_breakglass.py."""

from __future__ import annotations

import asyncio

import pytest

from bot.kit.confirmations import CONFIRM_TTL_S, Confirmations, preview_digest, recheck
from bot.commands import BreakGlassArgs
from broker.breakglass import Preview
from broker.errors import Conflict

PARAMS = '{"subject":"ops-bot","action":"rollback"}'


async def remember(store: Confirmations, **kw) -> str:
    values = dict(user="U1", tenant="T1", where="C1", engineer="frank", params=PARAMS, shown="s")
    values.update(kw)
    return await store.remember(**values)


async def test_records_live_under_the_desk_prefix_and_expire(redis, prefix):
    """Issue 5/15: a confirmation older than 10 minutes grants nothing: the record is stored under the desk's key
    prefix with a TTL of CONFIRM_TTL_S."""
    store = Confirmations(redis, prefix, "slack")
    nonce = await remember(store)
    key = f"{prefix}slack:bg-confirm:{nonce}"
    assert 0 < await redis.ttl(key) <= CONFIRM_TTL_S == 600
    await redis.pexpire(key, 1)
    await asyncio.sleep(0.05)
    assert await store.take(nonce, "U1", "T1") == ("missing", {})


async def test_taken_once_and_only_by_its_user_and_tenant(redis, prefix):
    """Issue 15 (the stricter store): taken in one atomic step, once, and only by the user *and* tenant it was
    shown to; anyone else's attempt leaves it in place."""
    store = Confirmations(redis, prefix, "teams")
    nonce = await remember(store)
    assert await store.take(nonce, "U2", "T1") == ("other", {})
    assert await store.take(nonce, "U1", "T2") == ("other", {})
    assert await store.take(nonce, "U1", None) == ("other", {})
    verdict, record = await store.take(nonce, "U1", "T1")
    assert verdict == "ok" and record["engineer"] == "frank" and record["params"] == PARAMS
    assert await store.take(nonce, "U1", "T1") == ("missing", {})


async def test_racing_takes_succeed_once(redis, prefix):
    """Issue 15 "single use via an atomic Redis op": 20 concurrent takes of one confirmation, one wins."""
    store = Confirmations(redis, prefix, "slack")
    nonce = await remember(store)
    got = await asyncio.wait_for(asyncio.gather(*(store.take(nonce, "U1", "T1") for _ in range(20))), 10)
    assert sorted(v for v, _ in got) == ["missing"] * 19 + ["ok"]


@pytest.mark.parametrize("nonce", [None, 7, "", "short", "has space in it, twenty chars", "x" * 65])
async def test_malformed_nonces_find_nothing(redis, prefix, nonce):
    """A nonce that is not one jitgate issues is refused before Redis is asked."""
    assert await Confirmations(redis, prefix, "slack").take(nonce, "U1", "T1") == ("missing", {})


async def test_matches_the_modal_or_card_where_and_parameters(redis, prefix):
    """Issue 15 (the stricter store): once attached, only that modal or card counts; where it was shown, when the
    desk says; and the recorded parameters, equal to any the submission carries."""
    store = Confirmations(redis, prefix, "teams")
    nonce = await remember(store)
    await store.attach(nonce, "card-1")
    _, record = await store.take(nonce, "U1", "T1")
    assert Confirmations.matches(record, shown_in="card-1", where="C1", params=PARAMS)
    assert not Confirmations.matches(record, shown_in="card-2")
    assert not Confirmations.matches(record, shown_in=None)
    assert not Confirmations.matches(record, shown_in="card-1", where="C2")
    assert not Confirmations.matches(record, shown_in="card-1", params=PARAMS + " ")
    assert not Confirmations.matches({**record, "params": PARAMS.replace("ops-bot", "me")}, shown_in="card-1")
    assert Confirmations.same_engineer(record, "frank")
    assert not Confirmations.same_engineer(record, "alice") and not Confirmations.same_engineer(record, None)


async def test_attach_does_not_revive_a_spent_record(redis, prefix):
    """Attaching the card id after the record was taken creates nothing that could be taken again."""
    store = Confirmations(redis, prefix, "teams")
    nonce = await remember(store)
    assert (await store.take(nonce, "U1", "T1"))[0] == "ok"
    await store.attach(nonce, "card-1")
    assert await redis.exists(store.p + nonce) == 0


class _Core:
    """The core's preview, answering what it is told (the kit sees only ``preview``)."""

    def __init__(self, pv: Preview) -> None:
        self.pv = pv

    async def preview(self, engineer, **_kw) -> Preview:
        return self.pv


async def test_recheck_refuses_when_what_would_be_granted_changed():
    """Issue 15 (the stricter store): the preview re-run at submit must grant exactly what was shown."""
    pv = Preview("ops-bot", "rollback", "prod/x", 1200, 1200, "why", None, ("p",), None)
    args = BreakGlassArgs.from_json(
        '{"subject":"ops-bot","action":"rollback","target":"prod/x","duration_s":1200,"reason":"why","incident":null}')
    record = {"shown": preview_digest(pv)}
    assert await recheck(_Core(pv), None, args, record, shown_as="card", again="Again.") == pv
    cut = Preview("ops-bot", "rollback", "prod/x", 600, 1200, "why", None, ("p",), "cut to 10 min by p")
    with pytest.raises(Conflict, match="changed since the card was shown .now 10 min, cut to 10 min by p.*Again"):
        await recheck(_Core(cut), None, args, record, shown_as="card", again="Again.")
