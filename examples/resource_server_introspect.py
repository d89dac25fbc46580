"""A resource server that asks the broker about every token (RFC 7662 introspection),
authenticated as the registered resource server `example-payments-api`. It learns at
once when a grant has been completed or revoked - the offline verifier cannot - and it
still checks the DPoP proof of a bound token, so a leaked token is useless here too.

With `make run` going, from the repository root:

    .venv/bin/python examples/setup_agents.py                      # once: registers the resource server
    .venv/bin/python examples/resource_server_introspect.py          # demo
    .venv/bin/python examples/resource_server_introspect.py --serve  # only serve on 127.0.0.1:8092
"""

from __future__ import annotations

import argparse
import sys
from http.server import ThreadingHTTPServer

import httpx
from resource_server_common import TARGET, JsonHandler, broker_issuer, main

from broker.client import Client, Introspector, InvalidToken, JitgateError


def make_server(args: argparse.Namespace) -> ThreadingHTTPServer:
    introspector = Introspector(args.url, "example-payments-api", args.server_key, audience=broker_issuer(args.url),
                                target=TARGET, require_dpop=True)

    class Handler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server calls it by this name
            url = f"http://{self.headers.get('Host', f'127.0.0.1:{args.port}')}{self.path}"
            try:
                # Active now (the broker says), meant for this server, and the DPoP proof holds.
                info = introspector.verify_request(self.headers.get("Authorization"), self.headers.get("DPoP"), "GET", url)
            except InvalidToken as e:
                self.answer(401, {"error": e.error, "error_description": e.reason}, e.challenge())
                return
            except JitgateError as e:  # the broker refused this server or could not be reached: fail closed
                self.answer(503, {"error": "temporarily_unavailable", "error_description": str(e)})
                return
            self.answer(200, {"config": {"pool_size": 20}, "for": info["sub"], "token_type": info["token_type"]})

    return ThreadingHTTPServer(("127.0.0.1", args.port), Handler)


async def demo(broker_url: str, url: str, key: str) -> int:
    async with Client(broker_url, "demo-agent", key) as client, httpx.AsyncClient() as http:
        async with client.grant(action="read", target=TARGET, justification="read the pool size", duration=120) as token:
            r = await http.get(url, headers=token.headers("GET", url))
            print("while the grant is active:  ", r.status_code, r.json())
            r = await http.get(url, headers={"Authorization": f"DPoP {token.access_token}"})
            print("the token without a proof:  ", r.status_code, r.json()["error_description"])
        # Leaving the block reported completion: the broker now calls the token inactive.
        r = await http.get(url, headers=token.headers("GET", url))
        print("after the agent completed:  ", r.status_code, r.json()["error_description"])
    return 0


def _server_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server-key", default=".jitgate/examples/example-payments-api.pem")


if __name__ == "__main__":
    sys.exit(main(__doc__, default_port=8092, make_server=make_server, demo=demo, add_arguments=_server_key))
