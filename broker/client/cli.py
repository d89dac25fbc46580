"""``jitgate agent ...`` (and ``jitgate-agent ...``, which the client-only ``jitgate-client`` install also has):
the agent API for shell scripts and for people trying it out.

Exit codes: 0 granted (or, for status, not refused), 2 denied / withdrawn / revoked,
3 expired, 4 timed out waiting, 1 anything else (bad usage, broker unreachable, refused
call). Ids and tokens go to stdout, progress and explanations to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..jose import generate_key, make_dpop_proof
from .client import Client, outcome
from .credentials import AgentKey, Svid, load_key
from .errors import Denied, Expired, JitgateError, NotGranted, TimedOut
from .models import Escalation, TaskOutcome

EXIT_GRANTED, EXIT_ERROR, EXIT_DENIED, EXIT_EXPIRED, EXIT_TIMED_OUT = 0, 1, 2, 3, 4
_STATUS_EXIT = {"denied": EXIT_DENIED, "cancelled": EXIT_DENIED, "revoked": EXIT_DENIED, "expired": EXIT_EXPIRED}
_SPINNER = "|/-\\"


def _err(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- set-up
def _connection_options(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    g = p.add_argument_group("connection (or the environment variables named)")
    g.add_argument("--url", default=env("JITGATE_URL", "http://127.0.0.1:8080"), help="broker URL (JITGATE_URL)")
    g.add_argument("--agent", default=env("JITGATE_AGENT_ID"), help="agent id (JITGATE_AGENT_ID)")
    g.add_argument("--key", default=env("JITGATE_AGENT_KEY"), help="agent private key, PEM file (JITGATE_AGENT_KEY)")
    g.add_argument("--svid", default=env("JITGATE_SVID_FILE"),
                   help="authenticate with the JWT-SVID in this file instead of a key (JITGATE_SVID_FILE)")
    g.add_argument("--workload-api", action="store_true",
                   help="authenticate with a JWT-SVID from the SPIFFE Workload API at SPIFFE_ENDPOINT_SOCKET "
                        "(needs the spiffe extra)")
    g.add_argument("--audience", default=env("JITGATE_AUDIENCE"),
                   help="the broker's issuer URL if it differs from --url (default: read from the broker)")
    g.add_argument("--no-dpop", action="store_true", help="collect a plain Bearer token instead of a DPoP-bound one")
    g.add_argument("--dpop-key", default=env("JITGATE_DPOP_KEY"), metavar="PEM",
                   help="bind tokens to this key instead of the agent key (JITGATE_DPOP_KEY); "
                        "needed with an SVID, which brings no key of its own")


def _client(args: argparse.Namespace) -> Client:
    if args.workload_api:
        credential: Any = Svid.from_workload_api()
    elif args.svid:
        credential = Svid(args.svid)
    else:
        if not args.agent or not args.key:
            raise JitgateError("give --agent and --key (or JITGATE_AGENT_ID and JITGATE_AGENT_KEY), --svid, or --workload-api")
        try:
            credential = AgentKey(args.agent, load_key(Path(args.key)))
        except ConfigError as exc:  # unreadable, not a PEM key, or readable by others
            raise JitgateError(f"cannot use the key: {exc.detail}") from None
    dpop_key = None
    if args.dpop_key:
        try:
            dpop_key = load_key(Path(args.dpop_key))
        except ConfigError as exc:
            raise JitgateError(f"cannot use the DPoP key: {exc.detail}") from None
    return Client(args.url, credential=credential, audience=args.audience, dpop=not args.no_dpop, dpop_key=dpop_key)


# For other agent-side commands that connect the same way (``jitgate mcp``, ``jitgate gateway``).
connection_options = _connection_options


def client_from_args(args: argparse.Namespace) -> Client:
    """The :class:`Client` the connection options describe (JitgateError when they do not)."""
    return _client(args)


def _run(args: argparse.Namespace, work: Callable[[Client], Awaitable[int]]) -> int:
    """Run ``work(client)`` and turn the outcome into an exit code."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per HTTP call drowns the progress
    async def main() -> int:
        client = _client(args)
        try:
            return await work(client)
        finally:
            await client.aclose()
    try:
        return asyncio.run(main())
    except Denied as e:
        policies = f" (policies: {', '.join(e.policy_ids)})" if e.policy_ids else ""
        _err(f"denied{f' by {e.by}' if e.by else ''}: {e.reason}{policies}")
        return EXIT_DENIED
    except Expired as e:
        _err(f"expired: {e.reason}")
        return EXIT_EXPIRED
    except NotGranted as e:
        _err(f"{e.status}: {e.reason}")
        return _STATUS_EXIT.get(e.status, EXIT_DENIED)
    except TimedOut as e:
        _err(f"timed out: {e}; still pending - check again with `status {e.request_id} --wait`")
        return EXIT_TIMED_OUT
    except JitgateError as e:
        _err(f"jitgate agent: {e}")
        return EXIT_ERROR
    except ValueError as e:  # e.g. ConfigError from a key that is not a usable PEM
        _err(f"jitgate agent: {getattr(e, 'detail', e)}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


class _Progress:
    """Waiting shown on stderr: a spinner line on a terminal, one line per change otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.line = "waiting"

    def update(self, esc: Escalation) -> None:
        self.line = esc.summary()
        if not self.tty:
            _err(f"[{time.monotonic() - self.started:4.0f}s] {self.line}")

    async def spin(self) -> None:
        if not self.tty:
            return
        i = 0
        try:
            while True:
                sys.stderr.write(f"\r{_SPINNER[i % 4]} {self.line} ({time.monotonic() - self.started:.0f}s)\033[K")
                sys.stderr.flush()
                i += 1
                await asyncio.sleep(0.25)
        finally:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    async def wait(self, client: Client, request_id: str, timeout: float, current: Escalation | None = None) -> Escalation:
        spinner = asyncio.ensure_future(self.spin())
        try:
            return await client.wait(request_id, timeout=timeout, on_update=self.update, current=current)
        finally:
            spinner.cancel()
            await asyncio.gather(spinner, return_exceptions=True)


def _evidence(args: argparse.Namespace) -> list[dict]:
    items: list[dict] = []
    for raw in args.evidence or ():
        try:
            item = json.loads(raw)
        except ValueError:
            raise JitgateError(f"--evidence must be a JSON object: {raw[:60]!r}") from None
        items.append(item)
    if args.evidence_file:
        loaded = json.loads(Path(args.evidence_file).read_text())
        items.extend(loaded if isinstance(loaded, list) else [loaded])
    for kind, title, url in args.link or ():
        items.append({"kind": kind, "title": title, "url": url})
    for kind, title, text in args.excerpt or ():
        items.append({"kind": kind, "title": title, "excerpt": sys.stdin.read() if text == "-" else text})
    return items


def _arguments(raw: str | None) -> dict | None:
    """``--arguments``: a JSON object, or ``@FILE`` holding one."""
    if raw is None:
        return None
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    try:
        value = json.loads(text)
    except ValueError:
        raise JitgateError(f"--arguments must be a JSON object (or @FILE holding one): {text[:60]!r}") from None
    if not isinstance(value, dict):
        raise JitgateError("--arguments must be a JSON object (or @FILE holding one)")
    return value


def _links(values: list[str] | None) -> list[str]:
    """Delegation links given as JWTs or as files holding one link per line (root first)."""
    links: list[str] = []
    for value in values or ():
        path = Path(value)
        if value.count(".") != 2 or path.exists():
            links.extend(line.strip() for line in path.read_text().splitlines() if line.strip())
        else:
            links.append(value.strip())
    return links


# ---------------------------------------------------------------------- commands
def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out or f"{args.id}.pem")
    if out.exists():
        _err(f"jitgate agent: {out} exists; not overwritten")
        return EXIT_ERROR
    pem, jwk = generate_key("Ed25519" if args.ed25519 else "P-256")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    pub = out.with_suffix(".jwk.json")
    pub.write_text(json.dumps(jwk, indent=2) + "\n")
    lines = [f"  - id: {json.dumps(args.id)}"]
    if args.owner:
        lines.append(f"    owner: {json.dumps(args.owner)}")
    if args.team:
        lines.append(f"    team: {json.dumps(args.team)}")
    if args.can_delegate:
        lines.append("    can_delegate: true")
    lines.append(f"    public_key: {json.dumps(jwk)}")
    print("\n".join(lines))
    _err(f"private key: {out} (mode 600); public key: {pub}\n"
         f"add the entry above under 'agents:' in the agents file, or run: "
         f"jitgate agents add {args.id} --owner {args.owner or 'OWNER'} --team {args.team or 'TEAM'} --public-key {pub}")
    return EXIT_GRANTED


def cmd_request(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        esc = await client.propose(
            action=args.action, target=args.target, justification=args.justification, evidence=_evidence(args),
            duration=args.duration, confidence=args.confidence, tool=args.tool, dataset=args.dataset,
            ticket=args.ticket, delegation=_links(args.delegation), idempotency_key=args.idempotency_key,
            arguments=_arguments(args.arguments))
        print(esc.id, flush=True)
        if args.wait is None:
            if esc.status in ("denied", "expired", "cancelled", "revoked"):
                outcome(esc)  # raises the matching error: exit code and reason
            _err(esc.summary())
            return EXIT_GRANTED
        esc = await _Progress().wait(client, esc.id, args.wait, current=esc)
        grant = outcome(esc)
        _err(f"approved{' by ' + ', '.join(grant.approvers) if grant.approvers else ' by policy'}"
             f"; collect the token with: jitgate agent token {grant.request_id}")
        return EXIT_GRANTED
    return _run(args, work)


def cmd_status(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        esc = await client.status(args.id)
        if args.wait:
            try:
                esc = await _Progress().wait(client, args.id, args.wait, current=esc)
            except TimedOut:
                print(json.dumps((await client.status(args.id)).raw, indent=2))
                raise
        print(json.dumps(esc.raw, indent=2))
        return _STATUS_EXIT.get(esc.status, EXIT_GRANTED)
    return _run(args, work)


def export_lines(env: dict[str, str]) -> str:
    """``export NAME='value'`` lines a POSIX shell evaluates (``eval "$(jitgate agent token ID --export)"``)."""
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())


def write_credential(path: str, credential: dict) -> None:
    """Write the credential as JSON to a new file only its owner can read (0600; an existing
    file is refused rather than overwritten)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(credential, f)
        f.write("\n")


def cmd_token(args: argparse.Namespace) -> int:
    if (args.svid or args.workload_api) and not (args.dpop_key or args.no_dpop):
        # The process's own DPoP key dies with it: the printed token could never be used.
        _err("jitgate agent: with an SVID, give --dpop-key PEM (the key `proof --key` will sign with) or --no-dpop")
        return EXIT_ERROR

    async def work(client: Client) -> int:
        esc = await client.status(args.id)
        if args.wait:
            esc = await _Progress().wait(client, args.id, args.wait, current=esc)
        outcome(esc)  # denied, expired, ... exit with their codes
        token = await client.collect(args.id)
        if args.credential_file:
            if token.credential is None:
                _err("jitgate agent: this grant carries no credential (its target has no credential plugin)")
                return EXIT_ERROR
            write_credential(args.credential_file, token.credential)
            _err(f"credential written to {args.credential_file} (mode 0600); it stops working when the grant ends")
        if args.json:
            body = {"access_token": token.access_token, "token_type": token.token_type,
                    "expires_in": token.expires_in, "authorization_details": token.authorization_details}
            if token.credential is not None:
                body["credential"] = token.credential
            print(json.dumps(body))
        elif args.export:
            print(export_lines({"JITGATE_ACCESS_TOKEN": token.access_token, **token.credential_env}))
        else:
            print(token.access_token)
        if token.dpop_bound:
            _err("DPoP-bound token: send it as 'Authorization: DPoP <token>' with a proof from "
                 "`jitgate agent proof METHOD URL --token <token>`")
        return EXIT_GRANTED
    return _run(args, work)


def cmd_proof(args: argparse.Namespace) -> int:
    try:
        key = load_key(Path(args.key)) if args.key else None
    except ConfigError as exc:
        _err(f"jitgate agent: cannot load the key: {exc.detail}")
        return EXIT_ERROR
    if key is None:
        _err("jitgate agent: give --key (the key the token is bound to)")
        return EXIT_ERROR
    print(make_dpop_proof(key, method=args.method, url=args.target_url, access_token=args.token))
    return EXIT_GRANTED


def cmd_complete(args: argparse.Namespace) -> int:
    outcome = None
    if args.outcome is not None:
        outcome = TaskOutcome(args.outcome, args.summary, tuple(args.evidence or ()))
    elif args.summary is not None or args.evidence:
        _err("jitgate agent complete: --summary and --evidence go with --outcome success|failure")
        return EXIT_ERROR

    async def work(client: Client) -> int:
        esc = await client.complete(args.id, outcome)
        _err(f"{esc.id}: {esc.status}")
        return EXIT_GRANTED
    return _run(args, work)


def cmd_cancel(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        esc = await client.cancel(args.id)
        _err(f"{esc.id}: {esc.status}")
        return EXIT_GRANTED
    return _run(args, work)


def cmd_delegate(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        link = await client.delegate(args.to, actions=args.actions.split(","), targets=args.targets.split(","),
                                     ttl_s=args.ttl, reason=args.reason)
        for prior in _links(args.chain):
            print(prior)
        print(link)
        return EXIT_GRANTED
    return _run(args, work)


# ---------------------------------------------------------------------- parser
# The module docstring, as a terminal shows it: without reStructuredText's ``literal`` marks.
DESCRIPTION = (__doc__ or "").replace("``", "")


def version() -> str:
    """The installed version: of jitgate, or of a client-only distribution of it."""
    from importlib.metadata import PackageNotFoundError  # noqa: PLC0415
    from importlib.metadata import version as dist_version  # noqa: PLC0415

    for dist in ("jitgate", "jitgate-client"):
        try:
            return dist_version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def register(subparsers: Any) -> None:
    """Add ``agent`` and its sub-commands to a ``jitgate`` argument parser."""
    agent = subparsers.add_parser("agent", help="the agent side: keys, requests, tokens (exit 0 granted, 2 denied, "
                                  "3 expired, 4 timed out)", description=DESCRIPTION,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    add_commands(agent)


def add_commands(agent: argparse.ArgumentParser) -> None:
    """The agent sub-commands, on ``jitgate agent`` or on ``jitgate-agent`` itself."""
    sub = agent.add_subparsers(dest="agent_cmd", required=True)

    s = sub.add_parser("keygen", help="write a key pair (P-256 by default) and print the agents.yaml entry")
    s.add_argument("--id", required=True, help="the agent id to register")
    s.add_argument("--owner", help="approver id of the responsible person")
    s.add_argument("--team")
    s.add_argument("--can-delegate", action="store_true", help="the entry may sign delegations")
    s.add_argument("--ed25519", action="store_true", help="an Ed25519 key instead of P-256")
    s.add_argument("--out", help="private key file (default: ID.pem); never overwritten")
    s.set_defaults(fn=cmd_keygen)

    s = sub.add_parser("request", help="propose an escalation; prints its id (--wait: until decided)")
    _connection_options(s)
    s.add_argument("--action", required=True)
    s.add_argument("--target", required=True)
    s.add_argument("--justification", "-j", required=True)
    s.add_argument("--duration", type=int, default=300, help="seconds (default 300)")
    s.add_argument("--evidence", action="append", metavar="JSON", help='{"kind","title","url"|"excerpt"}; repeatable')
    s.add_argument("--evidence-file", metavar="FILE", help="a JSON list of evidence objects")
    s.add_argument("--link", nargs=3, action="append", metavar=("KIND", "TITLE", "URL"), help="evidence link; repeatable")
    s.add_argument("--excerpt", nargs=3, action="append", metavar=("KIND", "TITLE", "TEXT"),
                   help="evidence excerpt ('-' reads stdin); repeatable")
    s.add_argument("--confidence", type=float)
    s.add_argument("--ticket")
    s.add_argument("--tool", help="the tool the agent will use (checked against the target's tools)")
    s.add_argument("--dataset", help="the dataset it will touch (checked against the target's datasets)")
    s.add_argument("--arguments", metavar="JSON|@FILE",
                   help='what it will pass to the tool, a JSON object, e.g. \'{"amount": 120}\' (policy reads it)')
    s.add_argument("--delegation", action="append", metavar="LINK|FILE",
                   help="a delegation link, or a file of links one per line (root first); repeatable")
    s.add_argument("--idempotency-key", help="reuse to make a retried command find the same request")
    s.add_argument("--wait", type=float, nargs="?", const=600.0, metavar="SECONDS",
                   help="wait for the decision (default 600 s) with progress on stderr")
    s.set_defaults(fn=cmd_request)

    s = sub.add_parser("status", help="print a request as JSON (--wait: until decided)")
    _connection_options(s)
    s.add_argument("id")
    s.add_argument("--wait", type=float, nargs="?", const=600.0, metavar="SECONDS")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("token", help="collect the token of an approved request and print it (once)")
    _connection_options(s)
    s.add_argument("id")
    s.add_argument("--wait", type=float, nargs="?", const=600.0, metavar="SECONDS", help="wait for approval first")
    out = s.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the whole token response (with the credential)")
    out.add_argument("--export", action="store_true",
                     help="print shell export lines: JITGATE_ACCESS_TOKEN and the target credential's variables "
                          "(e.g. PGUSER, PGPASSWORD, DATABASE_URL); use with eval")
    s.add_argument("--credential-file", metavar="PATH",
                   help="write the target system's credential as JSON to PATH (a new file, mode 0600)")
    s.set_defaults(fn=cmd_token)

    s = sub.add_parser("proof", help="print a DPoP proof for one call to a resource server")
    s.add_argument("method")
    s.add_argument("target_url", metavar="URL")
    s.add_argument("--token", help="the access token it accompanies (adds ath)")
    s.add_argument("--key", default=os.environ.get("JITGATE_AGENT_KEY"), help="the agent key (JITGATE_AGENT_KEY)")
    s.set_defaults(fn=cmd_proof)

    for name, fn, text in (("complete", cmd_complete, "report the task done: the grant ends now"),
                           ("cancel", cmd_cancel, "withdraw a pending request")):
        s = sub.add_parser(name, help=text)
        _connection_options(s)
        s.add_argument("id")
        s.set_defaults(fn=fn)
        if name == "complete":
            s.add_argument("--outcome", choices=("success", "failure"),
                           help="the resulting action, recorded with the completion")
            s.add_argument("--summary", help="what was done (at most 500 characters; with --outcome)")
            s.add_argument("--evidence", action="append", metavar="URL",
                           help="an https:// link showing the result (repeatable, at most 10; with --outcome)")

    s = sub.add_parser("delegate", help="sign a delegation link to a sub-agent and print the chain to hand over")
    _connection_options(s)
    s.add_argument("--to", required=True, help="the sub-agent's id")
    s.add_argument("--actions", required=True, help="comma-separated; a trailing * is a prefix (db.*)")
    s.add_argument("--targets", required=True, help="comma-separated; a trailing * is a prefix (prod/*)")
    s.add_argument("--ttl", type=int, default=900, help="seconds the delegation holds (default 900)")
    s.add_argument("--reason")
    s.add_argument("--chain", action="append", metavar="LINK|FILE", help="the chain this agent received (printed first)")
    s.set_defaults(fn=cmd_delegate)


def main(argv: list[str] | None = None) -> int:
    """``jitgate-agent``: the same commands without the broker installed."""
    parser = argparse.ArgumentParser(prog="jitgate-agent", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"jitgate-agent {version()}")
    add_commands(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv[1:] if argv[:1] == ["agent"] else argv)  # `jitgate-agent agent ...` as before
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
