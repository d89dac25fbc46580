"""A resource server that verifies jitgate tokens offline: the broker's JWKS (fetched
once, again for an unknown key id) and the DPoP proof of every call. No call to the
broker per request - so a grant completed or revoked a moment ago still passes until the
token's exp (minutes); use introspection (resource_server_introspect.py) when that matters.

With `make run` going, from the repository root:

    .venv/bin/python examples/resource_server_offline.py          # demo: serve, then call it as demo-agent
    .venv/bin/python examples/resource_server_offline.py --serve  # only serve on 127.0.0.1:8091
"""

from __future__ import annotations

import argparse
import sys
from http.server import ThreadingHTTPServer

import httpx
from resource_server_common import TARGET, JsonHandler, broker_issuer, main

from broker.client import Client, InvalidToken, TokenVerifier


def make_server(args: argparse.Namespace) -> ThreadingHTTPServer:
    verifier = TokenVerifier(args.url, issuer=broker_issuer(args.url), audience=TARGET, require_dpop=True)

    class Handler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server calls it by this name
            # The URL as the client addressed it: the DPoP proof's htu must match it.
            url = f"http://{self.headers.get('Host', f'127.0.0.1:{args.port}')}{self.path}"
            try:
                claims = verifier.verify_request(self.headers.get("Authorization"), self.headers.get("DPoP"), "GET", url)
            except InvalidToken as e:
                self.answer(401, {"error": e.error, "error_description": e.reason}, e.challenge())
                return
            detail = claims["authorization_details"][0]
            self.answer(200, {"config": {"pool_size": 20}, "for": claims["sub"], "action": detail["action"],
                              "approved_by": claims["approval"]["approvers"] or "policy"})

    return ThreadingHTTPServer(("127.0.0.1", args.port), Handler)


async def demo(broker_url: str, url: str, key: str) -> int:
    async with Client(broker_url, "demo-agent", key) as client, httpx.AsyncClient() as http:
        async with client.grant(action="read", target=TARGET, justification="read the pool size", duration=120) as token:
            headers = token.headers("GET", url)
            r = await http.get(url, headers=headers)
            print("with the token and a fresh proof:", r.status_code, r.json())
            r = await http.get(url, headers=headers)
            print("the same proof again (replay):  ", r.status_code, r.json()["error_description"])
            r = await http.get(url, headers={"Authorization": f"DPoP {token.access_token}"})
            print("the token without a proof:       ", r.status_code, r.json()["error_description"])
            r = await http.get(url, headers={"Authorization": f"Bearer {token.access_token}"})
            print("presented as a Bearer token:     ", r.status_code, r.json()["error_description"])
    return 0


if __name__ == "__main__":
    sys.exit(main(__doc__, default_port=8091, make_server=make_server, demo=demo))
