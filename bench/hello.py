"""HTTP hello-world on the broker's own stack: a bare Starlette route under the same
uvicorn settings as ``jitgate serve`` (uvloop and httptools when installed, no access
log). The floor under every HTTP path the benchmarks measure.

Run: ``python -m bench.hello PORT``.
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def hello(request: Request) -> Response:
    body = orjson.loads(await request.body() or b"{}")  # read and parse, as every broker POST does
    return Response(orjson.dumps({"hello": "world", "fields": len(body)}), media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(routes=[Route("/hello", hello, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])])


def main() -> None:
    port = int(sys.argv[1])
    # The same Config as broker.cli.cmd_serve.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", access_log=False,
                            lifespan="on", timeout_graceful_shutdown=5, ws="none")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
