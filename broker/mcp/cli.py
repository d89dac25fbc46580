"""``jitgate mcp`` and ``jitgate gateway`` (the ``jitgate.cli`` entry points ``mcp`` and ``gateway``).

Registering costs nothing: the ``mcp`` SDK is imported only when one of the commands runs, so a
broker installed without the ``mcp`` extra still starts (and says what to install if asked to run them).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from ..client.cli import client_from_args, connection_options
from ..client.errors import JitgateError
from ..errors import ConfigError

NEEDS_EXTRA = "jitgate {cmd}: needs the mcp extra: pip install 'jitgate[mcp]'"


def _transport_options(p: argparse.ArgumentParser, default_port: int) -> None:
    g = p.add_argument_group("transport")
    g.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                   help="stdio (default: an MCP client starts this command) or Streamable HTTP")
    g.add_argument("--host", default="127.0.0.1", help="HTTP: the address to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=default_port, help=f"HTTP: the port (default {default_port})")
    g.add_argument("--path", default="/mcp", help="HTTP: the endpoint path (default /mcp)")


def _quiet() -> None:
    # stdout is the protocol on stdio: everything else goes to stderr, and one INFO line per broker
    # call would drown what matters.
    for name in ("httpx", "httpx2", "mcp"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _serve(server: Any, args: argparse.Namespace) -> None:
    """Serve an MCP server (an SDK ``MCPServer`` or low-level ``Server``) over stdio or Streamable
    HTTP until stopped."""
    if args.transport == "stdio":
        from mcp.server.stdio import stdio_server  # noqa: PLC0415 - optional: the mcp extra

        async def run() -> None:
            if hasattr(server, "run_stdio_async"):
                await server.run_stdio_async()
                return
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())

        asyncio.run(run())
        return
    import uvicorn  # noqa: PLC0415

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"jitgate: serving MCP on {args.host}:{args.port} without authentication: anyone who reaches it acts "
              "as this agent; put it behind an authenticating proxy", file=sys.stderr)
    app = server.streamable_http_app(streamable_http_path=args.path, host=args.host)
    # A held call may wait minutes for people: shutting down does not wait for it longer than this.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", ws="none", timeout_graceful_shutdown=3)


def cmd_mcp(args: argparse.Namespace) -> int:
    try:
        from .asking import build_server  # noqa: PLC0415 - optional: the mcp extra
    except ImportError:
        print(NEEDS_EXTRA.format(cmd="mcp"), file=sys.stderr)
        return 1
    _quiet()
    try:
        client = client_from_args(args)
    except JitgateError as exc:
        print(f"jitgate mcp: {exc}", file=sys.stderr)
        return 1
    server = build_server(client)
    _serve(server, args)
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    try:
        from .gateway import Gateway  # noqa: PLC0415 - optional: the mcp extra
        from .settings import load_config  # noqa: PLC0415
    except ImportError:
        print(NEEDS_EXTRA.format(cmd="gateway"), file=sys.stderr)
        return 1
    _quiet()
    # The gateway hands the token on in a header as a bearer token: a token bound to a key
    # (DPoP) would need a proof per HTTP request the upstream connection makes.
    args.no_dpop = True
    try:
        config = load_config(args.config)
        client = client_from_args(args)
    except (ConfigError, JitgateError) as exc:
        print(f"jitgate gateway: {exc}", file=sys.stderr)
        return 1
    _serve(Gateway(config, client).server, args)
    return 0


def register_mcp(subparsers: Any) -> None:
    """``jitgate mcp``: the MCP server for asking."""
    p = subparsers.add_parser("mcp", help="an MCP server with tools to ask for privileges (request, wait, collect, "
                              "complete) as the configured agent")
    connection_options(p)
    _transport_options(p, 8765)
    p.set_defaults(fn=cmd_mcp)


def register_gateway(subparsers: Any) -> None:
    """``jitgate gateway --config FILE``: the MCP gateway."""
    p = subparsers.add_parser("gateway", help="an MCP gateway: forwards tool calls to upstream MCP servers only "
                              "under a grant")
    p.add_argument("--config", required=True, metavar="FILE", help="the gateway's YAML file (upstreams, allow-lists)")
    connection_options(p)
    _transport_options(p, 8766)
    p.set_defaults(fn=cmd_gateway)
