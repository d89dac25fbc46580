"""``jitgate teams package``: the Teams app package to upload (registered through ``jitgate.cli``)."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse


def register(subparsers) -> None:
    """Add the Teams desk's sub-commands to the ``jitgate`` parser."""
    teams = subparsers.add_parser("teams", help="the Microsoft Teams approval desk")
    sub = teams.add_subparsers(dest="sub", required=True)
    s = sub.add_parser("package", help="write the Teams app package (manifest + icons, zipped) to upload to Teams")
    s.add_argument("--app-id", help="the Azure Bot's Microsoft App ID (default: MICROSOFT_APP_ID)")
    s.add_argument("--domain", help="the broker's public host name (default: the host of JITGATE_ISSUER)")
    s.add_argument("--version", default="0.1.0", help="the app version Teams shows (raise it for every upload)")
    s.add_argument("--out", default="jitgate-teams.zip", type=Path, help="where to write the zip")
    s.set_defaults(fn=cmd_package)


def cmd_package(args) -> int:
    from broker.config import environment  # noqa: PLC0415

    from .manifest import package  # noqa: PLC0415

    env = environment()
    app_id = args.app_id or env.get("MICROSOFT_APP_ID", "")
    domain = args.domain or urlparse(env.get("JITGATE_ISSUER", "")).hostname or ""
    try:
        data = package(app_id, domain, args.version)
    except ValueError as e:
        print(f"jitgate: {e}", file=sys.stderr)
        return 2
    args.out.write_bytes(data)
    print(f"wrote {args.out} (app id {app_id}, domain {domain}); upload it in Teams: Apps → Manage your apps → "
          "Upload an app")
    return 0
