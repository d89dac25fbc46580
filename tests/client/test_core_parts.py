"""The pure pieces under the client and the broker: DPoP URL matching, scope narrowing,
and the proposal's delegation field."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.errors import InvalidRequest
from broker.jose import JoseError, make_dpop_proof, normalize_htu, uncovered, verify_dpop_proof
from broker.model import MAX_DELEGATION_LINKS, Proposal

BODY = {"action": "read", "target": "staging/x", "justification": "j", "duration_s": 60}


@pytest.mark.parametrize("a, b", [
    ("HTTPS://Broker.Example:443/v1/x?y=1#f", "https://broker.example/v1/x"),
    ("http://127.0.0.1:80/", "http://127.0.0.1"),
    ("http://[::1]:8080/p", "http://[::1]:8080/p"),
])
def test_htu_comparison_ignores_case_default_port_query_and_fragment(a, b):
    """RFC 9449 section 4.3: htu is compared without query and fragment, after syntax-based normalisation."""
    assert normalize_htu(a) == normalize_htu(b)


def test_htu_keeps_path_port_and_scheme_apart():
    """Another path, port or scheme is another URL."""
    base = normalize_htu("https://b.example/v1/x")
    assert base != normalize_htu("https://b.example/v1/y")
    assert base != normalize_htu("https://b.example:8443/v1/x")
    assert base != normalize_htu("http://b.example/v1/x")
    with pytest.raises(JoseError):
        normalize_htu("ftp://b.example/x")


def test_dpop_proof_with_ed25519_and_private_jwk_refused():
    """Ed25519 proofs verify; a proof whose header jwk carries private material is refused."""
    key = ed25519.Ed25519PrivateKey.generate()
    now = time.time()
    proof = make_dpop_proof(key, method="get", url="https://rs.example/a", now=now)
    assert verify_dpop_proof(proof, method="GET", url="https://rs.example/a", now=now).jkt
    import jwt  # noqa: PLC0415

    from broker.jose import public_jwk  # noqa: PLC0415

    jwk = {**public_jwk(key), "d": "AAAA"}
    forged = jwt.encode({"jti": "j", "htm": "GET", "htu": "https://rs.example/a", "iat": int(now)}, key,
                        algorithm="EdDSA", headers={"typ": "dpop+jwt", "jwk": jwk})
    with pytest.raises(JoseError, match="public key"):
        verify_dpop_proof(forged, method="GET", url="https://rs.example/a", now=now)


@pytest.mark.parametrize("outer, inner, bad", [
    (["staging/*"], ["staging/a", "staging/b*"], None),
    (["*"], ["anything", "x*"], None),
    (["staging/a"], ["staging/*"], "staging/*"),
    (["db.*"], ["db.export", "deploy"], "deploy"),
    (["prod/a"], ["prod/ab"], "prod/ab"),
])
def test_scopes_only_narrow(outer, inner, bad):
    """A prefix covers what starts with it; an exact name covers only itself, never a prefix."""
    assert uncovered(outer, inner) == bad


def test_proposal_takes_a_bounded_list_of_compact_jws_links():
    """delegation holds compact JWS strings, at most MAX_DELEGATION_LINKS; anything else is a 400 naming it."""
    link = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJhIn0.c2ln"
    assert Proposal.parse({**BODY, "delegation": [link]}).delegation == (link,)
    with pytest.raises(InvalidRequest, match=r"delegation\[1\] must be a signed delegation link"):
        Proposal.parse({**BODY, "delegation": [link, {"iss": "a"}]})
    with pytest.raises(InvalidRequest, match="at most"):
        Proposal.parse({**BODY, "delegation": [link] * (MAX_DELEGATION_LINKS + 1)})


def _signed(private_key, alg: str, claims: dict | None = None) -> str:
    import jwt  # noqa: PLC0415

    return jwt.encode(claims or {"sub": "a", "n": 1}, private_key, algorithm=alg)


@pytest.mark.parametrize("kind, alg", [("Ed25519", "EdDSA"), ("P-256", "ES256")])
def test_jws_signature_verifies_only_the_signed_segments_with_the_right_key(kind, alg):
    """RFC 7515 section 5.2: the signature covers exactly the first two segments, under the key's one algorithm."""
    from broker.jose import generate_key, load_private_key, parse_public_jwk, verify_jws_signature  # noqa: PLC0415

    pem, jwk = generate_key(kind)
    private_key, (public, _kid, key_alg) = load_private_key(pem), parse_public_jwk(jwk)
    assert key_alg == alg
    token = _signed(private_key, alg)
    assert verify_jws_signature(public, alg, token)
    head, body, sig = token.split(".")
    other = _signed(private_key, alg, {"sub": "b", "n": 1}).split(".")[1]
    assert not verify_jws_signature(public, alg, f"{head}.{other}.{sig}")  # payload swapped
    assert not verify_jws_signature(public, alg, f"{head}.{body}.")  # no signature
    assert not verify_jws_signature(public, alg, f"{head}.{body}.{sig[:-1]}")  # not whole base64url
    assert not verify_jws_signature(public, "ES256" if alg == "EdDSA" else "EdDSA", token)  # alg of another key type
    stranger = parse_public_jwk(generate_key(kind)[1])[0]
    assert not verify_jws_signature(stranger, alg, token)


def test_es256_signature_must_be_raw_r_and_s():
    """RFC 7518 section 3.4: an ES256 signature is the 64-byte R||S, so a DER-encoded one is refused."""
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    from broker.jose import b64url, verify_jws_signature  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    token = _signed(key, "ES256")
    head, body, _ = token.split(".")
    der = key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    assert verify_jws_signature(key.public_key(), "ES256", token)
    assert not verify_jws_signature(key.public_key(), "ES256", f"{head}.{body}.{b64url(der)}")
