"""broker/ssf over HTTP: the OpenID Shared Signals Framework 1.0 transmitter (metadata, stream
management, CAEP 1.0 session-revoked SETs by poll per RFC 8936 and push per RFC 8935). The SETs
are checked with joserfc, a JOSE library independent of the one that signs them (PyJWT)."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from broker.clock import ManualClock
from broker.config import Settings
from broker.errors import ConfigError, Conflict
from broker.identity import add_resource_server, generate_key, load_private_key
from broker.ssf import CAEP_SESSION_REVOKED, DELIVERY_POLL, DELIVERY_PUSH, SSF_VERIFICATION
from tests.broker.test_settings import BASE
from tests.support.harness import ISSUER, Harness, make_settings, write_agents

RS = "payments-api"
OTHER = "orders-api"  # a second receiver, registered only for prod/payments-api


@pytest.fixture
async def ssf(tmp_path, redis_url, prefix, redis):
    """A broker that may push over http to loopback, with two registered receivers."""
    settings = make_settings(tmp_path, redis_url, prefix, ssf_push_allow_http=True, ssf_max_streams=3,
                             ssf_poll_max_wait_s=5)
    keys = write_agents(settings.agents_file)
    pem, jwk = generate_key("P-256")
    keys[OTHER] = load_private_key(pem)
    add_resource_server(settings.agents_file, id=OTHER, public_jwk=jwk, audiences=["prod/payments-api"])
    h = Harness(settings, keys, ManualClock())
    await h.start()
    yield h
    await h.stop()


async def _create(h, body=None, who=RS):
    return await h.client.post("/ssf/stream", json=body or {}, headers=h.auth(who))


async def _active(h, agent="reader-bot"):
    """An active token for staging/payments-api (auto-granted): (request id, token, jti)."""
    rid = (await h.propose(agent, action="read", target="staging/payments-api", duration_s=300)).json()["id"]
    body = (await h.collect(rid, agent)).json()
    token = body["access_token"]
    claims = jose_jwt.decode(token, await _keys(h)).claims
    return rid, token, claims["jti"]


async def _keys(h) -> KeySet:
    return KeySet.import_key_set((await h.client.get("/.well-known/jwks.json")).json())


async def _poll(h, sid, body=None, who=RS):
    r = await h.client.post(f"/ssf/poll/{sid}", json=body if body is not None else {"returnImmediately": True},
                            headers=h.auth(who))
    assert r.status_code == 200, r.text
    return r.json()


async def _poll_until(h, sid, n=1, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        sets = (await _poll(h, sid))["sets"]
        if len(sets) >= n or asyncio.get_running_loop().time() > deadline:
            return sets
        await asyncio.sleep(0.02)


def _decode_set(token: str, keys: KeySet):
    """RFC 8417 section 2.3 / SSF 1.0 section 4.1.1: a SET is a signed JWT whose header typ is
    secevent+jwt; verified here with joserfc (not the signer's library)."""
    tok = jose_jwt.decode(token, keys, algorithms=["ES256", "EdDSA"])
    assert tok.header["typ"] == "secevent+jwt" and tok.header["kid"]
    return tok.claims


# --- metadata --------------------------------------------------------------------------------


async def test_transmitter_metadata_has_what_ssf_requires(ssf):
    """SSF 1.0 section 7.1: "issuer" REQUIRED and "MUST be identical to the iss claim value in
    Security Event Tokens"; "jwks_uri" MUST be given by a transmitter that signs; the document
    is application/json (section 7.2) and "Claims with zero elements MUST be omitted"."""
    r = await ssf.client.get("/.well-known/ssf-configuration")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    meta = r.json()
    assert meta["issuer"] == ISSUER and meta["spec_version"] == "1_0"
    assert meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert set(meta["delivery_methods_supported"]) == {DELIVERY_PUSH, DELIVERY_POLL}
    for name in ("configuration_endpoint", "status_endpoint", "add_subject_endpoint", "remove_subject_endpoint",
                 "verification_endpoint"):
        assert meta[name].startswith(ISSUER + "/ssf/")  # on the https issuer: "MUST use HTTP over TLS"
    assert all(v != [] for v in meta.values())
    assert meta["default_subjects"] in ("ALL", "NONE")
    assert all(isinstance(s["spec_urn"], str) for s in meta["authorization_schemes"])


# --- stream management -----------------------------------------------------------------------


async def test_a_stream_without_delivery_is_a_poll_stream_the_transmitter_addresses(ssf):
    """SSF 1.0 section 8.1.1.1: with no "delivery" the transmitter MUST assume poll and include
    "delivery" with "method" and an "endpoint_url" it supplies; the answer is 201 with iss, aud,
    events_delivered; reading lists the receiver's streams (an empty list when none)."""
    assert (await ssf.client.get("/ssf/stream", headers=ssf.auth(RS))).json() == []
    r = await _create(ssf, {"description": "verifier"})
    assert r.status_code == 201
    cfg = r.json()
    assert cfg["iss"] == ISSUER and cfg["aud"] == RS and cfg["description"] == "verifier"
    assert cfg["delivery"] == {"method": DELIVERY_POLL, "endpoint_url": f"{ISSUER}/ssf/poll/{cfg['stream_id']}"}
    assert cfg["events_delivered"] == [CAEP_SESSION_REVOKED]
    listed = (await ssf.client.get("/ssf/stream", headers=ssf.auth(RS))).json()
    assert listed == [cfg]
    one = await ssf.client.get("/ssf/stream", params={"stream_id": cfg["stream_id"]}, headers=ssf.auth(RS))
    assert one.json() == cfg and one.headers["cache-control"] == "no-store"


async def test_streams_are_the_receivers_own(ssf):
    """SSF 1.0 section 8: the authorization "MUST associate a Receiver with one or more stream IDs",
    "such that only authorized Receivers are able to access or modify" them: another receiver's
    stream answers 404 (as an unknown one), an agent's assertion 401, none at all 401."""
    sid = (await _create(ssf)).json()["stream_id"]
    for method in ("GET", "DELETE"):
        r = await ssf.client.request(method, "/ssf/stream", params={"stream_id": sid}, headers=ssf.auth(OTHER))
        assert r.status_code == 404
    r = await ssf.client.post(f"/ssf/poll/{sid}", json={}, headers=ssf.auth(OTHER))
    assert r.status_code == 404
    assert (await ssf.client.get("/ssf/stream", headers=ssf.auth("reader-bot"))).status_code == 401
    assert (await ssf.client.get("/ssf/stream")).status_code == 401
    assert (await ssf.client.get("/ssf/stream", headers=ssf.auth(OTHER))).json() == []


@pytest.mark.parametrize("body, needle", [
    ({"delivery": {"method": "urn:example:carrier-pigeon"}}, "delivery.method"),
    ({"delivery": {"method": DELIVERY_PUSH}}, "endpoint_url"),
    ({"delivery": {"method": DELIVERY_PUSH, "endpoint_url": "ftp://x.example/"}}, "https"),
    ({"delivery": {"method": DELIVERY_PUSH, "endpoint_url": "https://u:p@x.example/"}}, "user information"),
    ({"delivery": {"method": DELIVERY_PUSH, "endpoint_url": "https://x.example/", "authorization_header": "a\r\nb"}},
     "line breaks"),
    ({"events_requested": "all"}, "events_requested"),
    ({"description": 7}, "description"),
    ([], "JSON object"),
])
async def test_a_bad_stream_configuration_is_a_400_and_creates_nothing(ssf, body, needle):
    """SSF 1.0 section 8.1.1.1: 400 "if the request cannot be parsed"; a problem+json naming the
    property, and no stream created."""
    r = await ssf.client.post("/ssf/stream", json=body, headers=ssf.auth(RS))
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert needle in r.json()["detail"]
    assert (await ssf.client.get("/ssf/stream", headers=ssf.auth(RS))).json() == []


async def test_push_over_plain_http_needs_the_setting(tmp_path, redis_url, prefix, redis):
    """SETs name live tokens: a push endpoint must be https unless JITGATE_SSF_PUSH_ALLOW_HTTP."""
    settings = make_settings(tmp_path, redis_url, prefix)
    h = Harness(settings, write_agents(settings.agents_file), ManualClock())
    await h.start()
    try:
        r = await _create(h, {"delivery": {"method": DELIVERY_PUSH, "endpoint_url": "http://127.0.0.1:9/events"}})
        assert r.status_code == 400 and "JITGATE_SSF_PUSH_ALLOW_HTTP" in r.json()["detail"]
        ok = await _create(h, {"delivery": {"method": DELIVERY_PUSH, "endpoint_url": "https://rs.example/events"}})
        assert ok.status_code == 201
    finally:
        await h.stop()


async def test_a_receiver_has_at_most_its_maximum_of_streams(ssf):
    """JITGATE_SSF_MAX_STREAMS: past it, creation is 409 (SSF 1.0 section 8.1.1.1: "409 Conflict"
    when the transmitter allows no more streams for the receiver)."""
    for _ in range(3):
        assert (await _create(ssf)).status_code == 201
    r = await _create(ssf)
    assert r.status_code == 409 and "JITGATE_SSF_MAX_STREAMS" in r.json()["detail"]
    assert len((await ssf.client.get("/ssf/stream", headers=ssf.auth(RS))).json()) == 3


async def test_patch_changes_what_is_sent_put_replaces_and_transmitter_properties_must_match(ssf):
    """SSF 1.0 sections 8.1.1.3 and 8.1.1.4: PATCH changes only the properties present, PUT deletes
    the missing receiver-supplied ones, and a transmitter-supplied property sent with another value
    is a 400 that changes nothing."""
    cfg = (await _create(ssf, {"description": "one"})).json()
    sid = cfg["stream_id"]
    r = await ssf.client.patch("/ssf/stream", json={"stream_id": sid, "iss": "https://evil.example",
                                                    "description": "two"}, headers=ssf.auth(RS))
    assert r.status_code == 400 and "'iss'" in r.json()["detail"]
    r = await ssf.client.patch("/ssf/stream", json={"stream_id": sid, "events_requested": [SSF_VERIFICATION]},
                               headers=ssf.auth(RS))
    assert r.status_code == 200
    assert r.json()["description"] == "one" and r.json()["events_delivered"] == []
    r = await ssf.client.put("/ssf/stream", json={"stream_id": sid, "iss": ISSUER}, headers=ssf.auth(RS))
    assert r.status_code == 200
    assert "description" not in r.json() and "events_requested" not in r.json()
    assert r.json()["events_delivered"] == [CAEP_SESSION_REVOKED]


async def test_delete_removes_the_stream(ssf):
    """SSF 1.0 section 8.1.1.5: 204 No Content, then the stream is gone (404)."""
    sid = (await _create(ssf)).json()["stream_id"]
    r = await ssf.client.delete("/ssf/stream", params={"stream_id": sid}, headers=ssf.auth(RS))
    assert r.status_code == 204 and r.content == b""
    r = await ssf.client.get("/ssf/stream", params={"stream_id": sid}, headers=ssf.auth(RS))
    assert r.status_code == 404


async def test_subjects_are_checked_and_answered_as_the_spec_says(ssf):
    """SSF 1.0 sections 8.1.3.2 and 8.1.3.3: add answers 200, remove 204, a request without a
    subject identifier 400."""
    sid = (await _create(ssf)).json()["stream_id"]
    subject = {"format": "opaque", "id": "x"}
    r = await ssf.client.post("/ssf/subjects:add", json={"stream_id": sid, "subject": subject}, headers=ssf.auth(RS))
    assert r.status_code == 200
    r = await ssf.client.post("/ssf/subjects:remove", json={"stream_id": sid, "subject": subject},
                              headers=ssf.auth(RS))
    assert r.status_code == 204
    r = await ssf.client.post("/ssf/subjects:add", json={"stream_id": sid, "subject": "x"}, headers=ssf.auth(RS))
    assert r.status_code == 400


# --- events by poll (RFC 8936) -----------------------------------------------------------------


async def test_a_revoked_token_becomes_a_signed_session_revoked_set(ssf):
    """CAEP 1.0 session-revoked as an RFC 8417 SET: iss (the issuer), aud (the receiver), iat, jti,
    events; no "sub" (SSF 1.0 section 4.1.5 puts the subject in sub_id); the subject is the token
    itself in the jwt_id format (SSF 1.0 section 3.5.1, RFC 9493 registry) with the token's jti."""
    sid = (await _create(ssf)).json()["stream_id"]
    rid, _token, jti = await _active(ssf)
    await ssf.life.revoke(rid, by="alice", reason="incident 42", channel="cli")
    sets = await _poll_until(ssf, sid)
    assert len(sets) == 1
    set_jti, token = next(iter(sets.items()))
    claims = _decode_set(token, await _keys(ssf))
    assert claims["iss"] == ISSUER and claims["aud"] == RS and claims["jti"] == set_jti
    assert isinstance(claims["iat"], int) and "sub" not in claims and "exp" not in claims
    assert claims["sub_id"] == {"format": "jwt_id", "iss": ISSUER, "jti": jti}
    event = claims["events"][CAEP_SESSION_REVOKED]
    assert event["subject"] == claims["sub_id"]
    assert event["initiating_entity"] == "admin" and event["reason_admin"] == {"en": "incident 42"}
    assert isinstance(event["event_timestamp"], int)


async def test_the_kill_switch_signals_every_grant_it_revokes(ssf):
    """Issue 16, items 5 and 6: grants ended in the kill switch's batches reach the resource
    servers like single revocations: one session-revoked SET per token, none for a pending request."""
    from broker.killswitch import Selector

    sid = (await _create(ssf)).json()["stream_id"]
    jtis = {(await _active(ssf))[2] for _ in range(3)}
    pending = (await ssf.propose("reader-bot", action="restart", target="prod/payments-api")).json()
    assert pending["status"] == "pending"
    result = await ssf.life.kill_switch(Selector.of("agent", "reader-bot"), ssf.approver("carol"),
                                        reason="compromised", channel="cli", batch=2)
    assert result is not None
    sets = await _poll_until(ssf, sid, n=3)
    keys = await _keys(ssf)
    claims = [_decode_set(t, keys) for t in sets.values()]
    assert {c["sub_id"]["jti"] for c in claims} == jtis
    assert all(c["events"][CAEP_SESSION_REVOKED]["reason_admin"]["en"].endswith(": compromised") for c in claims)
    await asyncio.sleep(0.3)
    assert len((await _poll(ssf, sid))["sets"]) == 3  # nothing for the pending request


async def test_the_incident_scenario_reaches_subscribed_resource_servers_within_a_second(ssf):
    """Issue 16 "done when": after the posture turns to incident (the fixture policies forbid
    changes in it), an already active token is revoked by the policies deciding again, and the
    resource servers following the Shared Signals stream learn it within a second, told it was
    the policy (initiating_entity "policy") and why."""
    sid = (await _create(ssf)).json()["stream_id"]
    rid = (await ssf.propose("ops-bot", action="restart", target="prod/payments-api", duration_s=300)).json()["id"]
    await ssf.approve(rid, "erin")
    token = (await ssf.collect(rid, "ops-bot")).json()["access_token"]
    jti = jose_jwt.decode(token, await _keys(ssf)).claims["jti"]
    assert (await ssf.introspect(token)).json()["active"] is True
    started = asyncio.get_running_loop().time()
    await ssf.life.set_posture("incident", ssf.approver("carol"), channel="cli")
    sets = await _poll_until(ssf, sid, timeout=1.0)
    assert asyncio.get_running_loop().time() - started < 1.0 and len(sets) == 1
    claims = _decode_set(next(iter(sets.values())), await _keys(ssf))
    event = claims["events"][CAEP_SESSION_REVOKED]
    assert claims["sub_id"]["jti"] == jti and event["initiating_entity"] == "policy"
    assert "incident-freeze" in event["reason_admin"]["en"]
    assert (await ssf.introspect(token)).json() == {"active": False}


async def test_an_acknowledged_set_is_not_sent_again_an_unacknowledged_one_is(ssf):
    """RFC 8936 section 2.4: SETs stay available until acknowledged ("ack"), then are gone."""
    sid = (await _create(ssf)).json()["stream_id"]
    rid, _, _ = await _active(ssf)
    await ssf.life.revoke(rid, by="alice", reason="r", channel="cli")
    first = await _poll_until(ssf, sid)
    again = (await _poll(ssf, sid))["sets"]
    assert again == first  # not acknowledged: delivered again
    after = await _poll(ssf, sid, {"ack": list(first), "returnImmediately": True})
    assert after == {"sets": {}}


async def test_completion_is_signalled_and_each_grant_only_once(ssf):
    """An agent completing its task ends the grant early too (initiating_entity "user"); ending
    an ended grant again signals nothing more."""
    sid = (await _create(ssf)).json()["stream_id"]
    rid, _, jti = await _active(ssf)
    assert (await ssf.complete(rid, "reader-bot")).status_code == 200
    sets = await _poll_until(ssf, sid)
    claims = _decode_set(next(iter(sets.values())), await _keys(ssf))
    assert claims["sub_id"]["jti"] == jti
    assert claims["events"][CAEP_SESSION_REVOKED]["initiating_entity"] == "user"
    await _poll(ssf, sid, {"ack": list(sets), "returnImmediately": True})
    with pytest.raises(Conflict):
        await ssf.life.revoke(rid, by="alice", reason="again", channel="cli")
    await asyncio.sleep(0.3)
    assert (await _poll(ssf, sid))["sets"] == {}


async def test_grants_without_a_live_token_or_ending_at_their_end_signal_nothing(ssf):
    """Only a live token ended early is news: revoking an approved grant whose token was never
    collected, and a grant expiring at its end (its token's exp says so), queue no SET."""
    sid = (await _create(ssf)).json()["stream_id"]
    prod = (await ssf.propose("deploy-bot", action="restart", target="prod/payments-api", duration_s=120)).json()["id"]
    await ssf.approve(prod, "bob")
    await ssf.life.revoke(prod, by="alice", reason="never collected", channel="cli")
    rid, _, _ = await _active(ssf)
    ssf.clock.advance(301)
    assert (await ssf.life.expire(rid)).ok  # one by one, through the transition script
    await asyncio.sleep(0.3)
    assert (await _poll(ssf, sid))["sets"] == {}
    assert _queued(ssf) == 0


async def test_a_receiver_learns_only_about_tokens_meant_for_its_audiences(ssf):
    """RFC 7662 section 4's rule, kept for signals: a stream carries only tokens whose aud is one
    of its receiver's audiences (orders-api is registered for prod only; the token is staging's)."""
    mine = (await _create(ssf)).json()["stream_id"]
    theirs = (await _create(ssf, who=OTHER)).json()["stream_id"]
    rid, _, _ = await _active(ssf)
    await ssf.life.revoke(rid, by="alice", reason="r", channel="cli")
    assert len(await _poll_until(ssf, mine)) == 1
    assert (await _poll(ssf, theirs, who=OTHER))["sets"] == {}


async def test_a_long_poll_returns_as_soon_as_a_set_is_queued(ssf):
    """RFC 8936 section 2.4: with returnImmediately false the poll waits for SETs; it answers
    when the revocation is fanned out, not at the end of the wait."""
    sid = (await _create(ssf)).json()["stream_id"]
    rid, _, _ = await _active(ssf)
    loop = asyncio.get_running_loop()
    waiting = loop.create_task(_poll(ssf, sid, {"returnImmediately": False}))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    started = loop.time()
    await ssf.life.revoke(rid, by="alice", reason="r", channel="cli")
    body = await asyncio.wait_for(waiting, 5)
    assert len(body["sets"]) == 1 and loop.time() - started < 4


async def test_bad_poll_requests_are_400(ssf):
    """RFC 8936 section 2.4: maxEvents a non-negative integer, ack a list of jti strings."""
    sid = (await _create(ssf)).json()["stream_id"]
    for body in ({"maxEvents": -1}, {"maxEvents": "9"}, {"ack": "x"}, {"returnImmediately": "yes"}):
        r = await ssf.client.post(f"/ssf/poll/{sid}", json=body, headers=ssf.auth(RS))
        assert r.status_code == 400, body


async def test_verification_echoes_state_and_is_rate_limited(ssf):
    """SSF 1.0 section 8.1.4: 204, then a verification SET whose sub_id is the stream (opaque) and
    which echoes "state"; asked again within min_verification_interval: 429."""
    sid = (await _create(ssf)).json()["stream_id"]
    r = await ssf.client.post("/ssf/verify", json={"stream_id": sid, "state": "s-1"}, headers=ssf.auth(RS))
    assert r.status_code == 204
    again = await ssf.client.post("/ssf/verify", json={"stream_id": sid, "state": "s-2"}, headers=ssf.auth(RS))
    assert again.status_code == 429 and again.headers["retry-after"]
    sets = await _poll_until(ssf, sid)
    claims = _decode_set(next(iter(sets.values())), await _keys(ssf))
    assert claims["sub_id"] == {"format": "opaque", "id": sid}
    assert claims["events"][SSF_VERIFICATION] == {"state": "s-1"}


async def test_paused_streams_hold_events_and_disabled_ones_drop_them(ssf):
    """SSF 1.0 section 8.1.2.1: paused - "MUST NOT transmit" but SHOULD hold; disabled - "will not
    hold any events"."""
    sid = (await _create(ssf)).json()["stream_id"]
    r = await ssf.client.post("/ssf/status", json={"stream_id": sid, "status": "paused", "reason": "maintenance"},
                              headers=ssf.auth(RS))
    assert r.json() == {"stream_id": sid, "status": "paused", "reason": "maintenance"}
    rid, _, _ = await _active(ssf)
    await ssf.life.revoke(rid, by="alice", reason="r", channel="cli")
    await asyncio.sleep(0.5)
    assert (await _poll(ssf, sid))["sets"] == {}
    await ssf.client.post("/ssf/status", json={"stream_id": sid, "status": "enabled"}, headers=ssf.auth(RS))
    assert len(await _poll_until(ssf, sid)) == 1
    r = await ssf.client.post("/ssf/status", json={"stream_id": sid, "status": "disabled"}, headers=ssf.auth(RS))
    assert (await ssf.client.get("/ssf/status", params={"stream_id": sid}, headers=ssf.auth(RS))).json()["status"] \
        == "disabled"
    rid2, _, _ = await _active(ssf)
    await ssf.life.revoke(rid2, by="alice", reason="r", channel="cli")
    await ssf.client.post("/ssf/status", json={"stream_id": sid, "status": "enabled"}, headers=ssf.auth(RS))
    await asyncio.sleep(0.3)
    assert (await _poll(ssf, sid))["sets"] == {}
    bad = await ssf.client.post("/ssf/status", json={"stream_id": sid, "status": "on"}, headers=ssf.auth(RS))
    assert bad.status_code == 400


# --- events by push (RFC 8935) -----------------------------------------------------------------


class Receiver:
    """A receiver's push endpoint on 127.0.0.1 that records each request and answers the
    statuses it is told to, in order (then 202)."""

    def __init__(self, answers=()) -> None:
        self.answers = list(answers)
        self.got: list[tuple[dict, bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = owner.answers.pop(0) if owner.answers else 202
                payload = json.dumps({"err": "invalid_request", "description": "no"}).encode() if status == 400 else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _wait(pred, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_push_delivers_the_set_as_secevent_jwt_with_the_receivers_authorization(ssf):
    """RFC 8935 section 2: the SET is the body of a POST with Content-Type application/secevent+jwt;
    SSF 1.0 section 6.1.1: the "authorization_header" given at creation MUST be sent with every
    request; it is never shown back in the configuration."""
    rcv = Receiver()
    try:
        cfg = (await _create(ssf, {"delivery": {"method": DELIVERY_PUSH, "endpoint_url": rcv.url,
                                                "authorization_header": "Bearer rs-secret"}})).json()
        assert "authorization_header" not in json.dumps(cfg)
        rid, _, jti = await _active(ssf)
        await ssf.life.revoke(rid, by="alice", reason="r", channel="cli")
        await _wait(lambda: len(rcv.got) == 1)
        headers, body = rcv.got[0]
        assert headers["content-type"] == "application/secevent+jwt"
        assert headers["authorization"] == "Bearer rs-secret"
        claims = _decode_set(body.decode(), await _keys(ssf))
        assert claims["sub_id"]["jti"] == jti and claims["aud"] == RS
        await asyncio.sleep(0.3)
        assert len(rcv.got) == 1  # accepted (202): not sent again
    finally:
        rcv.close()


async def test_push_retries_with_back_off_until_the_receiver_accepts(ssf):
    """At least once: a receiver answering 503 (or unreachable) keeps its SET, which is pushed
    again after a back-off until it is accepted with 202 (RFC 8935 section 2.2)."""
    rcv = Receiver(answers=[503, 503])
    try:
        await _create(ssf, {"delivery": {"method": DELIVERY_PUSH, "endpoint_url": rcv.url}})
        rid, _, _ = await _active(ssf)
        await ssf.life.revoke(rid, by="alice", reason="r", channel="cli")
        await _wait(lambda: len(rcv.got) == 3)
        assert len({body for _, body in rcv.got}) == 1  # the same SET each time
        await asyncio.sleep(0.5)
        assert len(rcv.got) == 3
    finally:
        rcv.close()


async def test_a_set_the_receiver_refuses_with_400_is_not_retried(ssf):
    """RFC 8935 section 2.3: a 400 with an "err" code says the SET itself is bad; it is logged and
    not pushed again, and the next SET still goes."""
    rcv = Receiver(answers=[400])
    try:
        await _create(ssf, {"delivery": {"method": DELIVERY_PUSH, "endpoint_url": rcv.url}})
        for _ in range(2):
            rid, _, _ = await _active(ssf)
            await ssf.life.revoke(rid, by="alice", reason="r", channel="cli")
        await _wait(lambda: len(rcv.got) == 2)
        await asyncio.sleep(0.5)
        assert len(rcv.got) == 2 and rcv.got[0][1] != rcv.got[1][1]
    finally:
        rcv.close()


# --- at least once, by one replica ----------------------------------------------------------------


def _queued(h) -> float:
    return h.broker.metrics.ssf_sets.labels(event="session-revoked")._value.get()


async def test_two_brokers_turn_each_ended_grant_into_one_set(ssf):
    """One consumer group: with two broker processes on one Redis, each ended grant is fanned out
    by exactly one of them (the SETs are counted where they were made)."""
    other = Harness(ssf.settings, ssf.keys, ssf.clock)
    await other.start()
    try:
        sid = (await _create(ssf)).json()["stream_id"]
        for i in range(6):
            rid, _, _ = await _active(ssf)
            await (ssf if i % 2 else other).life.revoke(rid, by="alice", reason="r", channel="cli")
        assert len(await _poll_until(ssf, sid, 6)) == 6
        await asyncio.sleep(0.3)
        assert _queued(ssf) + _queued(other) == 6
    finally:
        await other.stop()


async def test_a_revocation_made_while_no_broker_serves_is_sent_when_one_starts(ssf):
    """At least once across restarts: a grant revoked from the operator CLI's broker (no
    background work) waits in <outbox>:ssf, and the next serving broker delivers its SET."""
    sid = (await _create(ssf)).json()["stream_id"]
    rid, _, jti = await _active(ssf)
    await ssf.stop()
    await ssf.start(background=False)  # as `jitgate revoke` runs: nothing consumes the queue
    await ssf.life.revoke(rid, by="alice", reason="from the CLI", channel="cli")
    await asyncio.sleep(0.3)
    assert (await _poll(ssf, sid))["sets"] == {}
    await ssf.stop()
    await ssf.start()
    sets = await _poll_until(ssf, sid)
    assert [_decode_set(t, await _keys(ssf))["sub_id"]["jti"] for t in sets.values()] == [jti]


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, value, field, expected", [
    ("JITGATE_SSF_PUSH_ALLOW_HTTP", "on", "ssf_push_allow_http", True),
    ("JITGATE_SSF_MAX_STREAMS", "7", "ssf_max_streams", 7),
    ("JITGATE_SSF_POLL_MAX_WAIT_S", "0", "ssf_poll_max_wait_s", 0),
    ("JITGATE_SSF_MAX_QUEUED", "500", "ssf_max_queued", 500),
])
def test_ssf_settings_are_read(name, value, field, expected):
    """The SSF settings reach Settings from the environment."""
    assert getattr(Settings.from_env({**BASE, name: value}), field) == expected
    assert Settings.from_env(BASE).ssf_push_allow_http is False  # https only unless allowed


@pytest.mark.parametrize("name, value", [("JITGATE_SSF_PUSH_ALLOW_HTTP", "maybe"), ("JITGATE_SSF_MAX_STREAMS", "0"),
                                         ("JITGATE_SSF_POLL_MAX_WAIT_S", "301"), ("JITGATE_SSF_MAX_QUEUED", "many")])
def test_a_bad_ssf_setting_refuses_to_start(name, value):
    """Fail closed: a word that is not on/off, or a number out of range, refuses start-up naming it."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**BASE, name: value})
