"""Register the agents and the resource server the examples use (an operator's step).

Run once from the repository root after `make run` has written .env (the broker picks up
the edited agents file within two seconds):

    .venv/bin/python examples/setup_agents.py

Keys go to .jitgate/examples/ (mode 600); the agents file is the one .env names
(JITGATE_AGENTS_FILE). Entries that exist already are left alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from broker.config import environment
from broker.identity import Registry, add_agent, add_resource_server, generate_key

# id, owner, team, may sign delegations
AGENTS = [
    ("example-orchestrator", "dave", "platform", True),
    ("example-worker", "dave", "platform", False),
]
RESOURCE_SERVER = "example-payments-api"
TARGET = "staging/payments-api"  # the tokens' aud the example resource servers accept


def main() -> int:
    env = environment()  # the process environment over .env (JITGATE_ENV_FILE)
    agents_file = Path(env.get("JITGATE_AGENTS_FILE", "agents.yaml"))
    keys = Path(env.get("JITGATE_DATA_DIR", ".jitgate")) / "examples"
    keys.mkdir(parents=True, exist_ok=True)
    registry = Registry.load(agents_file)
    for agent_id, owner, team, can_delegate in AGENTS:
        if registry.agent(agent_id) is not None:
            print(f"{agent_id}: already registered")
            continue
        pem, jwk = _new_key(keys / f"{agent_id}.pem")
        add_agent(agents_file, id=agent_id, owner=owner, team=team, public_jwk=jwk, can_delegate=can_delegate)
        print(f"{agent_id}: registered in {agents_file} (owner {owner}, team {team}"
              f"{', may delegate' if can_delegate else ''}); key {keys / (agent_id + '.pem')}")
    if registry.resource_server(RESOURCE_SERVER) is None:
        _pem, jwk = _new_key(keys / f"{RESOURCE_SERVER}.pem")
        add_resource_server(agents_file, id=RESOURCE_SERVER, public_jwk=jwk, audiences=[TARGET])
        print(f"{RESOURCE_SERVER}: registered as a resource server for tokens meant for {TARGET} "
              "(may introspect and revoke those)")
    elif TARGET not in registry.resource_server(RESOURCE_SERVER).audiences:
        print(f"{RESOURCE_SERVER}: already registered, but not for {TARGET}: add `audiences: [{TARGET}]` "
              f"to its entry in {agents_file}, or the broker answers its introspections as inactive")
    else:
        print(f"{RESOURCE_SERVER}: already registered")
    return 0


def _new_key(path: Path) -> tuple[bytes, dict]:
    pem, jwk = generate_key("P-256")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return pem, jwk


if __name__ == "__main__":
    sys.exit(main())
