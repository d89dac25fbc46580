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
import asyncio
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from broker.client import Client, InvalidToken, TokenVerifier

TARGET = "staging/payments-api"  # the token's aud: this server's name at the broker


def make_server(broker_url: str, port: int) -> ThreadingHTTPServer:
    # The issuer is read from the broker's metadata so it matches the tokens' iss exactly.
    issuer = httpx.get(f"{broker_url}/.well-known/oauth-authorization-server", timeout=5).json()["issuer"]
    verifier = TokenVerifier(broker_url, issuer=issuer, audience=TARGET, require_dpop=True)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = f"http://{self.headers.get('Host', f'127.0.0.1:{port}')}{self.path}"
            try:
                claims = verifier.verify_request(self.headers.get("Authorization"), self.headers.get("DPoP"), "GET", url)
            except InvalidToken as e:
                self._answer(401, {"error": "invalid_token", "error_description": e.reason},
                             {"WWW-Authenticate": f'DPoP error="invalid_token", error_description="{e.reason}"'})
                return
            detail = claims["authorization_details"][0]
            self._answer(200, {"config": {"pool_size": 20}, "for": claims["sub"], "action": detail["action"],
                               "approved_by": claims["approval"]["approvers"] or "policy"})

        def _answer(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # quiet
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


async def demo(broker_url: str, port: int, key: str) -> int:
    url = f"http://127.0.0.1:{port}/config"
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("JITGATE_URL", "http://127.0.0.1:8080"), help="the broker")
    p.add_argument("--port", type=int, default=8091)
    p.add_argument("--key", default=".jitgate/demo-agent.pem", help="the demo agent's key (demo mode)")
    p.add_argument("--serve", action="store_true", help="only serve, until Ctrl-C")
    args = p.parse_args()
    server = make_server(args.url, args.port)
    if args.serve:
        print(f"serving on http://127.0.0.1:{args.port}/config (tokens for {TARGET})")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            return 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return asyncio.run(demo(args.url, args.port, args.key))
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
