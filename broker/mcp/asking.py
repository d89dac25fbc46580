"""``jitgate mcp``: an MCP server for agents that ask for privileges themselves (issue 20, item 2).

Four tools, each one call of :class:`broker.client.Client` as the configured agent (a registered
key or a SPIFFE JWT-SVID, the same options as ``jitgate agent``):

- ``request_escalation``: propose; answers the request id and its status (``approved`` at once
  when policy grants it, ``pending`` while people decide, ``denied`` with the reason);
- ``escalation_status``: the request now, or after waiting up to ``wait_s`` seconds (at most
  :data:`MAX_WAIT_S`) for it to be decided, with progress notifications while it waits;
- ``collect_grant``: the access token of an approved request (once);
- ``complete_grant``: the task is done (with its outcome): the grant ends now.

A refusal is a tool error (``isError``) whose text the model can read: who denied it and why, or
what the broker said. The agent's key never leaves this process: it signs the assertions here.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from ..client import ApiError, Client, Denied, Escalation, JitgateError, NotGranted, TransportError
from .outcome import complete, make_outcome
from .waiting import wait_with_progress

# The longest one tool call waits for a decision. A client's read timeout is often a few minutes
# (the SDK's: 300 s); a longer wait is several calls, each answering "pending".
MAX_WAIT_S = 120.0


def describe(esc: Escalation) -> dict[str, Any]:
    """What a model needs of an escalation: id, status, a one-line summary, the decision, the
    approvals, the denial (``{by, reason}``) and the expiry."""
    raw = esc.raw
    out: dict[str, Any] = {"request_id": esc.id, "status": esc.status, "summary": esc.summary()}
    decision = esc.decision
    if decision:
        out["decision"] = {k: decision[k] for k in ("outcome", "reason", "policies", "approvals_required",
                                                    "approver_group", "max_duration_s") if k in decision}
    if esc.approvals:
        out["approvals"] = [{"approver": a.get("approver"), "channel": a.get("channel"), "at": a.get("at")}
                            for a in esc.approvals]
    if esc.denial:
        out["denial"] = {"by": esc.denial.get("by"), "reason": esc.denial.get("reason")}
    for key in ("expires_at", "approved_duration_s", "action", "target"):
        if raw.get(key) is not None:
            out[key] = raw[key]
    return out


def refusal(exc: JitgateError) -> str:
    """A broker refusal as one sentence a model can act on."""
    if isinstance(exc, Denied):
        by = f" by {exc.by}" if exc.by else ""
        rid = f" (request {exc.request_id})" if exc.request_id else ""
        return f"denied{by}: {exc.reason}{rid}"
    if isinstance(exc, NotGranted):
        return f"{exc.status or 'not granted'}: {exc.reason}" + (f" (request {exc.request_id})" if exc.request_id else "")
    if isinstance(exc, ApiError):
        return f"the broker refused ({exc.code}): {exc.detail}"
    if isinstance(exc, TransportError):
        return f"the broker could not be reached: {exc}"
    return str(exc)


def build_server(client: Client) -> MCPServer:
    """The ``jitgate mcp`` server, asking as ``client``'s agent."""
    server: MCPServer = MCPServer(
        "jitgate", instructions=(
            "Ask jitgate for a privilege before doing something risky: request_escalation with what you will do "
            "(action, target), why (justification) and evidence; if it is pending, escalation_status with wait_s "
            "until it is approved or denied; then collect_grant for the access token, do the task, and "
            "complete_grant with the outcome. A denial says who denied it and why."))

    @server.tool()
    async def request_escalation(action: str, target: str, justification: str, duration_s: int = 300,
                                 evidence: list[dict[str, str]] | None = None, tool: str | None = None,
                                 dataset: str | None = None, arguments: dict[str, Any] | None = None,
                                 confidence: float | None = None, ticket: str | None = None) -> dict[str, Any]:
        """Ask for a privilege: do ``action`` on ``target`` for ``duration_s`` seconds. ``evidence`` is a list
        of {kind, title, url} or {kind, title, excerpt}; ``tool``, ``dataset`` and ``arguments`` say exactly
        what will be done (policy decides on them). Answers the request id and its status: approved (policy
        granted it), pending (people decide: use escalation_status), or denied with the reason."""
        try:
            esc = await client.propose(action=action, target=target, justification=justification,
                                       evidence=evidence or [], duration=duration_s, tool=tool, dataset=dataset,
                                       arguments=arguments, confidence=confidence, ticket=ticket)
        except JitgateError as exc:
            raise ToolError(refusal(exc)) from None
        return describe(esc)

    @server.tool()
    async def escalation_status(request_id: str, ctx: Context, wait_s: float = 0) -> dict[str, Any]:
        """The request's status. With ``wait_s`` (at most 120), wait that long for a pending request to be
        decided, reporting progress; call again while it stays pending."""
        try:
            esc = await client.status(request_id)
            if wait_s > 0:
                esc = await wait_with_progress(client, esc, min(float(wait_s), MAX_WAIT_S), ctx.report_progress)
        except JitgateError as exc:
            raise ToolError(refusal(exc)) from None
        return describe(esc)

    @server.tool()
    async def collect_grant(request_id: str, method: str | None = None, url: str | None = None) -> dict[str, Any]:
        """Collect the access token of an approved request (only once). Give ``method`` and ``url`` of the
        call it is for to get the exact headers to send (a DPoP-bound token needs a proof per call)."""
        try:
            token = await client.collect(request_id)
        except JitgateError as exc:
            raise ToolError(refusal(exc)) from None
        out: dict[str, Any] = {"request_id": request_id, "access_token": token.access_token,
                               "token_type": token.token_type, "expires_in": token.expires_in,
                               "authorization_details": token.authorization_details}
        if token.credential is not None:
            out["credential"] = token.credential
        if method and url:
            out["headers"] = token.headers(method.upper(), url)
        return out

    @server.tool()
    async def complete_grant(request_id: str, status: str = "success", summary: str = "",
                             evidence: list[str] | None = None) -> dict[str, Any]:
        """The task is done: the grant ends now. ``status`` is success or failure; ``summary`` (500
        characters at most) and ``evidence`` (URLs) say what came of it."""
        try:
            outcome = make_outcome(status, summary, evidence or [])
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        try:
            esc = await complete(client, request_id, outcome)
        except JitgateError as exc:
            raise ToolError(refusal(exc)) from None
        return describe(esc)

    return server
