"""The ``jitgate`` command: run the broker, and the operator's tools.

Operator commands talk to Redis directly (they are for people who hold the Redis
credentials) and go through exactly the same lifecycle checks as a chat click.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any


from .config import environment, load_settings, redis_url_for_tools
from .errors import BrokerError
from .rules import POSTURES
from .filemodes import write_private

log = logging.getLogger("jitgate")


def version() -> str:
    """The installed jitgate's version (from the package metadata)."""
    from importlib.metadata import PackageNotFoundError  # noqa: PLC0415
    from importlib.metadata import version as dist_version  # noqa: PLC0415

    try:
        return dist_version("jitgate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


async def _with_broker(fn, *, decides: bool = False):
    """Build a broker without background jobs against the configured Redis; run ``fn``.

    ``decides``: the command asks the policies (an approval, a posture change, break-glass), so
    the policy set it loaded is recorded (``policy.loaded`` by ``cli: …``) unless it is the set
    last recorded (broker/policyversions.py)."""
    from .app import build, shutdown  # noqa: PLC0415
    from .redisconn import connect  # noqa: PLC0415

    settings = load_settings()
    settings = dataclasses.replace(settings, redis_url=redis_url_for_tools(settings))
    client = connect(settings.redis_url)
    # No desks here: notifications queue in the outbox for the serving broker to deliver.
    try:
        broker = await build(settings, redis=client, notifiers=[], desks=[], start_background=False)
    except BaseException:
        await client.aclose()
        raise
    try:
        if decides and broker.versions is not None:
            await broker.versions.operator(f"cli: jitgate {' '.join(sys.argv[1:3])} (os user {broker.lifecycle.os_user()})")
        return await fn(broker)
    finally:
        await shutdown(broker)


# ---------------------------------------------------------------------- serve
def cmd_serve(args) -> int:
    import uvicorn  # noqa: PLC0415

    from .app import create_app  # noqa: PLC0415

    settings = load_settings()
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    # The desks see where the broker really listens (the console refuses a public address).
    # The first-run banner (a live console sign-in link) only when asked for (`make run`):
    # a production start must not print a credential into its log.
    settings = dataclasses.replace(settings, host=host, port=port, first_run=bool(args.first_run))
    app = create_app(settings)
    # ws="none": the broker serves no WebSocket, so uvicorn loads no WebSocket stack (before 0.50
    # its default one imports websockets.legacy, deprecated since websockets 14).
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                            lifespan="on", timeout_graceful_shutdown=5, ws="none")
    server = _DrainingServer(config, app)
    server.run()
    # uvicorn reports a failed lifespan start-up (bad settings, broken policy) by exiting
    # the serve loop without "started": say so with a failing exit code.
    return 0 if server.started else 3


def _DrainingServer(config, app):  # noqa: N802 - a class made on demand (uvicorn is imported lazily)
    """uvicorn's server, draining the broker at the first SIGTERM/SIGINT (see Broker.drain)
    while uvicorn stops accepting connections and waits for the open ones."""
    import asyncio  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    class Server(uvicorn.Server):
        draining: asyncio.Task | None = None

        def handle_exit(self, sig, frame) -> None:
            broker = getattr(app.state, "broker", None)
            if self.draining is None and broker is not None:
                try:
                    self.draining = asyncio.get_running_loop().create_task(broker.drain())
                except RuntimeError:  # no loop running: nothing is being served
                    pass
            super().handle_exit(sig, frame)

    return Server(config)


# ---------------------------------------------------------------------- init
def cmd_init(args) -> int:
    """Write a .env with fresh secrets and a demo agent (never overwrites)."""
    from .identity import add_agent, generate_key  # noqa: PLC0415
    from .starter import place  # noqa: PLC0415

    env = Path(args.env)
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    if env.exists():
        print(f"{env} exists; left as it is")
    else:
        # A checkout's policies/ and examples/, or copies of the shipped ones in the data folder.
        placed = place(Path.cwd(), data)
        kek = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        lines = [
            "# written by `jitgate init`; see .env.example for every setting",
            f"JITGATE_ISSUER=http://127.0.0.1:{args.port}",
            f"JITGATE_PORT={args.port}",
            f"JITGATE_KEY_ENCRYPTION_KEY={kek}",
            f"JITGATE_DATA_DIR={data}",
            f"JITGATE_POLICY_DIR={placed['JITGATE_POLICY_DIR'][0]}",
            f"JITGATE_AGENTS_FILE={data}/agents.yaml",
            f"JITGATE_APPROVERS_FILE={placed['JITGATE_APPROVERS_FILE'][0]}",
            f"JITGATE_TARGETS_FILE={placed['JITGATE_TARGETS_FILE'][0]}",
        ]
        write_private(env, ("\n".join(lines) + "\n").encode())
        print(f"wrote {env}")
        for setting, (path, copied) in placed.items():
            if copied:
                print(f"{setting}={path}: a copy of the starter files, yours to edit")
    key_file = data / "demo-agent.pem"
    agents_file = data / "agents.yaml"
    if not key_file.exists():
        pem, jwk = generate_key("Ed25519")
        write_private(key_file, pem)
        add_agent(agents_file, id="demo-agent", owner="dave", team="platform", public_jwk=jwk)
        print(f"demo agent 'demo-agent': private key {key_file}, registered in {agents_file}")
    return 0


# ---------------------------------------------------------------------- agents
def cmd_agents_add(args) -> int:
    from .identity import add_agent, generate_key  # noqa: PLC0415

    path = Path(args.file or environment().get("JITGATE_AGENTS_FILE", "agents.yaml"))
    if args.generate:
        pem, jwk = generate_key(args.kind)
        out = Path(args.generate)
        if out.exists():
            print(f"{out} exists; refusing to overwrite a private key", file=sys.stderr)
            return 2
        write_private(out, pem)
        print(f"private key written to {out} (give it to the agent only)")
    elif args.public_key:
        jwk = json.loads(Path(args.public_key).read_text())
    else:
        print("give --public-key FILE (a public JWK) or --generate KEYFILE", file=sys.stderr)
        return 2
    agent = add_agent(path, id=args.id, owner=args.owner, team=args.team, public_jwk=jwk)
    print(f"registered agent {agent.id} (kid {agent.kid}) in {path}")
    return 0


def cmd_agents_list(args) -> int:
    from .identity import Registry  # noqa: PLC0415

    reg = Registry.load(Path(environment().get("JITGATE_AGENTS_FILE", "agents.yaml")))
    if args.json:
        _print_json({
            "agents": [{"id": a.id, "owner": a.owner, "team": a.team, "kid": a.kid or None,
                        "can_delegate": a.can_delegate, "disabled": a.disabled} for a in (*reg.agents, *reg.disabled)],
            "resource_servers": [{"id": r.id, "kid": r.kid} for r in reg.resource_servers],
        })
        return 0
    for a in (*reg.agents, *reg.disabled):
        print(f"{a.id}\towner={a.owner or '-'}\tteam={a.team or '-'}\tkid={a.kid}" + ("\tDISABLED" if a.disabled else ""))
    for r in reg.resource_servers:
        print(f"{r.id}\tresource-server\tkid={r.kid}\taudiences={','.join(r.audiences or (r.id,))}")
    return 0


def cmd_agents_disable(args) -> int:
    """Mark an agent disabled (or enabled again) in the agents file, the source of truth: every
    broker picks the change up on its next reload (about 2 s), refuses the agent at once and
    ends what it holds."""
    from .identity import set_disabled  # noqa: PLC0415

    path = Path(args.file or environment().get("JITGATE_AGENTS_FILE", "agents.yaml"))
    disable = args.sub == "disable"
    changed = set_disabled(path, args.id, disable)
    state = "disabled" if disable else "enabled"
    if not changed:
        print(f"agent {args.id} is already {state} in {path}")
    elif disable:
        print(f"agent {args.id} disabled in {path}: the brokers refuse it and revoke its grants on their next "
              "reload (within about 2 s)")
    else:
        print(f"agent {args.id} enabled again in {path}")
    return 0


def cmd_assertion(args) -> int:
    """Print a fresh agent assertion (for curl walk-throughs)."""
    from .identity import make_assertion  # noqa: PLC0415
    from .jose import read_private_key  # noqa: PLC0415

    settings = load_settings()
    key = read_private_key(args.key)
    print(make_assertion(key, agent_id=args.agent, audience=settings.issuer, lifetime_s=args.lifetime))
    return 0


# ---------------------------------------------------------------------- requests
def _print_request(req, verbose: bool = False) -> None:
    d = req.to_public()
    if verbose:
        _print_json(d)
        return
    need = d["decision"].get("approvals_required", 0)
    print(f"{d['id']}  {d['status']:<9}  {d['agent']:<16} {d['action']:<12} {d['target']:<28} "
          f"approvals {len(d['approvals'])}/{need}  {d['created_at']}")


def cmd_requests_list(args) -> int:
    async def run(broker):
        reqs = [r for r in await broker.store.scan_requests(limit=args.limit)
                if not args.status or r.status == args.status]
        if args.json:
            _print_json([r.to_public() for r in reqs])
            return 0
        for r in reqs:
            _print_request(r)
        return 0

    return asyncio.run(_with_broker(run))


def cmd_requests_show(args) -> int:
    async def run(broker):
        req = await broker.lifecycle.get(args.id)
        d = req.to_public()
        if req.grant_jti:
            # The token's use as introspection aggregated it (issue 18, item 6), while kept.
            d["token_use"] = await broker.store.token_use(req.id, req.grant_jti)
        _print_json(d)
        return 0

    return asyncio.run(_with_broker(run))


def cmd_requests_decide(args) -> int:
    async def run(broker):
        life = broker.lifecycle
        approver = life.operator_approver(args.as_)
        who = f"os:{life.os_user()}"
        if args.decision == "approve":
            req = await life.approve(args.id, approver, channel="cli", platform_user=who, duration_s=args.duration)
        else:
            req = await life.deny(args.id, approver, channel="cli", reason=args.reason or "", platform_user=who)
        _print_request(req)
        return 0

    return asyncio.run(_with_broker(run, decides=True))


def cmd_requests_revoke(args) -> int:
    async def run(broker):
        life = broker.lifecycle
        req = await life.revoke(args.id, by=f"cli:{args.as_ or life.os_user()}", reason=args.reason, channel="cli")
        _print_request(req)
        return 0

    return asyncio.run(_with_broker(run))


def cmd_kill_switch(args) -> int:
    """The kill switch: deny every matching pending request and revoke every matching grant."""
    from .killswitch import Selector  # noqa: PLC0415

    scope, value = next((name, getattr(args, name)) for name in ("agent", "owner", "target")
                        if getattr(args, name) is not None) if not args.all else ("all", None)
    selector = Selector.of(scope, value)
    reason = (args.reason or "").strip()
    if not reason:
        print("jitgate: --reason must say why (it reaches the agents and the audit log)", file=sys.stderr)
        return 2

    async def run(broker):
        life = broker.lifecycle
        approver = life.operator_approver(args.as_)
        pending, grants = await life.kill_switch_preview(selector, approver)
        if not args.yes:
            print(f"The kill switch ({selector.describe()}) will revoke {grants} grant(s) and deny "
                  f"{pending} pending request(s) now, with the reason: {reason}")
            try:
                answer = input("Type 'revoke' to go on: ")
            except EOFError:
                answer = ""
            if answer.strip() != "revoke":
                print("nothing was changed", file=sys.stderr)
                return 1
        result = await life.kill_switch(selector, approver, reason=reason, channel="cli",
                                        platform_user=f"os:{life.os_user()}")
        if args.json:
            _print_json(result.to_dict())
        else:
            print(result.summary())
        return 0

    return asyncio.run(_with_broker(run))


def cmd_posture(args) -> int:
    async def run(broker):
        life = broker.lifecycle
        if args.level:
            await life.set_posture(args.level, life.operator_approver(args.as_ or ""), channel="cli")
        print(await life.posture())
        return 0

    if args.level and not args.as_:
        print("setting the posture needs --as APPROVER_ID (a member of the security group)", file=sys.stderr)
        return 2
    return asyncio.run(_with_broker(run, decides=True))


def _dpop_key(path: str, subject: str) -> tuple[object, str]:
    """(private key, RFC 7638 thumbprint) of the engineer's DPoP key in ``path``; a new P-256
    key is written there (mode 600) when the file does not exist."""
    from .identity import generate_key, jwk_thumbprint, load_private_key, public_jwk  # noqa: PLC0415

    if subject != "me":
        raise BrokerError("--dpop-key binds a token for yourself ('me'); an agent proves its own key when it collects")
    file = Path(path)
    if not file.exists():
        pem, _jwk = generate_key("P-256")
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        print(f"wrote a new DPoP key to {file} (mode 600); the token will be bound to it", file=sys.stderr)
    try:
        key = load_private_key(file.read_bytes())
    except OSError as e:
        raise BrokerError(f"cannot read {file}: {e.strerror}") from None
    return key, jwk_thumbprint(public_jwk(key))


def _dpop_recipe(key_file: str, target: str) -> str:
    """How to present a DPoP-bound token: the header pair, with a fresh proof per request."""
    return (f"the token is DPoP-bound to the key in {key_file} (RFC 9449): send it as `Authorization: DPoP <token>` "
            "with a new proof on every request, e.g.\n"
            f"  TOKEN=<the token above>; URL=<the {target} URL you call>\n"
            f'  curl -H "Authorization: DPoP $TOKEN" '
            f'-H "DPoP: $(jitgate agent proof GET "$URL" --token "$TOKEN" --key {key_file})" "$URL"')


def cmd_breakglass(args) -> int:
    """Break-glass from a terminal (same checks as the chat commands)."""

    from .model import iso  # noqa: PLC0415

    async def run(broker):
        bg = broker.breakglass
        life = broker.lifecycle
        who = f"os:{life.os_user()}"
        if args.sub == "grant":
            engineer = life.operator_approver(args.as_)
            dpop = _dpop_key(args.dpop_key, args.subject) if args.dpop_key else None
            jkt = dpop[1] if dpop else None
            pv = await bg.preview(engineer, subject=args.subject, action=args.action, target=args.target,
                                  duration_s=args.duration, reason=" ".join(args.reason), incident=args.incident,
                                  dpop_jkt=jkt)
            print(f"will grant {pv.action} on {pv.target} to {pv.subject} for {pv.duration_s // 60} min"
                  + (f" ({pv.note})" if pv.note else ""), file=sys.stderr)
            if not args.yes:
                answer = input("type the target to confirm: ") if sys.stdin.isatty() else ""
                if answer.strip() != pv.target:
                    print("not confirmed; nothing granted", file=sys.stderr)
                    return 1
            g = await bg.grant(engineer, subject=args.subject, action=args.action, target=args.target,
                               duration_s=args.duration, reason=" ".join(args.reason), incident=args.incident,
                               channel="cli", platform_user=who, dpop_jkt=jkt)
            _print_request(g.request)
            if g.token is not None:
                print(g.token.access_token)  # once, to this terminal only
                if dpop:
                    print(_dpop_recipe(args.dpop_key, args.target), file=sys.stderr)
        elif args.sub == "reviews" and args.json:
            _print_json([r.to_public() for r in await bg.pending_reviews()])
        elif args.sub == "reviews":
            for r in await bg.pending_reviews():
                print(f"{r.id}  {r.engineer:<10} {r.proposal.action:<10} {r.proposal.target:<28} review due {iso(r.review_due)}")
        elif args.sub == "review":
            req = await bg.acknowledge(args.id, life.operator_approver(args.as_), comment=" ".join(args.comment), channel="cli")
            print(f"review of {req.id} acknowledged by {req.reviewed_by}")
        elif args.sub == "reinstate":
            await bg.reinstate(args.engineer, life.operator_approver(args.as_), channel="cli")
            print(f"{args.engineer}'s break-glass right reinstated")
        return 0

    return asyncio.run(_with_broker(run, decides=True))


# ---------------------------------------------------------------------- audit
def _open(path: str, mode: str = "r"):
    """A file the operator named; a missing or unreadable one is a clear error, not a traceback."""
    try:
        # Text with a bad byte reads as U+FFFD: that line then fails its hash, a clear refusal.
        return open(path, mode) if "b" in mode else open(path, mode, encoding="utf-8", errors="replace")
    except OSError as e:
        raise BrokerError(f"cannot read {path}: {e.strerror}") from None


def cmd_audit_verify(args) -> int:
    from .audit import read_checkpoints, verify, verify_export  # noqa: PLC0415

    if args.file:
        # An export on its own, offline: no settings, no Redis.
        from .audit import ExportError  # noqa: PLC0415

        try:
            with _open(args.file) as f:
                print(verify_export(f))
        except ExportError as e:
            print(f"export BROKEN: {e.detail}")
            return 1
        return 0
    recorded = None
    if args.checkpoints:
        with _open(args.checkpoints) as f:
            recorded = read_checkpoints(f)

    async def run(broker):
        s = broker.store
        result = await verify(broker.redis, s.audit_stream, s.audit_head, broker.lifecycle.audit.key, recorded)
        print(result)
        return 0 if result.ok else 1

    return asyncio.run(_with_broker(run))


def cmd_audit_policies(args) -> int:
    """The policy versions the audit log holds (``policy.loaded``, ``policy.load_failed``), oldest
    first, and the set this command loaded; with ``--json`` the entries themselves."""
    from .audit import entries  # noqa: PLC0415
    from .policyversions import LOAD_FAILED, LOADED  # noqa: PLC0415

    async def run(broker):
        s = broker.store
        found = []
        async for entry in entries(broker.redis, s.audit_stream):
            body = entry.body()
            if body and body.get("type") in (LOADED, LOAD_FAILED):
                found.append((entry.seq, body))
        if args.json:
            _print_json([{"seq": seq, **body} for seq, body in found])
            return 0
        for seq, body in found:
            d, actor = body.get("data") or {}, body.get("actor") or {}
            who = f"by {actor.get('by', '?')} on {actor.get('replica', '?')}"
            files = ", ".join(f"{f.get('name')}={str(f.get('sha256'))[:12]}" for f in d.get("files") or [])
            if body["type"] == LOADED:
                was = d.get("previous_policy_set_hash")
                print(f"#{seq} {body.get('at')}  loaded {d.get('policy_set_hash')}"
                      f"{f' (was {str(was)[:16]})' if was else ''}  {who}  files: {files}")
            else:
                print(f"#{seq} {body.get('at')}  FAILED {d.get('attempted_policy_set_hash')} (kept "
                      f"{str(d.get('policy_set_hash'))[:16]})  {who}  {d.get('error')}")
        print(f"policy set loaded by this command: {broker.gate.policy_set_hash}")
        return 0

    return asyncio.run(_with_broker(run))


def cmd_audit_prove(args) -> int:
    """Write the evidence bundle of one grant (its entries, their inclusion proofs, the checkpoint)."""
    from .audit import bundle_bytes, prove  # noqa: PLC0415

    async def run(broker):
        bundle = await prove(broker.redis, broker.store.audit_stream, request_id=args.request, jti=args.jti)
        raw = bundle_bytes(bundle)
        if args.out and args.out != "-":
            with open(args.out, "wb") as f:
                f.write(raw)
            print(f"wrote {len(bundle['entries'])} entries of request {bundle['request']} with their inclusion proofs "
                  f"to {args.out}; check it with `jitgate audit check-proof {args.out} --key "
                  f"'{broker.lifecycle.audit.key.verifier_key}'`", file=sys.stderr)
        else:
            sys.stdout.write(raw.decode())
        return 0

    return asyncio.run(_with_broker(run))


def cmd_audit_check_proof(args) -> int:
    """Verify a bundle offline: only the audit public key, no settings, no Redis."""
    from .audit import check_bundle  # noqa: PLC0415

    vkey = args.key
    if args.key_file:
        with _open(args.key_file) as f:
            text = f.read().strip()
        try:
            vkey = json.loads(text)["verifier_key"] if text.startswith("{") else text
        except (ValueError, KeyError, TypeError):
            raise BrokerError(f"{args.key_file} holds no audit verifier key") from None
    if not vkey:
        raise BrokerError("give the audit key: --key 'origin+keyid+base64' or --key-file "
                          "(the document at /.well-known/jitgate-audit-key)")
    with _open(args.bundle, "rb") as f:
        raw = f.read()
    result = check_bundle(raw, vkey)
    print(result)
    return 0 if result.ok else 1


def cmd_audit_key(args) -> int:
    """Print the audit verifier key (what auditors pin; also at /.well-known/jitgate-audit-key)."""
    async def run(broker):
        print(broker.lifecycle.audit.key.verifier_key)
        return 0

    return asyncio.run(_with_broker(run))


def cmd_audit_seal(args) -> int:
    """Seal what is unsealed now and sign a checkpoint (what the serving broker does on its own)."""
    from .auditsinks import Sinks  # noqa: PLC0415

    async def run(broker):
        audit = broker.lifecycle.audit
        audit.sinks = Sinks.from_settings(broker.settings)
        total = 0
        while True:
            n = await audit.seal(force_checkpoint=total == 0)
            total += n
            if n == 0:
                break
        print(f"sealed {total} entries; checkpoint signed")
        return 0

    return asyncio.run(_with_broker(run))


def cmd_audit_export(args) -> int:
    from .audit import export  # noqa: PLC0415

    async def run(broker):
        s = broker.store
        if args.out and args.out != "-":
            with open(args.out, "w") as f:
                n = await export(broker.redis, s.audit_stream, f, s.audit_head)
            print(f"exported {n} entries to {args.out}", file=sys.stderr)
        else:
            await export(broker.redis, s.audit_stream, sys.stdout, s.audit_head)
        return 0

    return asyncio.run(_with_broker(run))


def cmd_audit_tail(args) -> int:
    """Stream sealed entries (at least once, resumable): the lines on stdout, then the cursor
    after each batch on stderr or in ``--cursor-file`` (written only once the lines are out)."""
    from .auditexport import Cursor, cursor_for_last, read_sealed, render, write_cursor_file  # noqa: PLC0415
    from .translog import origin_of  # noqa: PLC0415

    cursor_file = Path(args.cursor_file) if args.cursor_file else None
    start: Cursor | None = None
    if args.from_start:
        start = Cursor()
    elif args.cursor:
        start = Cursor.parse(args.cursor)
    elif cursor_file is not None and cursor_file.exists():
        with _open(str(cursor_file)) as f:
            start = Cursor.parse(f.read().strip())

    async def run(broker):
        redis, stream = broker.redis, broker.store.audit_stream
        origin = origin_of(broker.settings.issuer)
        cur = start if start is not None else await cursor_for_last(redis, stream, args.last)
        out = sys.stdout.buffer
        while True:
            b = await read_sealed(redis, stream, cur, args.batch)
            if b.gap:
                print(f"jitgate: seq {b.gap[0]} to {b.gap[1]} were trimmed before they were read "
                      "(the `audit export` file made before the trim holds them)", file=sys.stderr)
            if b.entries:
                out.write(b"".join(render(e, args.format, origin) + b"\n" for e in b.entries))
                out.flush()
                cur = b.cursor
                if cursor_file is not None:
                    write_cursor_file(cursor_file, cur)
                else:
                    print(f"cursor: {cur}", file=sys.stderr, flush=True)
            if len(b.entries) >= args.batch:
                continue
            if not args.follow:
                return 0
            await asyncio.sleep(args.interval)

    try:
        return asyncio.run(_with_broker(run))
    except KeyboardInterrupt:
        return 130


def cmd_audit_trim(args) -> int:
    """Remove the oldest audit entries, only those the export file holds (see broker/audit.py)."""
    import hashlib  # noqa: PLC0415

    from .audit import parse_before, plan_trim, trim  # noqa: PLC0415
    from .model import iso  # noqa: PLC0415

    before = parse_before(args.before)
    digest = hashlib.sha256()  # of the file as read (recorded in the audit.trimmed entry)

    def lines(f):
        for raw in f:
            digest.update(raw)
            yield raw.decode(errors="replace")  # as _open: a bad byte fails that line's hash

    async def run(broker):
        s, life = broker.store, broker.lifecycle
        with _open(args.exported, "rb") as f:
            plan = await plan_trim(broker.redis, s.audit_stream, s.audit_head, before, lines(f), broker.lifecycle.audit.key)
            for raw in f:  # the rest of the file, past the entries to remove
                digest.update(raw)
        print(f"will remove {plan}", file=sys.stderr)
        if not args.yes:
            answer = input("type 'trim' to confirm: ") if sys.stdin.isatty() else ""
            if answer.strip() != "trim":
                print("not confirmed; nothing trimmed", file=sys.stderr)
                return 1
        await trim(broker.redis, s.audit_stream, s.audit_head, plan, at=iso(life.clock.now()),
                   actor={"operator": f"os:{life.os_user()}", "channel": "cli"},
                   before=args.before, export_sha256=digest.hexdigest())
        print(f"trimmed {plan.count} entries (seq {plan.first_seq} to {plan.last_seq}); the tree's compact state "
              f"after them is kept (root {plan.last_hash} of {plan.frontier.size} leaves)")
        return 0

    return asyncio.run(_with_broker(run))


# ---------------------------------------------------------------------- policy
def cmd_policy_check(args) -> int:
    """Dry-run a proposal file ({"agent": ..., "action": ..., ...}) and explain the decision."""
    import time  # noqa: PLC0415

    from .app import principals  # noqa: PLC0415
    from .context import build_context  # noqa: PLC0415
    from .directory import Directory  # noqa: PLC0415
    from .identity import Registry  # noqa: PLC0415
    from .model import Proposal  # noqa: PLC0415
    from .policy import PolicyGate  # noqa: PLC0415

    env = environment()
    body = json.loads(Path(args.file).read_text())
    agent_id = body.pop("agent", None)
    posture = body.pop("posture", "normal")
    if not agent_id:
        print("the file needs an 'agent' field naming the requesting agent", file=sys.stderr)
        return 2
    proposal = Proposal.parse(body)
    registry = Registry.load(Path(env.get("JITGATE_AGENTS_FILE", "agents.yaml")))
    directory = Directory.load(Path(env.get("JITGATE_APPROVERS_FILE", "approvers.yaml")), Path(env.get("JITGATE_TARGETS_FILE", "targets.yaml")))
    gate = PolicyGate.load(Path(args.policy_dir or env.get("JITGATE_POLICY_DIR", "policies")), directory, principals(registry))
    context = build_context(
        confidence=proposal.confidence_pct, duration_s=proposal.duration_s, posture=posture,
        evidence_count=len(proposal.evidence), delegation_depth=len(proposal.delegation), now=time.time(),
        proposal=proposal,
    )
    result = gate.explain(agent_id=agent_id, action=proposal.action, target=proposal.target, context=context)
    print(json.dumps(result, indent=2, default=str))
    return 0 if result.get("decision", {}).get("outcome") != "deny" else 3


def cmd_policy_test(args) -> int:
    """Run the YAML test cases next to a policy set (broker/policytest.py)."""
    from .directory import Directory  # noqa: PLC0415
    from .errors import BrokerError  # noqa: PLC0415
    from .policytest import run, test_files  # noqa: PLC0415

    env = environment()
    policy_dir = Path(args.dir or env.get("JITGATE_POLICY_DIR", "policies"))
    try:
        directory = Directory.load(Path(args.approvers or env.get("JITGATE_APPROVERS_FILE", "approvers.yaml")),
                                   Path(args.targets or env.get("JITGATE_TARGETS_FILE", "targets.yaml")))
        report = run(policy_dir, directory, test_files(policy_dir, Path(args.tests) if args.tests else None))
    except BrokerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.render(verbose=args.verbose))
    if report.failed:
        return 1
    if args.require_coverage and report.uncovered:
        print("error: --require-coverage: every policy must decide at least one case", file=sys.stderr)
        return 1
    return 0


def _since_ms(text: str, now: float) -> int:
    from .policyhistory import parse_since  # noqa: PLC0415

    return int((now - parse_since(text)) * 1000)


def _report(args, value, render) -> int:
    from .policyhistory import as_json  # noqa: PLC0415

    if args.format == "json":
        _print_json(as_json(value))
    else:
        print(render(value))
    return 0


def cmd_policy_shadow_report(args) -> int:
    """The requests where the shadow policies would have decided otherwise (issue 23 item 2)."""
    from .policyhistory import render_shadow, shadow_report  # noqa: PLC0415

    async def run(broker):
        s = broker.store
        report = await shadow_report(broker.redis, s.audit_stream, _since_ms(args.since, broker.lifecycle._now()))
        return _report(args, report, render_shadow)

    return asyncio.run(_with_broker(run))


def cmd_policy_replay(args) -> int:
    """Re-decide the period's audited proposals with a candidate policy set (issue 23 item 3)."""
    from .app import principals  # noqa: PLC0415
    from .policy import PolicyGate  # noqa: PLC0415
    from .policyhistory import replay  # noqa: PLC0415

    async def run(broker):
        candidate = PolicyGate.load(Path(args.candidate), broker.directory, principals(broker.registry))
        s = broker.store
        report = await replay(broker.redis, s.audit_stream, _since_ms(args.since, broker.lifecycle._now()), candidate)
        return _report(args, report, lambda r: r.render())

    return asyncio.run(_with_broker(run))


def cmd_policy_coverage(args) -> int:
    """Policies that never decided, and the most frequent decisions per policy (issue 23 item 5)."""
    from .policyhistory import coverage, render_coverage  # noqa: PLC0415

    async def run(broker):
        s = broker.store
        report = await coverage(broker.redis, s.audit_stream, _since_ms(args.since, broker.lifecycle._now()),
                                broker.gate.policy_ids)
        return _report(args, report, render_coverage)

    return asyncio.run(_with_broker(run))


def cmd_policy_reviewed(args) -> int:
    """Record a ``policy.reviewed`` audit entry (issue 23 item 5)."""
    from .policyreview import record_review  # noqa: PLC0415

    operator = args.as_ or os.environ.get("JITGATE_OPERATOR") or os.environ.get("USER") or "unknown"

    async def run(broker):
        await record_review(broker.lifecycle, operator, args.note)
        print(f"policy review recorded by {operator} ({len(broker.gate.policy_ids)} policies in force)")
        return 0

    return asyncio.run(_with_broker(run))


JSON_HELP = "print JSON (each request as the API returns it) instead of a table"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
    p = argparse.ArgumentParser(prog="jitgate", description="Just-in-time privilege broker for AI agents")
    p.add_argument("--version", action="version", version=f"jitgate {version()}")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the broker (embedded Redis when REDIS_URL is unset)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--first-run", action="store_true",
                   help="print the console's first-run banner with a sign-in link (what `make run` does); "
                        "never use it in production")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("init", help="write a .env with fresh secrets and a demo agent key")
    s.add_argument("--env", default=".env")
    s.add_argument("--data-dir", default=".jitgate")
    s.add_argument("--port", type=int, default=8080)
    s.set_defaults(fn=cmd_init)

    s = sub.add_parser("assertion", help="print a fresh agent assertion (for curl)")
    s.add_argument("--agent", required=True)
    s.add_argument("--key", required=True, help="the agent's private key (PEM)")
    s.add_argument("--lifetime", type=int, default=60)
    s.set_defaults(fn=cmd_assertion)

    agents = sub.add_parser("agents", help="register agents").add_subparsers(dest="sub", required=True)
    s = agents.add_parser("add", help="register an agent's public key")
    s.add_argument("id")
    s.add_argument("--owner")
    s.add_argument("--team")
    s.add_argument("--public-key", help="file with the agent's public JWK")
    s.add_argument("--generate", metavar="KEYFILE", help="generate a key pair; write the private key here")
    s.add_argument("--kind", choices=["Ed25519", "P-256"], default="Ed25519")
    s.add_argument("--file", help="agents file (default JITGATE_AGENTS_FILE)")
    s.set_defaults(fn=cmd_agents_add)
    s = agents.add_parser("list", help="the registered agents and resource servers")
    s.add_argument("--json", action="store_true",
                   help='print JSON ({"agents": [...], "resource_servers": [...]}) instead of lines')
    s.set_defaults(fn=cmd_agents_list)
    for name, text in (("disable", "refuse an agent and end what it holds (edits the agents file)"),
                       ("enable", "let a disabled agent in again (edits the agents file)")):
        s = agents.add_parser(name, help=text)
        s.add_argument("id")
        s.add_argument("--file", help="agents file (default JITGATE_AGENTS_FILE)")
        s.set_defaults(fn=cmd_agents_disable)

    reqs = sub.add_parser("requests", help="inspect and decide requests").add_subparsers(dest="sub", required=True)
    s = reqs.add_parser("list")
    s.add_argument("--status")
    s.add_argument("--limit", type=int, default=100)
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(fn=cmd_requests_list)
    s = reqs.add_parser("show", help="one request as the API returns it (JSON)")
    s.add_argument("id")
    s.add_argument("--json", action="store_true", help="print JSON (what show always prints; accepted for symmetry with list)")
    s.set_defaults(fn=cmd_requests_show)
    for name in ("approve", "deny"):
        s = reqs.add_parser(name)
        s.add_argument("id")
        s.add_argument("--as", dest="as_", required=True, metavar="APPROVER_ID")
        s.add_argument("--reason")
        s.add_argument("--duration", type=int, help="approve for fewer seconds than requested")
        s.set_defaults(fn=cmd_requests_decide, decision=name)
    s = reqs.add_parser("revoke")
    s.add_argument("id")
    s.add_argument("--as", dest="as_")
    s.add_argument("--reason", required=True)
    s.set_defaults(fn=cmd_requests_revoke)

    s = sub.add_parser("revoke", help="the kill switch: deny every matching pending request and revoke every "
                                      "matching grant at once (security group)")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--agent", metavar="ID", help="everything this agent holds or asks for")
    which.add_argument("--owner", metavar="PERSON", help="everything of the agents this person owns (and their "
                                                         "break-glass grants)")
    which.add_argument("--target", metavar="T", help="everything on this target")
    which.add_argument("--all", action="store_true", help="everything open")
    s.add_argument("--reason", required=True, help="why (reaches the agents, the desks and the audit log)")
    s.add_argument("--as", dest="as_", required=True, metavar="APPROVER_ID", help="a member of the security group")
    s.add_argument("--yes", action="store_true", help="no confirmation prompt")
    s.add_argument("--json", action="store_true", help="print what was ended as JSON")
    s.set_defaults(fn=cmd_kill_switch)

    s = sub.add_parser("posture", help=f"show or set the risk posture ({', '.join(POSTURES)})")
    s.add_argument("level", nargs="?", choices=list(POSTURES))
    s.add_argument("--as", dest="as_", metavar="APPROVER_ID")
    s.set_defaults(fn=cmd_posture)

    bg = sub.add_parser("breakglass", help="emergency grants, reviews and reinstatement").add_subparsers(dest="sub", required=True)
    s = bg.add_parser("grant", help="grant emergency access at once (on-call group)")
    s.add_argument("subject", help="an agent id, or 'me'")
    s.add_argument("action")
    s.add_argument("target")
    s.add_argument("duration", type=int, help="seconds")
    s.add_argument("reason", nargs="+")
    s.add_argument("--incident")
    s.add_argument("--as", dest="as_", required=True, metavar="APPROVER_ID")
    s.add_argument("--yes", action="store_true", help="skip the confirmation prompt")
    s.add_argument("--dpop-key", metavar="FILE",
                   help="bind a token for yourself to this private key (DPoP, RFC 9449; made if missing); "
                        "required when the broker requires DPoP")
    s.set_defaults(fn=cmd_breakglass)
    s = bg.add_parser("reviews", help="break-glass grants awaiting review")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(fn=cmd_breakglass)
    s = bg.add_parser("review", help="acknowledge a review (security group)")
    s.add_argument("id")
    s.add_argument("comment", nargs="+")
    s.add_argument("--as", dest="as_", required=True, metavar="APPROVER_ID")
    s.set_defaults(fn=cmd_breakglass)
    s = bg.add_parser("reinstate", help="restore a suspended engineer's right (security group)")
    s.add_argument("engineer")
    s.add_argument("--as", dest="as_", required=True, metavar="APPROVER_ID")
    s.set_defaults(fn=cmd_breakglass)

    audit = sub.add_parser("audit", help="verify, prove, export or trim the audit log").add_subparsers(dest="sub",
                                                                                                       required=True)
    s = audit.add_parser("verify", help="recompute the Merkle tree and prove it against the signed checkpoints")
    s.add_argument("--file", help="verify this export file instead, offline")
    s.add_argument("--checkpoints", metavar="FILE",
                   help="also prove the log extends every checkpoint this file sink recorded (consistency proofs)")
    s.set_defaults(fn=cmd_audit_verify)
    s = audit.add_parser("prove", help="write the evidence bundle of one grant (entries, inclusion proofs, checkpoint)")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--request", metavar="ID")
    who.add_argument("--jti", metavar="JTI", help="the grant's token id")
    s.add_argument("--out", default="-")
    s.set_defaults(fn=cmd_audit_prove)
    s = audit.add_parser("check-proof", help="verify a proof bundle offline with the audit public key")
    s.add_argument("bundle")
    s.add_argument("--key", help="the audit verifier key (origin+keyid+base64), see `jitgate audit key`")
    s.add_argument("--key-file", help="a file holding it, or the JSON of /.well-known/jitgate-audit-key")
    s.set_defaults(fn=cmd_audit_check_proof)
    s = audit.add_parser("policies", help="the policy versions loaded or refused (policy.loaded, policy.load_failed)")
    s.add_argument("--json", action="store_true", help="print the entries as JSON")
    s.set_defaults(fn=cmd_audit_policies)
    s = audit.add_parser("key", help="print the audit verifier key auditors pin")
    s.set_defaults(fn=cmd_audit_key)
    s = audit.add_parser("seal", help="seal the unsealed tail now and sign a checkpoint")
    s.set_defaults(fn=cmd_audit_seal)
    s = audit.add_parser("export", help="the retained audit log as JSON Lines")
    s.add_argument("--out", default="-")
    s.set_defaults(fn=cmd_audit_export)
    s = audit.add_parser("tail", help="stream sealed entries (with their leaf index) as JSON or OCSF, resumable "
                                      "from a cursor")
    s.add_argument("--follow", "-f", action="store_true", help="keep streaming entries as they are sealed")
    s.add_argument("--format", choices=("json", "ocsf"), default="json")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--cursor", help="resume after this cursor (printed after each batch)")
    where.add_argument("--from-start", action="store_true", help="from the oldest retained entry")
    s.add_argument("--cursor-file", help="read the cursor from this file (when no --cursor/--from-start) and "
                                         "write it there after each batch instead of to stderr")
    s.add_argument("--last", type=int, default=10, help="without a cursor: start this many sealed entries back")
    s.add_argument("--batch", type=int, default=500, help="entries per batch (a cursor after each)")
    s.add_argument("--interval", type=float, default=0.5, help="seconds between polls with --follow")
    s.set_defaults(fn=cmd_audit_tail)
    s = audit.add_parser("trim", help="remove the oldest entries, only those a signed checkpoint covers and an export file holds")
    s.add_argument("--before", required=True, metavar="SEQ|TIME",
                   help="remove entries with a lower seq, or appended before this ISO 8601 time (UTC if no zone)")
    s.add_argument("--exported", required=True, metavar="FILE",
                   help="a `jitgate audit export` file that holds every entry to remove")
    s.add_argument("--yes", action="store_true", help="skip the confirmation prompt")
    s.set_defaults(fn=cmd_audit_trim)

    pol = sub.add_parser("policy", help="policy tools").add_subparsers(dest="sub", required=True)
    s = pol.add_parser("check", help="dry-run a proposal file and explain the decision")
    s.add_argument("file")
    s.add_argument("--policy-dir")
    s.set_defaults(fn=cmd_policy_check)
    s = pol.add_parser("test", help="run the YAML test cases next to a policy set; non-zero exit on a failure")
    s.add_argument("dir", nargs="?", help="the policy folder (default: JITGATE_POLICY_DIR, else ./policies)")
    s.add_argument("--tests", metavar="PATH", help="a test file or folder (default: DIR/tests)")
    s.add_argument("--approvers", metavar="FILE", help="default: JITGATE_APPROVERS_FILE, else ./approvers.yaml")
    s.add_argument("--targets", metavar="FILE", help="default: JITGATE_TARGETS_FILE, else ./targets.yaml")
    s.add_argument("--require-coverage", action="store_true",
                   help="fail unless every policy decides at least one case")
    s.add_argument("-v", "--verbose", action="store_true", help="list the cases that passed too")
    s.set_defaults(fn=cmd_policy_test)
    formats: dict[str, Any] = {"choices": ["table", "json"], "default": "table", "help": "a readable table (default) or JSON"}
    s = pol.add_parser("shadow-report", help="the requests where the shadow policies would have decided otherwise")
    s.add_argument("--since", default="24h", help="the period: 24h, 7d, 30d, 90m (default 24h)")
    s.add_argument("--format", **formats)
    s.set_defaults(fn=cmd_policy_shadow_report)
    s = pol.add_parser("replay", help="re-decide the period's audited proposals with a candidate policy set")
    s.add_argument("--candidate", required=True, metavar="DIR", help="the candidate policy folder")
    s.add_argument("--since", default="7d", help="the period: 24h, 7d, 30d (default 7d)")
    s.add_argument("--format", **formats)
    s.set_defaults(fn=cmd_policy_replay)
    s = pol.add_parser("coverage", help="policies that never decided, and the decisions of each policy")
    s.add_argument("--since", default="30d", help="the period (default 30d)")
    s.add_argument("--format", **formats)
    s.set_defaults(fn=cmd_policy_coverage)
    s = pol.add_parser("reviewed", help="record a policy review in the audit log")
    s.add_argument("--note", required=True, help="what was reviewed and decided")
    s.add_argument("--as", dest="as_", metavar="NAME", help="who reviewed (default: JITGATE_OPERATOR, else $USER)")
    s.set_defaults(fn=cmd_policy_reviewed)

    # Commands of optional parts (agent tools, desks) plug in through entry points, so
    # the core names none of them.
    from importlib.metadata import entry_points  # noqa: PLC0415

    seen: set[str] = set()
    for ep in sorted(entry_points(group="jitgate.cli"), key=lambda e: e.name):
        if ep.name not in seen:  # an in-tree egg-info next to the installed one lists it twice
            seen.add(ep.name)
            ep.load()(sub)

    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except BrokerError as e:
        print(f"jitgate: {e.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
