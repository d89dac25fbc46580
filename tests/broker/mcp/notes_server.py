"""A small upstream MCP server written with the SDK, for the gateway tests and the bench: a read
tool, write tools, and a tool that kills the server mid-call. Every call it receives is appended
(tool, arguments, the Authorization header it came with) to the JSON-lines file NOTES_CALLS, so a
test can tell what reached it.

    python notes_server.py            # stdio
    python notes_server.py --http PORT   # Streamable HTTP on 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import json
import os
import sys

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("notes")
NOTES: dict[str, str] = {"readme": "hello"}


def record(tool: str, ctx: Context, **arguments) -> None:
    path = os.environ.get("NOTES_CALLS")
    if path:
        headers = ctx.headers or {}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "arguments": arguments, "authorization": headers.get("authorization")})
                    + "\n")


@server.tool()
def read_note(path: str, ctx: Context) -> str:
    """Read a note."""
    record("read_note", ctx, path=path)
    return NOTES.get(path, "")


@server.tool()
def write_note(path: str, text: str, ctx: Context) -> str:
    """Write a note."""
    record("write_note", ctx, path=path, text=text)
    if path == "readonly":
        raise ValueError("readonly is read-only")
    NOTES[path] = text
    return f"wrote {len(text)} characters to {path}"


@server.tool()
def append_log(line: str, ctx: Context) -> str:
    """Append a line to the log."""
    record("append_log", ctx, line=line)
    return "ok"


@server.tool()
def crash(ctx: Context) -> str:
    """Die in the middle of the call."""
    record("crash", ctx)
    os._exit(3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
