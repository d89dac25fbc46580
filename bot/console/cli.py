"""``jitgate console login`` and ``jitgate demo`` (registered through ``jitgate.cli``).

``console login`` writes to Redis directly, like the other operator commands: whoever
holds the Redis credentials (or, with the embedded Redis, the socket) may mint links.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the console's sub-commands to the ``jitgate`` parser."""
    console = subparsers.add_parser("console", help="the local web approval console")
    sub = console.add_subparsers(dest="sub", required=True)
    s = sub.add_parser("login", help="print a single-use, 10-minute sign-in link for an approver")
    s.add_argument("approver", metavar="APPROVER_ID")
    s.set_defaults(fn=cmd_login)

    s = subparsers.add_parser("demo", help="the demo agent asks for a prod restart and waits for a person")
    s.add_argument("--agent", default="demo-agent")
    s.add_argument("--key", help="the agent's private key (default: JITGATE_DATA_DIR/demo-agent.pem)")
    s.add_argument("--url", help="the broker's URL (default: JITGATE_ISSUER)")
    s.add_argument("--work", type=float, default=20, metavar="SECONDS", help="how long to pretend to work")
    s.add_argument("--max-wait", type=float, default=900, metavar="SECONDS",
                   help="how long to wait for a decision before withdrawing")
    s.set_defaults(fn=cmd_demo)


def cmd_login(args) -> int:
    from broker import audit  # noqa: PLC0415
    from broker.clock import SystemClock  # noqa: PLC0415
    from broker.config import load_settings, redis_url_for_tools  # noqa: PLC0415
    from broker.directory import Directory  # noqa: PLC0415
    from broker.lifecycle import Lifecycle  # noqa: PLC0415
    from broker.model import iso  # noqa: PLC0415
    from broker.redisconn import connect  # noqa: PLC0415
    from broker.redisline import RedisLine  # noqa: PLC0415
    from broker.store import Store  # noqa: PLC0415

    from .desk import console_mode  # noqa: PLC0415
    from .sessions import Sessions  # noqa: PLC0415

    settings = load_settings()
    if console_mode(settings) is None:
        print("the console is off (a chat platform is configured, or JITGATE_CONSOLE=0); "
              "set JITGATE_CONSOLE=1 to use it", file=sys.stderr)
        return 2
    approver = Directory.load(settings.approvers_file, settings.targets_file).approver(args.approver)
    if approver is None:
        print(f"no approver '{args.approver}' in {settings.approvers_file}", file=sys.stderr)
        return 2

    async def mint():
        url = redis_url_for_tools(settings)
        client, line = connect(url), RedisLine(url)
        try:
            now = SystemClock().now()
            operator = f"os:{Lifecycle.os_user()}"
            link = await Sessions(client, settings.redis_prefix).issue_link(approver.id, now=now, issued_by=operator)
            await audit.record(Store(client, line, settings.redis_prefix), "console.link_issued", iso(now),
                               {"operator": operator}, approver=approver.id, link=link.ref,
                               expires_at=iso(link.expires_at))
            return link
        finally:
            await line.aclose()
            await client.aclose()

    link = asyncio.run(mint())
    groups = ", ".join(sorted(approver.groups)) or "no groups"
    print(f"sign-in link for {approver.id} ({groups}); it works once, until {iso(link.expires_at)}:", file=sys.stderr)
    print(f"{settings.issuer}/console/login?token={link.token}")
    return 0


def cmd_demo(args) -> int:
    from broker.config import load_settings  # noqa: PLC0415

    from .demo import AgentClient, load_demo_key, run_demo  # noqa: PLC0415

    settings = load_settings()
    key_path = Path(args.key) if args.key else settings.data_dir / "demo-agent.pem"
    try:
        key = load_demo_key(key_path)
    except FileNotFoundError as e:
        print(str(e), file=sys.stderr)
        return 2
    client = AgentClient(args.url or settings.issuer, settings.issuer, key, args.agent)
    return run_demo(client, work_s=args.work, max_wait_s=args.max_wait, out=lambda line: print(line, flush=True))
