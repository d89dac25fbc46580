"""What the two example resource servers share: a JSON handler, the broker's issuer, and
the command line (serve alone with --serve, or serve and run the demo agent against it).

Not an example of its own; resource_server_offline.py and resource_server_introspect.py
differ only in how they check a token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

TARGET = "staging/payments-api"  # the tokens' aud: this server's name at the broker


def broker_issuer(broker_url: str) -> str:
    """The broker's issuer as its metadata states it, so it matches the tokens' iss exactly."""
    return httpx.get(f"{broker_url}/.well-known/oauth-authorization-server", timeout=5).json()["issuer"]


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet handler that answers JSON."""

    def answer(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def main(
    doc: str,
    *,
    default_port: int,
    make_server: Callable[[argparse.Namespace], ThreadingHTTPServer],
    demo: Callable[[str, str, str], Awaitable[int]],
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None,
) -> int:
    """Parse the shared options, build the server, then serve alone (``--serve``) or serve in a
    thread while ``demo(broker_url, server_url, agent_key)`` runs as demo-agent."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("JITGATE_URL", "http://127.0.0.1:8080"), help="the broker")
    p.add_argument("--port", type=int, default=default_port)
    p.add_argument("--key", default=".jitgate/demo-agent.pem", help="the demo agent's key (demo mode)")
    p.add_argument("--serve", action="store_true", help="only serve, until Ctrl-C")
    add_arguments(p)
    args = p.parse_args()
    server = make_server(args)
    url = f"http://127.0.0.1:{args.port}/config"
    if args.serve:
        print(f"serving on {url} (tokens for {TARGET}, broker {args.url})")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        return 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return asyncio.run(demo(args.url, url, args.key))
    finally:
        server.shutdown()
        server.server_close()
