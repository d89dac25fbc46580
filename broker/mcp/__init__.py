"""jitgate for agents that speak the Model Context Protocol (issue 20), on the official ``mcp`` SDK.

- :mod:`.asking` - ``jitgate mcp``: an MCP server with the tools an agent asks for privileges with
  (``request_escalation``, ``escalation_status``, ``collect_grant``, ``complete_grant``);
- :mod:`.gateway` - ``jitgate gateway``: an MCP server to the agent and an MCP client to upstream MCP
  servers, forwarding a tool call only under a grant.

Both are agent-side: they reach the broker through :mod:`broker.client` like any agent, never
through the broker's internals. Needs the ``mcp`` extra (``pip install 'jitgate[mcp]'``).
"""
