"""A resource server that asks the broker about every token (RFC 7662 introspection),
authenticated as the registered resource server `example-payments-api`. It learns at
once when a grant has been completed or revoked - the offline verifier cannot.

With `make run` going, from the repository root:

    .venv/bin/python examples/setup_agents.py                      # once: registers the resource server
    .venv/bin/python examples/resource_server_introspect.py          # demo
    .venv/bin/python examples/resource_server_introspect.py --serve  # only serve on 127.0.0.1:8092
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

from broker.client import Client, Introspector, parse_authorization

TARGET = "staging/payments-api"


def make_server(broker_url: str, port: int, key: str) -> ThreadingHTTPServer:
    issuer = httpx.get(f"{broker_url}/.well-known/oauth-authorization-server", timeout=5).json()["issuer"]
    introspector = Introspector(broker_url, "example-payments-api", key, audience=issuer)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                _scheme, token = parse_authorization(self.headers.get("Authorization"))
                info = introspector.introspect(token)
            except Exception as e:  # noqa: BLE001 - an example: every failure is a 401
                info = {"active": False, "why": str(e)}
            if not info.get("active") or info.get("aud") != TARGET:
                self._answer(401, {"error": "invalid_token", "active": info.get("active", False)})
                return
            # Introspection says the grant is live; a DPoP-bound token (token_type DPoP) should
            # still have its proof checked as the offline example does, to stop a stolen token.
            self._answer(200, {"config": {"pool_size": 20}, "for": info["sub"], "token_type": info["token_type"]})

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


async def demo(broker_url: str, port: int, key: str) -> int:
    url = f"http://127.0.0.1:{port}/config"
    async with Client(broker_url, "demo-agent", key) as client, httpx.AsyncClient() as http:
        async with client.grant(action="read", target=TARGET, justification="read the pool size", duration=120) as token:
            r = await http.get(url, headers=token.headers("GET", url))
            print("while the grant is active: ", r.status_code, r.json())
        # Leaving the block reported completion: the broker now calls the token inactive.
        r = await http.get(url, headers=token.headers("GET", url))
        print("after the agent completed: ", r.status_code, r.json())
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("JITGATE_URL", "http://127.0.0.1:8080"), help="the broker")
    p.add_argument("--port", type=int, default=8092)
    p.add_argument("--server-key", default=".jitgate/examples/example-payments-api.pem")
    p.add_argument("--key", default=".jitgate/demo-agent.pem", help="the demo agent's key (demo mode)")
    p.add_argument("--serve", action="store_true", help="only serve, until Ctrl-C")
    args = p.parse_args()
    server = make_server(args.url, args.port, args.server_key)
    if args.serve:
        print(f"serving on http://127.0.0.1:{args.port}/config (introspecting at {args.url})")
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
