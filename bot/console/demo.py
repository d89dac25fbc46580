"""The first run: a demo agent that asks for something one person must approve, and the
banner ``jitgate serve`` prints so a newcomer knows where to click.

The demo agent is an ordinary agent: it talks to the broker only through the public
HTTP API, with its own key (``jitgate init`` wrote ``.jitgate/demo-agent.pem``). It uses
the standard library for HTTP so ``make run`` needs nothing beyond the broker itself.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

from broker import audit
from broker.context import build_context
from broker.model import Proposal
from broker.model import iso

DEMO_AGENT = "demo-agent"

# Needs one approval from sre under the example policies (prod-restart) and the test ones.
DEMO_PROPOSAL = {
    "action": "restart",
    "target": "prod/payments-api",
    "justification": (
        "payments-api pods are being OOM-killed since the 10:02 deploy and the 5xx rate is 7%. "
        "A rolling restart buys time while the memory-leak fix (PR 812) is reviewed."
    ),
    "duration_s": 300,
    "confidence": 0.82,
    "ticket": "INC-1234",
    "tool": "kubectl rollout restart",
    "evidence": [
        {"kind": "ticket", "title": "INC-1234: payments 5xx above SLO", "url": "https://tickets.example.com/INC-1234"},
        {"kind": "log", "title": "kubelet events", "excerpt": "payments-api-7d9f: OOMKilled (limit 512Mi), restarted 14 times in 20 min"},
        {"kind": "metric", "title": "5xx rate, last hour", "url": "https://grafana.example.com/d/payments?from=now-1h"},
    ],
}


def _context(proposal: dict) -> dict:
    return build_context(
        confidence=int(proposal.get("confidence", 0) * 100), duration_s=proposal["duration_s"], posture="normal",
        evidence_count=len(proposal.get("evidence", [])), delegation_depth=0, now=time.time(),
        proposal=Proposal.parse(proposal),  # its tool, as the broker will show it to policy
    )


def demo_approver(ctx):
    """An approver who may decide the demo request under the loaded policies, or None."""
    agent = ctx.registry.agent(DEMO_AGENT)
    if agent is None:
        return None
    try:
        d = ctx.gate.decide(agent_id=DEMO_AGENT, action=DEMO_PROPOSAL["action"],
                               target=DEMO_PROPOSAL["target"], context=_context(DEMO_PROPOSAL))
    except Exception:  # noqa: BLE001 - policies that cannot decide the demo: no banner link
        return None
    if d.outcome != "require_approval" or not d.approver_group:
        return None
    for approver in ctx.directory.members(d.approver_group):
        if approver.id != agent.owner:
            return approver
    return None


def command_prefix() -> str:
    """How to call ``jitgate`` from the current directory (``.venv/bin/jitgate`` under make run)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "jitgate":
        try:
            rel = argv0.resolve().relative_to(Path.cwd().resolve())
            return str(rel) if len(rel.parts) > 1 else "jitgate"
        except ValueError:
            return "jitgate"
    return "jitgate"


async def first_run_banner(ctx, sessions) -> str | None:
    """The first-run instructions, with a fresh sign-in link, when a demo agent is set up."""
    s = ctx.settings
    if ctx.registry.agent(DEMO_AGENT) is None or not (s.data_dir / "demo-agent.pem").is_file():
        return None
    jg = command_prefix()
    approver = demo_approver(ctx)
    rule = "─" * 76
    lines = [rule, f" jitgate is running at {s.issuer}; the approval desk is the web console."]
    if approver is None:
        lines += ["", " Sign in to the console with a link from:", f"     {jg} console login <approver-id>"]
    else:
        now = ctx.lifecycle.clock.now()
        link = await sessions.issue_link(approver.id, now=now, issued_by="jitgate serve (first run)")
        await audit.record(ctx.store, "console.link_issued", iso(now), {"operator": "jitgate serve"},
                           approver=approver.id, link=link.ref, expires_at=iso(link.expires_at))
        groups = ", ".join(sorted(approver.groups))
        lines += [
            "",
            f" 1. Sign in as {approver.id} ({groups}), who may approve the demo request.",
            "    The link works once, for 10 minutes:",
            f"      {s.issuer}/console/login?token={link.token}",
            f"    Used or expired? A new one: {jg} console login {approver.id}",
        ]
    lines += [
        "",
        " 2. In another terminal, let the demo agent ask for access and wait for you:",
        f"      {jg} demo",
        "",
        " Ctrl-C stops the broker (and the embedded Redis).",
        rule,
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------- the agent
class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class AgentClient:
    """The few API calls the demo agent makes, each with a fresh signed assertion."""

    def __init__(self, base_url: str, issuer: str, key, agent_id: str) -> None:
        self.base = base_url.rstrip("/")
        self.issuer = issuer
        self.key = key
        self.agent_id = agent_id

    def call(self, method: str, path: str, body: dict | None = None, *, timeout: float = 15,
             headers: dict | None = None, dpop: bool = False) -> dict:
        """One call; with ``dpop`` a proof of the agent key goes along, so a token it collects is
        bound to that key (RFC 9449), as the client library does by default and as a broker with
        JITGATE_REQUIRE_DPOP demands."""
        from broker.identity import make_assertion  # noqa: PLC0415
        from broker.jose import make_dpop_proof  # noqa: PLC0415

        assertion = make_assertion(self.key, agent_id=self.agent_id, audience=self.issuer)
        h = {"Authorization": f"Bearer {assertion}", "Accept": "application/json", **(headers or {})}
        if dpop:
            h["DPoP"] = make_dpop_proof(self.key, method=method, url=self.issuer + path)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)  # noqa: S310 - the broker's URL
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the broker's own URL
                raw = resp.read()
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read()).get("detail", e.reason)
            except ValueError:
                detail = str(e.reason)
            raise ApiError(e.code, detail) from None
        return json.loads(raw) if raw else {}

    def jwks(self) -> dict:
        with urllib.request.urlopen(self.base + "/.well-known/jwks.json", timeout=15) as resp:  # noqa: S310
            return json.loads(resp.read())


# Where the demo agent would use its token: only the proof names it; nothing is sent there.
DEMO_RESOURCE_URL = "https://payments-api.example/v1/restart"


def verified_claims(token: str, jwks: dict, *, issuer: str, audience: str, key=None) -> tuple[dict, dict]:
    """The token's header and claims, checked as a resource server checks them (signature
    against the broker's JWKS, typ, issuer, audience, times, and for a DPoP-bound token the
    proof ``key`` makes for one request); ValueError naming the failed check otherwise, and
    nothing else."""
    from broker.client.verify import InvalidToken, verify  # noqa: PLC0415
    from broker.jose import JoseError, make_dpop_proof, split_jws  # noqa: PLC0415

    proof = None
    if key is not None:
        proof = make_dpop_proof(key, method="POST", url=DEMO_RESOURCE_URL, access_token=token)
    try:
        claims = verify(token, jwks, issuer=issuer, audience=audience, dpop_proof=proof, method="POST",
                        url=DEMO_RESOURCE_URL)
        header = split_jws(token, "access token")[0]
    except (InvalidToken, JoseError) as e:
        raise ValueError(str(e)) from None
    return header, claims


def run_demo(client: AgentClient, *, proposal: dict = DEMO_PROPOSAL, work_s: float = 20,
             max_wait_s: float | None = None, out: Callable[[str], None] = print) -> int:
    """Propose, wait for a person, collect the token, print its claims, work, complete.

    Returns 0 when the agent got its grant (whether it completed or the grant was
    revoked under it), 1 when it was denied, expired or failed, 130 on Ctrl-C (after
    withdrawing the request or ending the grant, so nothing is left open).
    """
    state: dict = {}
    try:
        return _run(client, proposal, work_s, max_wait_s, out, state)
    except KeyboardInterrupt:
        rid, phase = state.get("id"), state.get("phase")
        try:
            if phase == "waiting":
                client.call("DELETE", f"/v1/escalations/{rid}")
                out(f"\n  interrupted: request {rid} withdrawn")
            elif phase == "working":
                client.call("POST", f"/v1/escalations/{rid}/complete")
                out(f"\n  interrupted: reported completion, so the grant for {rid} ended now")
        except (ApiError, OSError) as e:
            out(f"\n  interrupted; could not tidy up request {rid}: {e}")
        return 130


def unreachable(url: str, error: OSError) -> str:
    """What to say when nothing answers at the broker's URL: the URL, why, and what to do."""
    reason = getattr(error, "reason", None) or error.strerror or error
    return (f"could not reach the broker at {url} ({reason}).\n"
            "  Is it running? Start it with `make run` (or `jitgate serve`) and try again.\n"
            "  Running on another port? Pass `--url http://127.0.0.1:PORT`, or set the port for both with\n"
            "  `jitgate init --port PORT` (it writes a new .env: move the old one away first).")


def _run(client: AgentClient, proposal: dict, work_s: float, max_wait_s: float | None,
         out: Callable[[str], None], state: dict) -> int:
    out(f"{client.agent_id}: asking to {proposal['action']} {proposal['target']} for {proposal['duration_s']} s")
    out(f"  justification: {proposal['justification']}")
    try:
        req = client.call("POST", "/v1/escalations", proposal, headers={"Idempotency-Key": f"demo-{uuid.uuid4()}"})
    except ApiError as e:
        out(f"could not propose: {e}")
        return 1
    except OSError as e:
        out(unreachable(client.base, e))
        return 1
    rid = req["id"]
    state.update(id=rid, phase="waiting")
    d = req["decision"]
    out(f"  request {rid}: policy said {d['outcome']} ({', '.join(d.get('policies') or [])})")
    if req["status"] == "pending":
        group = d.get("approver_group")
        out(f"  waiting for {d.get('approvals_required')} approval(s) from '{group}' — "
            f"open {client.base}/console and decide (long poll, up to 60 s per call) …")
    deadline = time.monotonic() + (max_wait_s if max_wait_s is not None else 3600)
    while req["status"] == "pending":
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            out("  gave up waiting; withdrawing the request")
            try:
                client.call("DELETE", f"/v1/escalations/{rid}")
            except (ApiError, OSError):
                pass
            return 1
        try:
            # The long poll returns when the status moves away from the one it finds, so look
            # first: a decision that landed since the last answer is seen at once.
            req = client.call("GET", f"/v1/escalations/{rid}")
            if req["status"] == "pending":
                req = client.call("GET", f"/v1/escalations/{rid}?wait={int(min(60, max(1, remaining)))}", timeout=75)
        except (ApiError, OSError) as e:
            out(f"  status check failed ({e}); retrying")
            time.sleep(1)
    if req["status"] != "approved":
        why = (req.get("denial") or {}).get("reason") or (req.get("closed") or {}).get("reason") or d.get("reason")
        who = (req.get("denial") or {}).get("by") or (req.get("closed") or {}).get("by") or "policy"
        out(f"  not granted: {req['status']} by {who}: {why}")
        return 1
    state["phase"] = "collecting"
    approvers = ", ".join(a["approver"] for a in req.get("approvals", [])) or "policy"
    out(f"  approved by {approvers}; collecting the token")
    try:
        token = client.call("POST", f"/v1/escalations/{rid}/token", dpop=True)
        header, claims = verified_claims(token["access_token"], client.jwks(), issuer=client.issuer,
                                         audience=proposal["target"], key=client.key)
    except (ApiError, OSError, ValueError) as e:
        out(f"  could not collect or verify the token: {e}")
        return 1
    out(f"  token ({header.get('typ')}, {header.get('alg')}, kid {header.get('kid')}), signature verified against "
        f"{client.base}/.well-known/jwks.json, bound to the demo key (DPoP); its claims:")
    out(json.dumps(claims, indent=2, sort_keys=True))
    state["phase"] = "working"
    steps = ["draining traffic from pod 1/3", "restarting pod 1/3", "restarting pod 2/3", "restarting pod 3/3",
             "checking the 5xx rate"]
    end = time.monotonic() + work_s
    step = 0
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        out(f"  working ({steps[min(step, len(steps) - 1)]}) …")
        step += 1
        slice_s = max(1, min(remaining, work_s / len(steps) if work_s > 0 else 1, 60))
        try:
            now = client.call("GET", f"/v1/escalations/{rid}?wait={int(round(slice_s))}", timeout=75)
        except (ApiError, OSError):
            continue
        if now["status"] != "active":
            closed = now.get("closed") or {}
            out(f"  the grant ended under me: {now['status']} by {closed.get('by')}: {closed.get('reason')} — "
                "stopping the work")
            return 0
    state["phase"] = "done"
    try:
        done = client.call("POST", f"/v1/escalations/{rid}/complete")
    except ApiError as e:
        out(f"  could not report completion: {e.detail}")
        return 1
    out(f"  done; reported completion: the grant ended at once (status {done['status']})")
    return 0


def load_demo_key(path: Path):
    from broker.jose import read_private_key  # noqa: PLC0415

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `jitgate init` first (it writes the demo agent's key)")
    return read_private_key(path)  # refused when others may read it
