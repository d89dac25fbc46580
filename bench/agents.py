"""Bench agents and a resource server, registered in an agents file, and assertions
minted ahead of a measured phase (so the load generator spends its core on HTTP only)."""

from __future__ import annotations

import secrets
from pathlib import Path

import yaml

from broker.identity import add_agent, generate_key, load_private_key, make_assertion

from .procs import ISSUER

RESOURCE_SERVER = "bench-rs"
# The key `jitgate agent keygen` makes unless asked for Ed25519. It is also the cheaper one to
# verify with this OpenSSL: P-256 ~100 µs, Ed25519 ~170 µs per signature on the bench machine.
KEY_KIND = "P-256"


class Agents:
    """``count`` agents of team platform (owner dave, so sre members may approve them)
    with :data:`KEY_KIND` keys, and one resource server with the same kind of key."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.keys: dict[str, object] = {}
        self.ids: list[str] = []
        for i in range(count):
            agent_id = f"bench-{i}"
            pem, jwk = generate_key(KEY_KIND)
            self.keys[agent_id] = load_private_key(pem)
            add_agent(path, id=agent_id, owner="dave", team="platform", public_jwk=jwk)
            self.ids.append(agent_id)
        pem, jwk = generate_key(KEY_KIND)
        self.keys[RESOURCE_SERVER] = load_private_key(pem)
        doc = yaml.safe_load(path.read_text())
        doc["resource_servers"] = [{"id": RESOURCE_SERVER, "public_key": jwk, "audiences": ["staging/payments-api"]}]
        path.write_text(yaml.safe_dump(doc))

    def assertion(self, principal: str) -> str:
        """A fresh assertion (5 minutes, the longest the broker accepts)."""
        return make_assertion(self.keys[principal], agent_id=principal, audience=ISSUER, lifetime_s=300,
                              jti=secrets.token_urlsafe(12))

    def bearer(self, principal: str) -> str:
        return "Bearer " + self.assertion(principal)

    def mint(self, principal: str, n: int) -> list[str]:
        """``n`` bearer headers for ``principal``, minted now."""
        return [self.bearer(principal) for _ in range(n)]
