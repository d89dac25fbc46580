"""DPoP (RFC 9449): the broker binds tokens to a proven key; the resource-server helper
refuses a token whose proof does not match the request, the token or the key."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from broker.client import ANY_AUDIENCE, InvalidToken, ReplayCache, TokenVerifier, parse_authorization, verify
from broker.jose import jwk_thumbprint, make_assertion, make_dpop_proof, public_jwk
from tests.client.conftest import ISSUER, serve, stop

READ = dict(action="read", target="staging/payments-api", justification="check config drift", duration=120)
RS_URL = "https://payments.example.com/v1/config"


def auth(live, agent_id: str = "reader-bot") -> dict:
    return {"Authorization": "Bearer " + make_assertion(live.keys[agent_id], agent_id=agent_id, audience=ISSUER)}


async def approved(live) -> str:
    return (await live.client("reader-bot").escalate(**READ)).request_id


async def collect_raw(live, rid: str, proof: str | None) -> httpx.Response:
    headers = auth(live)
    if proof is not None:
        headers["DPoP"] = proof
    async with httpx.AsyncClient(base_url=live.url) as http:
        return await http.post(f"/v1/escalations/{rid}/token", headers=headers)


async def test_token_endpoint_binds_the_token_to_the_proof_key(live):
    """RFC 9449 section 5: with a valid proof the token carries cnf.jkt of the proof's key and token_type is DPoP."""
    rid = await approved(live)
    key = live.keys["reader-bot"]
    r = await collect_raw(live, rid, make_dpop_proof(key, method="POST", url=f"{ISSUER}/v1/escalations/{rid}/token"))
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP"
    claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert claims["cnf"] == {"jkt": jwk_thumbprint(public_jwk(key))}


@pytest.mark.parametrize("change, needle", [
    (dict(method="GET"), "htm"),
    (dict(url=f"{ISSUER}/v1/escalations/OTHERID12345/token"), "htu"),
    (dict(url="https://evil.example/v1/escalations/{rid}/token"), "htu"),
    (dict(now=-600), "too old"),  # seconds from the time the test runs
    (dict(now=+600), "future"),
])
async def test_token_endpoint_refuses_a_proof_for_another_request(live, change, needle):
    """RFC 9449 section 4.3: htm and htu must match this request and iat must be recent; nothing is minted otherwise."""
    rid = await approved(live)
    args = dict(method="POST", url=f"{ISSUER}/v1/escalations/{rid}/token")
    args.update({k: v.format(rid=rid) if isinstance(v, str) else v for k, v in change.items()})
    if "now" in args:
        args["now"] = time.time() + args["now"]
    r = await collect_raw(live, rid, make_dpop_proof(live.keys["reader-bot"], **args))
    assert r.status_code == 401 and r.json()["type"].endswith("/invalid-dpop-proof") and needle in r.json()["detail"]
    assert (await live.broker.lifecycle.get(rid)).status == "approved"


async def test_token_endpoint_refuses_a_replayed_proof(live):
    """RFC 9449 section 11.1: a proof's jti is accepted once; the replay is refused."""
    rid = await approved(live)
    proof = make_dpop_proof(live.keys["reader-bot"], method="POST", url=f"{ISSUER}/v1/escalations/{rid}/token")
    other = (await live.client("reader-bot").escalate(**READ)).request_id
    assert (await collect_raw(live, rid, proof)).status_code == 200
    # The same proof again (another request of the same agent at the same URL shape would differ in htu,
    # so replay it at the same endpoint after the first one succeeded).
    r = await collect_raw(live, rid, proof)
    assert r.status_code == 401 and "replayed" in r.json()["detail"]
    assert (await live.broker.lifecycle.get(other)).status == "approved"


async def test_token_endpoint_refuses_two_dpop_headers(live):
    """RFC 9449 section 4.3: the request is refused unless "there is not more than one DPoP HTTP request
    header field" (issue 14.5: two headers were accepted and the token bound to the first key)."""
    rid = await approved(live)
    url = f"{ISSUER}/v1/escalations/{rid}/token"
    mine = make_dpop_proof(live.keys["reader-bot"], method="POST", url=url)
    other = make_dpop_proof(ec.generate_private_key(ec.SECP256R1()), method="POST", url=url)
    headers = [*auth(live).items(), ("DPoP", mine), ("DPoP", other)]
    async with httpx.AsyncClient(base_url=live.url) as http:
        r = await http.post(f"/v1/escalations/{rid}/token", headers=headers)
    assert r.status_code == 401 and r.json()["type"].endswith("/invalid-dpop-proof")
    assert "more than one DPoP header" in r.json()["detail"]
    assert (await live.broker.lifecycle.get(rid)).status == "approved"  # nothing minted


async def test_required_dpop_refuses_a_bearer_collection(live_settings, redis):
    """With JITGATE_REQUIRE_DPOP the token endpoint mints nothing without a proof."""
    settings = dataclasses.replace(live_settings["settings"], require_dpop=True)
    live = await serve(settings, live_settings["keys"], live_settings["svid_key"])
    try:
        rid = await approved(live)
        r = await collect_raw(live, rid, None)
        assert r.status_code == 401 and "DPoP proof" in r.json()["detail"]
        assert (await live.broker.lifecycle.get(rid)).status == "approved"
    finally:
        await stop(live)


# ---------------------------------------------------------------------- resource server side
@pytest.fixture
async def bound(live):
    """A DPoP-bound token from the live broker, the broker's JWKS, and the agent key."""
    client = live.client("reader-bot")
    token = await client.collect(await client.escalate(**READ))
    async with httpx.AsyncClient(base_url=live.url) as http:
        jwks = (await http.get("/.well-known/jwks.json")).json()
    return token, jwks, live.keys["reader-bot"]


def check(token, jwks, proof, **kw):
    args = dict(dpop_proof=proof, method="GET", url=RS_URL, issuer=ISSUER, audience="staging/payments-api",
                replay_cache=ReplayCache())
    args.update(kw)
    return verify(token.access_token, jwks, **args)


async def test_verify_accepts_the_proof_the_client_makes(bound):
    """token.headers() yields Authorization: DPoP and a proof that verify() accepts, returning the claims."""
    token, jwks, _ = bound
    headers = token.headers("GET", RS_URL + "?page=2")  # query is not part of htu
    scheme, raw = parse_authorization(headers["Authorization"])
    claims = verify(raw, jwks, dpop_proof=headers["DPoP"], method="GET", url=RS_URL, scheme=scheme, issuer=ISSUER,
                    audience="staging/payments-api", replay_cache=ReplayCache())
    assert scheme == "dpop" and claims["sub"] == "reader-bot" and claims["authorization_details"][0]["action"] == "read"


@pytest.mark.parametrize("proof_args, verify_args, needle", [
    (dict(method="POST"), {}, "htm"),
    (dict(url="https://payments.example.com/v1/other"), {}, "htu"),
    (dict(url="https://evil.example.com/v1/config"), {}, "htu"),
    (dict(now=time.time() - 300), {}, "too old"),
    (dict(access_token="another.token.value"), {}, "ath"),
    (dict(access_token=None), {}, "ath"),
])
async def test_verify_refuses_a_proof_for_another_request_or_token(bound, proof_args, verify_args, needle):
    """RFC 9449 section 7.1: htm, htu, a recent iat and ath (the token's hash) must all match."""
    token, jwks, key = bound
    args = dict(method="GET", url=RS_URL, access_token=token.access_token)
    args.update(proof_args)
    with pytest.raises(InvalidToken, match=needle):
        check(token, jwks, make_dpop_proof(key, **args), **verify_args)


async def test_verify_refuses_a_replayed_proof(bound):
    """RFC 9449 section 11.1: a resource server accepts each proof jti once."""
    token, jwks, key = bound
    proof = make_dpop_proof(key, method="GET", url=RS_URL, access_token=token.access_token)
    cache = ReplayCache()
    check(token, jwks, proof, replay_cache=cache)
    with pytest.raises(InvalidToken, match="replayed"):
        check(token, jwks, proof, replay_cache=cache)


async def test_verify_refuses_a_proof_by_another_key(bound):
    """RFC 9449 section 6.1: the proof key's thumbprint must equal the token's cnf.jkt, so a stolen token is useless."""
    token, jwks, _ = bound
    thief = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidToken, match="different key"):
        check(token, jwks, make_dpop_proof(thief, method="GET", url=RS_URL, access_token=token.access_token))


async def test_verify_refuses_a_bound_token_without_proof(bound):
    """RFC 9449 section 7.1: a DPoP-bound token presented without a proof (or as Bearer) is refused."""
    token, jwks, key = bound
    with pytest.raises(InvalidToken, match="proof is required"):
        check(token, jwks, None)
    proof = make_dpop_proof(key, method="GET", url=RS_URL, access_token=token.access_token)
    with pytest.raises(InvalidToken, match="DPoP scheme"):
        check(token, jwks, proof, scheme="bearer")


async def test_verify_refuses_a_tampered_token_and_a_foreign_audience(bound):
    """The token's signature, audience and issuer are checked before the proof."""
    token, jwks, key = bound
    head, body, sig = token.access_token.split(".")
    tampered = type(token)({"access_token": f"{head}.{body}x.{sig}", "token_type": "DPoP"}, token.request_id)
    with pytest.raises(InvalidToken):
        check(tampered, jwks, None)
    proof = make_dpop_proof(key, method="GET", url=RS_URL, access_token=token.access_token)
    with pytest.raises(InvalidToken, match="another audience"):
        check(token, jwks, proof, audience="prod/orders-db")
    with pytest.raises(InvalidToken, match="another issuer"):
        check(token, jwks, proof, issuer="https://other.example")


async def test_verify_require_dpop_refuses_a_bearer_token(live):
    """A resource server that requires DPoP refuses an unbound (Bearer) token."""
    client = live.client("reader-bot", dpop=False)
    token = await client.collect(await client.escalate(**READ))
    assert token.token_type == "Bearer" and token.headers("GET", RS_URL) == {"Authorization": f"Bearer {token.access_token}"}
    async with httpx.AsyncClient(base_url=live.url) as http:
        jwks = (await http.get("/.well-known/jwks.json")).json()
    assert verify(token.access_token, jwks, audience="staging/payments-api")["sub"] == "reader-bot"
    with pytest.raises(InvalidToken, match="not DPoP-bound"):
        verify(token.access_token, jwks, audience="staging/payments-api", require_dpop=True)


async def test_token_verifier_fetches_the_jwks_over_http(live, bound):
    """TokenVerifier reads the broker's JWKS itself and checks the incoming request's headers."""
    token, _, _ = bound
    verifier = TokenVerifier(live.url, issuer=ISSUER, audience="staging/payments-api", require_dpop=True)
    headers = token.headers("GET", RS_URL)
    claims = await asyncio.to_thread(verifier.verify_request, headers["Authorization"], headers["DPoP"], "GET", RS_URL)
    assert claims["cnf"]["jkt"]
    with pytest.raises(InvalidToken, match="replayed"):
        await asyncio.to_thread(verifier.verify_request, headers["Authorization"], headers["DPoP"], "GET", RS_URL)


async def test_introspector_checks_activity_audience_and_the_dpop_proof(live, bound):
    """A resource server that introspects still enforces the DPoP binding (RFC 9449 section 7.1) and its own
    audience, and learns at once that a completed grant's token is no longer active (RFC 7662 section 2.2)."""
    from broker.client import Introspector  # noqa: PLC0415

    token, _, key = bound
    rs = Introspector(live.url, "payments-api", live.keys["payments-api"], audience=ISSUER,
                      target="staging/payments-api", require_dpop=True)
    headers = token.headers("GET", RS_URL)
    claims = await rs.averify_request(headers["Authorization"], headers["DPoP"], "GET", RS_URL)
    assert claims["active"] and claims["sub"] == "reader-bot"
    with pytest.raises(InvalidToken, match="replayed"):
        await rs.averify_request(headers["Authorization"], headers["DPoP"], "GET", RS_URL)
    with pytest.raises(InvalidToken, match="proof is required"):
        await rs.averify_request(f"DPoP {token.access_token}", None, "GET", RS_URL)
    thief = make_dpop_proof(ec.generate_private_key(ec.SECP256R1()), method="GET", url=RS_URL,
                            access_token=token.access_token)
    with pytest.raises(InvalidToken, match="different key"):
        await rs.averify_request(f"DPoP {token.access_token}", thief, "GET", RS_URL)
    other = Introspector(live.url, "payments-api", live.keys["payments-api"], audience=ISSUER, target="prod/orders-db")
    fresh = token.headers("GET", RS_URL)
    with pytest.raises(InvalidToken, match="another audience"):
        await asyncio.to_thread(other.verify_request, fresh["Authorization"], fresh["DPoP"], "GET", RS_URL)
    await live.client("reader-bot").complete(token.request_id)
    fresh = token.headers("GET", RS_URL)
    with pytest.raises(InvalidToken, match="not active"):
        await rs.averify_request(fresh["Authorization"], fresh["DPoP"], "GET", RS_URL)


class NonceServer:
    """A resource server on 127.0.0.1 that verifies with verify() and demands its current DPoP nonce."""

    def __init__(self, jwks: dict, nonce: str) -> None:
        import threading  # noqa: PLC0415
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

        self.nonce, self.seen, cache = nonce, [], ReplayCache()
        self.honest = True  # False: hands out self.nonce but accepts none
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = f"http://{self.headers['Host']}{self.path}"
                proof = self.headers.get("DPoP")
                outer.seen.append((jwt.decode(proof, options={"verify_signature": False}).get("nonce"), body))
                try:
                    scheme, token = parse_authorization(self.headers.get("Authorization"))
                    claims = verify(token, jwks, audience=ANY_AUDIENCE, dpop_proof=proof, method="POST", url=url, scheme=scheme,
                                    replay_cache=cache, nonce=outer.nonce if outer.honest else "never-handed-out")
                    status, headers, data = 200, {"DPoP-Nonce": outer.nonce}, claims["sub"].encode()
                except InvalidToken as e:
                    status, headers, data = 401, e.challenge(nonce=outer.nonce), e.error.encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/restart?now=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_token_auth_answers_a_resource_servers_nonce_challenge(bound):
    """RFC 9449 section 9: a resource server may demand a nonce it provides (use_dpop_nonce + DPoP-Nonce); the
    client's httpx auth retries once with it, body included, keeps it for the next calls, and follows a new one."""
    token, jwks, _ = bound
    rs = NonceServer(jwks, "n1")
    try:
        async with httpx.AsyncClient(auth=token.auth()) as http:
            r = await http.post(rs.url, content=b"restart payments-api")
            assert r.status_code == 200 and r.text == "reader-bot"
            assert rs.seen == [(None, b"restart payments-api"), ("n1", b"restart payments-api")]
            assert (await http.post(rs.url, content=b"again")).status_code == 200 and rs.seen[-1] == ("n1", b"again")
            assert len(rs.seen) == 3
            rs.nonce = "n2"  # the server rotates its nonce
            assert (await http.post(rs.url, content=b"x")).status_code == 200
            assert [n for n, _ in rs.seen[3:]] == ["n1", "n2"]
    finally:
        rs.close()


async def test_token_auth_retries_a_nonce_only_once(bound):
    """A server that refuses the very nonce it hands out gets one retry, not a loop; the 401 reaches the caller."""
    token, jwks, _ = bound
    rs = NonceServer(jwks, "n1")
    rs.honest = False
    try:
        with httpx.Client(auth=token.auth()) as http:  # the sync httpx client takes the same auth
            r = await asyncio.to_thread(http.post, rs.url, content=b"x")
        assert r.status_code == 401 and r.text == "use_dpop_nonce" and [n for n, _ in rs.seen] == [None, "n1"]
        assert 'error="use_dpop_nonce"' in r.headers["www-authenticate"]
    finally:
        rs.close()


def test_verify_requires_the_servers_nonce_when_given():
    """RFC 9449 section 9: with a nonce demanded, a proof without it (or with a stale one) is use_dpop_nonce."""
    key = ec.generate_private_key(ec.SECP256R1())
    claims = {"cnf": {"jkt": jwk_thumbprint(public_jwk(key))}}
    args = dict(method="GET", url=RS_URL, replay_cache=ReplayCache())
    from broker.client import check_binding  # noqa: PLC0415

    for nonce in (None, "stale"):
        proof = make_dpop_proof(key, method="GET", url=RS_URL, access_token="t.o.k", nonce=nonce)
        with pytest.raises(InvalidToken) as caught:
            check_binding(claims, "t.o.k", dpop_proof=proof, nonce={"n1", "n2"}, **args)
        assert caught.value.error == "use_dpop_nonce"
    proof = make_dpop_proof(key, method="GET", url=RS_URL, access_token="t.o.k", nonce="n2")
    assert check_binding(claims, "t.o.k", dpop_proof=proof, nonce={"n1", "n2"}, **args) is claims


async def test_verify_requires_an_audience_or_an_explicit_opt_out(bound):
    """Issue 14.10: "Require an audience; an explicit opt-out must be spelled out in the call" - verify(),
    TokenVerifier and Introspector refuse to run without one (a setup error, TypeError), and ANY_AUDIENCE is
    the only way to accept a token for every target."""
    from broker.client import Introspector  # noqa: PLC0415

    token, jwks, _ = bound
    for missing in ({}, {"audience": None}, {"audience": ""}):
        with pytest.raises(TypeError, match="audience"):
            verify(token.access_token, jwks, require_dpop=False, **missing)
        with pytest.raises(TypeError, match="audience"):
            TokenVerifier("http://broker.example", **missing)
    with pytest.raises(TypeError, match="target"):
        Introspector("http://broker.example", "payments-api", ec.generate_private_key(ec.SECP256R1()))
    headers = token.headers("GET", RS_URL)
    with pytest.raises(InvalidToken, match="another audience"):
        check(token, jwks, headers["DPoP"], audience="prod/orders-db")
    claims = check(token, jwks, headers["DPoP"], audience=ANY_AUDIENCE)
    assert claims["aud"] == "staging/payments-api"


# ---------------------------------------------------------------------- DPoP required covers every token (issue 24.1)
async def test_required_dpop_binds_break_glass_tokens_and_resource_servers_know_it(live_settings, redis):
    """Issue 24.1: with JITGATE_REQUIRE_DPOP "every token the broker issues is bound": a break-glass token for
    oneself without a key is refused (nothing granted), with one it carries cnf.jkt; the metadata advertises
    dpop_bound_access_tokens_required; and TokenVerifier/Introspector, with no flag, refuse an unbound token
    (RFC 9449 section 7.1: a resource server that requires DPoP rejects Bearer)."""
    from broker.breakglass import DpopRequired  # noqa: PLC0415
    from broker.client import Introspector  # noqa: PLC0415
    from broker.tokens import build_access_token_claims  # noqa: PLC0415
    from tests.support.harness import FIXTURES  # noqa: PLC0415

    settings = dataclasses.replace(live_settings["settings"], require_dpop=True, policy_dir=FIXTURES / "policies")
    live = await serve(settings, live_settings["keys"], live_settings["svid_key"])
    try:
        async with httpx.AsyncClient(base_url=live.url) as http:
            metadata = (await http.get("/.well-known/oauth-authorization-server")).json()
        assert metadata["dpop_bound_access_tokens_required"] is True
        bg, alice = live.broker.breakglass, live.approver("alice")
        grant = dict(subject="me", action="restart", target="prod/payments-api", duration_s=300, reason="outage",
                     channel="cli")
        with pytest.raises(DpopRequired, match="--dpop-key"):
            await bg.grant(alice, **grant)
        assert await bg.pending_reviews() == []
        key = ec.generate_private_key(ec.SECP256R1())
        granted = await bg.grant(alice, **grant, dpop_jkt=jwk_thumbprint(public_jwk(key)))
        assert granted.token.token_type == "DPoP"
        token = granted.token.access_token
        assert jwt.decode(token, options={"verify_signature": False})["cnf"] == {"jkt": jwk_thumbprint(public_jwk(key))}

        verifier = TokenVerifier(live.url, issuer=ISSUER, audience="prod/payments-api")  # no require_dpop
        proof = make_dpop_proof(key, method="GET", url=RS_URL, access_token=token)
        claims = await asyncio.to_thread(verifier.verify_request, f"DPoP {token}", proof, "GET", RS_URL)
        assert claims["approval"]["break_glass"] is True and verifier.broker_requires_dpop is True
        # A Bearer token of this broker (as one minted before the setting was turned on would be).
        now = int(time.time())
        unbound = live.broker.keyring.sign(build_access_token_claims(
            issuer=ISSUER, agent_id="reader-bot", audience="prod/payments-api", issued_at=now, expires_at=now + 60,
            jti="old-grant", action="restart", target="prod/payments-api", tool=None, dataset=None,
            request_id="REQOLD123456", approvers=["bob"], policies=[], proposal_sha256="0" * 64))
        with pytest.raises(InvalidToken, match="not DPoP-bound"):
            await asyncio.to_thread(verifier.verify_request, f"Bearer {unbound}", None, "GET", RS_URL)

        rs = Introspector(live.url, "payments-api", live.keys["payments-api"], audience=ISSUER,
                          target="prod/payments-api")  # no require_dpop
        fresh = make_dpop_proof(key, method="GET", url=RS_URL, access_token=token)
        assert (await rs.averify_request(f"DPoP {token}", fresh, "GET", RS_URL))["active"] is True
        assert rs.broker_requires_dpop is True
    finally:
        await stop(live)
