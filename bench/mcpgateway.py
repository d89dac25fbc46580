"""Issue 20: what the MCP gateway adds to a tool call when policy grants it at once.

One upstream MCP server written with the SDK (a tool ``echo``) runs in this process; the agent
calls it with the SDK's own client, in turns of the same length and in the same run:

- *direct*: the agent's client on the upstream itself;
- *allow-listed*: through the gateway, the tool allow-listed (no proposal: the gateway's own cost);
- *granted*: through the gateway, each call a proposal that the fixtures' ``staging-read`` policy
  grants at once (``read`` on ``staging/payments-api``), then the token collected and the call
  forwarded; the completion with its outcome is sent after the answer (it is in the measured CPU
  of the next calls, not in the call's latency).

The broker is a ``jitgate serve`` process on the server core; the agent, the gateway and the
upstream share this process on the load core, as an agent and its gateway would share a host.
In-process MCP connections (``Client(server)``) keep transport costs out of both sides, so the
difference is the gateway's: ``added_p50_ms`` = granted p50 - direct p50 (target: < 5 ms), and
``ratio_p50`` = granted p50 / direct p50. Calls are sequential (concurrency 1), so calls per second
is 1 / mean latency.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

from mcp import Client as McpClient
from mcp.server.mcpserver import MCPServer

from broker.client import Client
from broker.mcp.gateway import Gateway
from broker.mcp.settings import parse_config

from .load import HarnessError, summary

TARGET_ADDED_P50_MS = 5.0


def upstream() -> MCPServer:
    server = MCPServer("bench-upstream")

    @server.tool()
    def echo(text: str) -> str:
        """Answer the text."""
        return text

    return server


async def _turn(agent: McpClient, name: str, seconds: float, warmup: int) -> tuple[list[float], float]:
    for i in range(warmup):
        await agent.call_tool(name, {"text": f"warm {i}"})
    latencies: list[float] = []
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        s = time.perf_counter()
        res = await agent.call_tool(name, {"text": "hello"})
        latencies.append(time.perf_counter() - s)
        if res.is_error:
            raise HarnessError(f"{name}: {res.content}")
    return latencies, time.perf_counter() - t0


async def measure(stack, broker_url: str, seconds: float, log) -> dict:
    """Direct, allow-listed and granted calls, ``seconds`` each (after a warm-up)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one log line per broker call is not the gateway's cost
    up = upstream()
    agent_id = stack.agents.ids[0]
    client = Client(broker_url, agent_id, stack.agents.keys[agent_id], dpop=False)
    config = parse_config({"upstreams": {
        "open": {"command": ["unused"], "target": "staging/payments-api", "allow": ["echo"]},
        "held": {"command": ["unused"], "target": "staging/payments-api", "actions": {"echo": "read"}}}})
    for name in ("open", "held"):  # the in-process upstream instead of the command
        config.upstreams[name] = dataclasses.replace(config.upstreams[name], server=up)
    gw = Gateway(config, client)
    rows: dict = {}
    async with McpClient(up, cache=None) as direct:
        lat, wall = await _turn(direct, "echo", seconds, 50)
        rows["direct"] = {**summary(lat), "calls_per_s": round(len(lat) / wall, 1)}
    async with McpClient(gw.server) as agent:
        for label, name in (("allow_listed", "open__echo"), ("granted", "held__echo")):
            lat, wall = await _turn(agent, name, seconds, 20)
            rows[label] = {**summary(lat), "calls_per_s": round(len(lat) / wall, 1)}
        await gw.drain()
    await client.aclose()
    direct_p50, granted_p50 = rows["direct"]["p50_ms"], rows["granted"]["p50_ms"]
    rows["added_p50_ms"] = round(granted_p50 - direct_p50, 3)
    rows["added_p50_allow_listed_ms"] = round(rows["allow_listed"]["p50_ms"] - direct_p50, 3)
    rows["ratio_p50"] = round(granted_p50 / direct_p50, 1) if direct_p50 else None
    rows["target_added_p50_ms"] = TARGET_ADDED_P50_MS
    rows["met"] = rows["added_p50_ms"] < TARGET_ADDED_P50_MS
    rows["load_average_1m"] = round(os.getloadavg()[0], 2)  # a shared machine: how busy it was meanwhile
    log(f"  direct p50 {direct_p50} ms ({rows['direct']['calls_per_s']}/s); allow-listed p50 "
        f"{rows['allow_listed']['p50_ms']} ms; granted p50 {granted_p50} ms ({rows['granted']['calls_per_s']}/s): "
        f"the gateway adds {rows['added_p50_ms']} ms at p50 (x{rows['ratio_p50']}); target < {TARGET_ADDED_P50_MS} ms"
        + ("" if rows["met"] else "  MISSED"))
    return rows
