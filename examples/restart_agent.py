"""A minimal agent: it asks to restart a production service, shows its evidence (a log
excerpt and the runbook), waits for a person, and gives the privilege back when done.

With `make run` going, from the repository root:

    .venv/bin/python examples/restart_agent.py

and, in another terminal, approve as an SRE (the command is printed):

    .venv/bin/jitgate requests approve <id> --as alice      # or: deny <id> --as bob --reason "..."

Needs only the client (`pip install jitgate-client`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from broker.client import Client, Denied, Escalation, Evidence, NotGranted, TimedOut

LOG_EXCERPT = """\
10:02:11 payments-api-7d9f pod OOMKilled (limit 512Mi)
10:02:40 payments-api-7d9f Back-off restarting failed container
10:04:02 payments-api-7d9f readiness probe failed: connection refused
10:09:55 payments-api-7d9f pod OOMKilled (limit 512Mi)"""


def announce(esc: Escalation) -> None:
    """Progress for the person running the example."""
    if esc.status == "pending" and not esc.approvals:
        print(f"request {esc.id} is waiting for {esc.approvals_required} approval(s) from "
              f"'{esc.decision.get('approver_group')}'; approve it with:\n"
              f"    .venv/bin/jitgate requests approve {esc.id} --as alice", flush=True)
    else:
        print(f"  ... {esc.summary()}", flush=True)


async def main(url: str, key: str, wait: float) -> int:
    async with Client(url, "demo-agent", key) as client:
        try:
            async with client.grant(
                action="restart",
                target="prod/payments-api",
                justification="payments-api is in an OOM crash loop since 10:02; a restart with the new memory "
                              "limit clears it (runbook step 3)",
                duration=300,
                confidence=0.85,
                # What it will actually run: policies/payments.cedar allows only a rollout restart.
                tool="kubectl",
                arguments={"subcommand": "rollout restart", "namespace": "payments"},
                evidence=[
                    Evidence.log("pod events, last 10 minutes", LOG_EXCERPT),
                    Evidence.link("runbook", "payments-api: restart after OOM",
                                  "https://runbooks.example.com/payments-api/oom-restart"),
                ],
                wait=wait,
                on_update=announce,
            ) as token:
                print(f"granted ({token.token_type} token, {token.expires_in} s). Restarting payments-api ...")
                # A real agent would call the platform here, e.g.
                #   httpx.post(url, headers=token.headers("POST", url))
                await asyncio.sleep(0.5)
                print("restarted; reporting completion so the grant ends now")
            return 0
        except Denied as e:
            print(f"not restarting: denied by {e.by}: {e.reason}", file=sys.stderr)
            return 2
        except TimedOut as e:
            print(f"not restarting: {e} (the request was withdrawn)", file=sys.stderr)
            return 4
        except NotGranted as e:
            print(f"not restarting: {e.status}: {e.reason}", file=sys.stderr)
            return 3


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("JITGATE_URL", "http://127.0.0.1:8080"))
    p.add_argument("--key", default=".jitgate/demo-agent.pem")
    p.add_argument("--wait", type=float, default=900, help="seconds to wait for a person (default 900)")
    args = p.parse_args()
    sys.exit(asyncio.run(main(args.url, args.key, args.wait)))
