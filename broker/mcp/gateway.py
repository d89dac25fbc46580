"""``jitgate gateway``: an MCP server to the agent, an MCP client to upstream MCP servers, and a tool
call forwarded only under a grant (issue 20, item 1).

The agent sees every upstream's tools, each named ``<upstream>__<tool>``. A call of an allow-listed
(read-only) tool is forwarded as it is. Every other call becomes a proposal - the gateway's agent,
the tool's action (``mcp:<upstream>/<tool>`` unless the file maps it), the upstream's target, the
upstream tool as ``tool`` and the call's arguments as ``arguments``, which Cedar reads as
``context.arguments`` - and:

- policy grants it at once: the token is collected and the call forwarded;
- people must decide: the call is held, with progress notifications ("pending: 1/2 approvals from
  sre") while it waits, and forwarded once approved; denied, it is a tool error (``isError``) naming
  the request, who denied it and why; undecided after ``wait_s``, the request is withdrawn and the
  call refused the same way;
- policy denies it, or the broker refuses it: a tool error, and the upstream never sees the call.

An HTTP upstream with ``token_header`` receives the grant's access token in that header. After the
call the grant is completed with its outcome (``success``, or ``failure`` when the upstream answered
an error or failed), so the grant ends at once and the outcome is in the audit log. Anything the
gateway cannot decide - an unknown tool, a broker it cannot reach - fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types as types
from mcp import Client as McpClient
from mcp import StdioServerParameters
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError

from ..client import Client, Escalation, JitgateError, NotGranted, Token, outcome
from .asking import refusal
from .outcome import complete, make_outcome
from .settings import SEP, GatewayConfig, UpstreamConfig
from .waiting import wait_with_progress

log = logging.getLogger("jitgate.mcp.gateway")

# Upstream JSON-RPC errors that answer the call (bad arguments, no such tool): the connection is fine.
_CALL_ERRORS = frozenset({types.INVALID_PARAMS, types.METHOD_NOT_FOUND, types.INVALID_REQUEST})
_MAX_PAGES = 100  # tools/list pages read from one upstream (a paginator that never ends cannot hang us)
_SUMMARY = 500


def tool_error(message: str) -> types.CallToolResult:
    """A tool error the model reads (``isError``: the call was not done, and why)."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def result_text(result: types.CallToolResult) -> str:
    """The text of a result, for the outcome's summary."""
    parts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    if not parts and result.structured_content is not None:
        parts = [json.dumps(result.structured_content)]
    return " ".join(parts)


class Upstream:
    """One upstream MCP server: a connection held open by a task of its own (opened again after
    the upstream dies), its tool listing, and calls on it."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.tools: dict[str, types.Tool] = {}
        self._client: McpClient | None = None
        self._holder: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None
        self._lock = asyncio.Lock()

    def _mcp_client(self) -> McpClient:
        c = self.config
        if c.server is not None:
            return McpClient(c.server, cache=None)
        if c.url is not None:
            return McpClient(c.url, cache=None)
        params = StdioServerParameters(command=c.command[0], args=list(c.command[1:]), env=c.env, cwd=c.cwd)
        return McpClient(params, cache=None)

    async def _hold(self, ready: asyncio.Future, stop: asyncio.Event) -> None:
        try:
            async with self._mcp_client() as client:
                self._client = client
                ready.set_result(client)
                await stop.wait()
        except BaseException as exc:  # noqa: BLE001 - a dying upstream ends its connection in any way
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("upstream %s: connection ended: %r", self.config.name, exc)
        finally:
            if self._holder is asyncio.current_task():  # not a newer connection's
                self._client = None

    async def connect(self) -> McpClient:
        """The open connection (opened now when there is none)."""
        async with self._lock:
            if self._client is not None and self._holder is not None and not self._holder.done():
                return self._client
            await self._drop()
            ready: asyncio.Future = asyncio.get_running_loop().create_future()
            self._stop = asyncio.Event()
            self._holder = asyncio.ensure_future(self._hold(ready, self._stop))
            return await ready

    async def _drop(self) -> None:
        holder, self._holder, self._client = self._holder, None, None
        if self._stop is not None:
            self._stop.set()
        if holder is not None:
            try:
                await asyncio.wait_for(holder, 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing a broken connection
                holder.cancel()

    async def reset(self) -> None:
        """Forget the connection (the next call opens a new one)."""
        async with self._lock:
            await self._drop()

    async def list_tools(self) -> dict[str, types.Tool]:
        """Read the upstream's tools (all pages, up to a bound)."""
        client = await self.connect()
        tools: dict[str, types.Tool] = {}
        cursor = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor) if cursor else await client.list_tools()
            tools.update((t.name, t) for t in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self.tools = tools
        return tools

    async def knows(self, tool: str) -> bool:
        if tool not in self.tools:
            await self.list_tools()
        return tool in self.tools

    async def call(self, tool: str, arguments: dict[str, Any], token: Token | None,
                   progress: Any = None) -> types.CallToolResult:
        """Call ``tool``; with a token and a token header, on a connection of its own carrying it."""
        header, url = self.config.token_header, self.config.url
        if token is not None and header and url:
            import httpx2  # noqa: PLC0415 - the mcp SDK's own HTTP client, needed only with a token header
            from mcp.client.streamable_http import streamable_http_client  # noqa: PLC0415

            # A connection of the call's own: the token is the grant's, not the gateway's.
            async with httpx2.AsyncClient(headers={header: f"Bearer {token.access_token}"},
                                          timeout=httpx2.Timeout(30.0, read=300.0)) as http:
                async with McpClient(streamable_http_client(url, http_client=http), cache=None) as client:
                    return await client.call_tool(tool, arguments, progress_callback=progress)
        client = await self.connect()
        try:
            return await client.call_tool(tool, arguments, progress_callback=progress)
        except MCPError as exc:
            if exc.code not in _CALL_ERRORS:
                await self.reset()
            raise
        except Exception:
            await self.reset()
            raise

    async def close(self) -> None:
        await self.reset()


class Gateway:
    """The gateway: ``server`` is the MCP server the agent talks to (serve it over stdio or
    Streamable HTTP, or connect an SDK ``Client`` to it in-process)."""

    def __init__(self, config: GatewayConfig, client: Client) -> None:
        self.config = config
        self.client = client
        self.upstreams = {name: Upstream(cfg) for name, cfg in config.upstreams.items()}
        self._completions: set[asyncio.Task] = set()
        self.server: Server[Any] = Server("jitgate-gateway", lifespan=self._lifespan, on_list_tools=self._list_tools,
                                          on_call_tool=self._call_tool)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _server: Any) -> AsyncIterator[dict[str, Any]]:
        await self.start()
        try:
            yield {}
        finally:
            # Shut down by cancellation (Streamable HTTP's session manager): close anyway, so the
            # upstream processes end with us and the reported completions are not cut off.
            with anyio.CancelScope(shield=True):
                await self.close()

    async def start(self) -> None:
        """Connect to every upstream and read its tools (an upstream that fails is logged and tried
        again on the next listing or call)."""
        for up in self.upstreams.values():
            try:
                await up.list_tools()
            except Exception as exc:  # noqa: BLE001 - one upstream down must not stop the others
                log.warning("upstream %s: cannot list its tools yet: %r", up.config.name, exc)

    async def close(self) -> None:
        """Finish the completions still being reported, then close the upstream connections and
        this event loop's connections to the broker."""
        if self._completions:
            await asyncio.wait(set(self._completions), timeout=10)
        for up in self.upstreams.values():
            await up.close()
        await self.client.aclose()

    async def drain(self) -> None:
        """Wait for the completions reported after calls (tests, the bench)."""
        while self._completions:
            await asyncio.wait(set(self._completions))

    # ------------------------------------------------------------------ tools/list
    async def _list_tools(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
                          ) -> types.ListToolsResult:
        tools = []
        for name, up in self.upstreams.items():
            try:
                listed = await up.list_tools()
            except Exception as exc:  # noqa: BLE001 - list what is reachable
                log.warning("upstream %s: cannot list its tools: %r", name, exc)
                listed = up.tools
            for tool in listed.values():
                held = "" if tool.name in up.config.allow else " (jitgate: held for approval unless policy grants it)"
                tools.append(tool.model_copy(update={
                    "name": f"{name}{SEP}{tool.name}",
                    "description": f"[{name}] {tool.description or ''}{held}".strip()}))
        return types.ListToolsResult(tools=tools)

    # ------------------------------------------------------------------ tools/call
    async def _call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
                         ) -> types.CallToolResult:
        name = params.name
        server, sep, tool = name.partition(SEP)
        up = self.upstreams.get(server) if sep else None
        if up is None or not tool:
            return tool_error(f"jitgate gateway: no tool {name!r}")
        try:
            known = await up.knows(tool)
        except Exception as exc:  # noqa: BLE001 - an unreachable upstream is the call's error
            return tool_error(f"jitgate gateway: upstream {server!r} is unreachable: {exc!r}")
        if not known:
            return tool_error(f"jitgate gateway: upstream {server!r} has no tool {tool!r}")
        arguments = dict(params.arguments or {})

        async def report(done: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(done, total, message)

        if tool in up.config.allow:
            return await self._forward(up, tool, arguments, None, report)
        granted = await self._grant(up, tool, arguments, report)
        if isinstance(granted, types.CallToolResult):
            return granted
        return await self._forward(up, tool, arguments, granted, report)

    async def _grant(self, up: Upstream, tool: str, arguments: dict[str, Any],
                     report: Any) -> Token | types.CallToolResult:
        """Propose the call, wait for people if it needs them, collect the token; or the tool error
        that says why the call is not forwarded."""
        cfg = up.config
        label = f"{cfg.name}{SEP}{tool}"
        try:
            esc = await self.client.propose(
                action=cfg.action_for(tool), target=cfg.target, tool=tool, arguments=arguments,
                duration=self.config.duration_s,
                justification=f"MCP tool call {cfg.name}/{tool} through the jitgate gateway (arguments attached)")
        except JitgateError as exc:
            return tool_error(f"jitgate: the call to {label} was not forwarded: {refusal(exc)}")
        if esc.status == "pending":
            try:
                esc = await wait_with_progress(self.client, esc, self.config.wait_s, report)
            except asyncio.CancelledError:  # the agent gave up: nobody should decide it any more
                self._spawn(self._withdraw(esc.id))
                raise
            except JitgateError as exc:
                return tool_error(f"jitgate: the call to {label} was not forwarded (request {esc.id}): {refusal(exc)}")
            if esc.status == "pending":
                await self._withdraw(esc.id)
                return tool_error(f"jitgate: the call to {label} was not forwarded: no decision within "
                                  f"{self.config.wait_s:g} s; request {esc.id} was withdrawn")
        try:
            outcome(esc)
        except NotGranted as exc:
            return tool_error(f"jitgate: the call to {label} was not forwarded: {refusal(exc)}"
                              + ("" if exc.request_id else f" (request {esc.id})"))
        try:
            return await self.client.collect(esc.id)
        except JitgateError as exc:
            return tool_error(f"jitgate: the call to {label} was not forwarded (request {esc.id}): {refusal(exc)}")

    async def _forward(self, up: Upstream, tool: str, arguments: dict[str, Any], token: Token | None,
                       report: Any) -> types.CallToolResult:
        label = f"{up.config.name}{SEP}{tool}"
        try:
            result = await up.call(tool, arguments, token, progress=report)
        except Exception as exc:  # noqa: BLE001 - the upstream failing in any way is the call's error
            message = f"upstream {up.config.name!r} failed during {tool!r}: {exc}"
            log.warning("%s", message)
            if token is not None:
                self._spawn(self._complete(token.request_id, make_outcome("failure", message[:_SUMMARY])))
            rid = f" (request {token.request_id}; its grant was ended)" if token is not None else ""
            return tool_error(f"jitgate gateway: {message}{rid}")
        if token is not None:
            status = "failure" if result.is_error else "success"
            summary = f"{label}: {'error: ' if result.is_error else ''}{result_text(result)}"
            self._spawn(self._complete(token.request_id, make_outcome(status, summary[:_SUMMARY])))
        return result

    # ------------------------------------------------------------------ after the call
    def _spawn(self, work: Any) -> None:
        # Completing is off the call's path: the agent has its answer; close() and drain() wait for it.
        task = asyncio.ensure_future(work)
        self._completions.add(task)
        task.add_done_callback(self._completions.discard)

    async def _complete(self, request_id: str, result: dict[str, Any]) -> Escalation | None:
        try:
            return await complete(self.client, request_id, result)
        except JitgateError as exc:
            log.error("could not complete %s (%s); the grant ends at its expiry", request_id, exc)
            return None

    async def _withdraw(self, request_id: str) -> None:
        try:
            await self.client.cancel(request_id)
        except JitgateError as exc:
            log.warning("could not withdraw %s: %s", request_id, exc)
