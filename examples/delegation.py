"""Two agents and a delegation: an orchestrator hands a sub-task to a worker.

The orchestrator signs a delegation link ("example-worker may read staging/* for 10
minutes, to audit the config"); the worker sends it with its own proposal. The broker
checks the link (signature, registration, can_delegate, scope, expiry), asks Cedar
whether the orchestrator may delegate to the worker (policies/delegation.cedar: same
team), and the token names both: ``act = {sub: worker, act: {sub: orchestrator}}``.

With `make run` going, from the repository root:

    .venv/bin/python examples/setup_agents.py     # once: registers the two agents
    .venv/bin/python examples/delegation.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import jwt

from broker.client import Client, DelegationRefused, NotGranted


async def main(url: str, keys: str) -> int:
    orchestrator = Client(url, "example-orchestrator", f"{keys}/example-orchestrator.pem")
    worker = Client(url, "example-worker", f"{keys}/example-worker.pem")
    async with orchestrator, worker:
        # 1. The orchestrator delegates (no broker call needed beyond learning its issuer URL).
        link = await orchestrator.delegate("example-worker", actions=["read"], targets=["staging/*"], ttl_s=600,
                                           reason="audit the payments config drift (ticket OPS-7)")
        print("orchestrator -> worker: delegation signed (read on staging/*, 10 min)")

        # 2. The worker asks for what it needs, showing the chain it was given.
        try:
            async with worker.grant(action="read", target="staging/payments-api",
                                    justification="compare the running config with git (delegated audit)",
                                    duration=300, delegation=[link]) as token:
                claims = jwt.decode(token.access_token, options={"verify_signature": False})
                print("granted; the token says who acts for whom:")
                print("  sub:", claims["sub"])
                print("  act:", json.dumps(claims["act"]))
        except DelegationRefused as e:
            print(f"the broker refused the chain: {e.detail}", file=sys.stderr)
            return 1
        except NotGranted as e:
            print(f"not granted: {e.status}: {e.reason}", file=sys.stderr)
            return 2

        # 3. A worker cannot widen what it was given: restart is not in the delegation.
        try:
            await worker.escalate(action="restart", target="prod/payments-api", justification="not delegated",
                                  duration=60, delegation=[link])
        except DelegationRefused as e:
            print(f"asking beyond the delegation is refused: {e.detail}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("JITGATE_URL", "http://127.0.0.1:8080"))
    p.add_argument("--keys", default=".jitgate/examples", help="where setup_agents.py wrote the keys")
    args = p.parse_args()
    sys.exit(asyncio.run(main(args.url, args.keys)))
