"""The resource-server side of Shared Signals (broker/client/signals.py): a TokenVerifier that
follows the broker's SSF stream refuses a token whose grant ended, before its exp."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from broker.client import InvalidToken, TokenVerifier
from tests.client.conftest import ISSUER, serve, stop

READ = dict(action="read", target="staging/payments-api", justification="check config drift", duration=120)
RS_URL = "https://payments.example.com/v1/config"


async def _token(live):
    client = live.client("reader-bot")
    return await client.collect(await client.escalate(**READ))


async def _accepted(verifier, token) -> dict:
    h = token.headers("GET", RS_URL)
    return await asyncio.to_thread(verifier.verify_request, h["Authorization"], h.get("DPoP"), "GET", RS_URL)


async def _refused_within(verifier, token, seconds: float) -> float:
    """How long until the verifier refuses ``token`` as revoked (fails past ``seconds``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        try:
            await _accepted(verifier, token)
        except InvalidToken as exc:
            assert "revoked" in exc.reason
            return loop.time() - start
        assert loop.time() - start < seconds, f"still accepted after {seconds} s"
        await asyncio.sleep(0.01)


async def test_a_subscribed_verifier_refuses_a_revoked_token_within_a_second(live):
    """Issue 16, item 6: "The client library's TokenVerifier can subscribe (poll ...) and refuses a
    revoked token before its exp" - here within a second of the revocation, over real HTTP
    (RFC 8936 long poll), while the token is still unexpired and the signature still good."""
    verifier = TokenVerifier(live.url, issuer=ISSUER, audience="staging/payments-api")
    sub = await asyncio.to_thread(verifier.subscribe, "payments-api", live.keys["payments-api"])
    try:
        token = await _token(live)
        assert (await _accepted(verifier, token))["sub"] == "reader-bot"
        await live.broker.lifecycle.revoke(token.request_id, by="alice", reason="incident", channel="cli")
        await _refused_within(verifier, token, 1.0)
        assert sub.received == 1 and sub.last_error is None
        other = await _token(live)  # other tokens are untouched
        assert (await _accepted(verifier, other))["jti"] != jwt.decode(token.access_token,
                                                                     options={"verify_signature": False})["jti"]
    finally:
        await asyncio.to_thread(sub.close, delete=True)


async def test_a_verifier_refuses_everything_when_its_stream_goes_silent(live):
    """Fail closed: with max_staleness_s, a verifier that has not heard from the broker for that
    long refuses every token (it could no longer learn of a revocation)."""
    verifier = TokenVerifier(live.url, issuer=ISSUER, audience="staging/payments-api")
    sub = await asyncio.to_thread(verifier.subscribe, "payments-api", live.keys["payments-api"], max_staleness_s=60)
    try:
        token = await _token(live)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not sub.healthy(60):
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
        await _accepted(verifier, token)
        sub.last_ok -= 120  # as if the last answer came two minutes ago, and no poll were open
        sub._polling_since = None
        sub._stop.set()
        with pytest.raises(InvalidToken, match="no word from the broker"):
            await _accepted(verifier, token)
    finally:
        await asyncio.to_thread(sub.close, delete=True)


class PushEndpoint:
    """A resource server's RFC 8935 endpoint on 127.0.0.1: checks the authorization it gave the
    broker, then answers what TokenVerifier.receive_push says."""

    def __init__(self, verifier: TokenVerifier, secret: str) -> None:
        self.answers: list[int] = []

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != secret:
                    status, payload = 401, None
                else:
                    status, payload = verifier.receive_push("payments-api", body, self.headers.get("Content-Type"))
                owner.answers.append(status)
                data = b"" if payload is None else __import__("json").dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ssf/events"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_the_push_helper_accepts_the_brokers_sets_and_refuses_others(live_settings, redis):
    """RFC 8935 section 2: receive_push answers 202 for a valid SET (and the token is refused from
    then on) and 400 with an "err" code for a wrong Content-Type or a SET signed by another key."""
    live_settings["settings"] = dataclasses.replace(live_settings["settings"], ssf_push_allow_http=True)
    live = await serve(live_settings["settings"], live_settings["keys"], live_settings["svid_key"])
    verifier = TokenVerifier(live.url, issuer=ISSUER, audience="staging/payments-api")
    endpoint = PushEndpoint(verifier, "Bearer push-secret")
    try:
        from broker.jose import make_assertion  # noqa: PLC0415

        auth = {"Authorization": "Bearer " + make_assertion(live.keys["payments-api"], agent_id="payments-api",
                                                            audience=ISSUER)}
        async with httpx.AsyncClient(base_url=live.url) as http:
            r = await http.post("/ssf/stream", json={"delivery": {
                "method": "urn:ietf:rfc:8935", "endpoint_url": endpoint.url,
                "authorization_header": "Bearer push-secret"}}, headers=auth)
            assert r.status_code == 201
        token = await _token(live)
        await _accepted(verifier, token)
        await live.broker.lifecycle.revoke(token.request_id, by="alice", reason="incident", channel="cli")
        await _refused_within(verifier, token, 1.0)
        assert endpoint.answers == [202]
        status, err = await asyncio.to_thread(verifier.receive_push, "payments-api", b"x.y.z", "application/json")
        assert status == 400 and err["err"] == "invalid_request"
        forged = jwt.encode({"iss": ISSUER, "aud": "payments-api", "jti": "j", "iat": 1, "events": {}},
                            ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                            headers={"typ": "secevent+jwt", "kid": "not-the-brokers"})
        status, err = await asyncio.to_thread(verifier.receive_push, "payments-api", forged.encode(),
                                              "application/secevent+jwt")
        assert status == 400 and err["err"] == "invalid_key"
    finally:
        endpoint.close()
        await stop(live)
