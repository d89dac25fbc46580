#!/usr/bin/env python3
"""Container health check for jitgate: exit 0 when the broker in this container answers.

``jitgate-healthcheck [PATH]`` sends ``GET PATH`` (default ``/healthz``; ``/readyz`` also
checks that Redis is reachable) to ``127.0.0.1:$JITGATE_PORT`` (default 8080) and exits 0
on HTTP 200, 1 on anything else, within 4 seconds. Proxy variables (``HTTP_PROXY``...) are
ignored: the broker is on loopback. Standard library only, so it runs in the slim image.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    port = os.environ.get("JITGATE_PORT") or "8080"
    url = f"http://127.0.0.1:{port}{path}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=4) as response:
            if response.status == 200:
                return 0
            print(f"unhealthy: {url} answered {response.status}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - any failure is "unhealthy", said once
        print(f"unhealthy: {url}: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
