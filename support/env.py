"""The environment of a ``jitgate serve`` child process built from the test fixtures (the
policies, approvers and targets under ``tests/fixtures``), for the tests and the bench."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def jitgate_env(tmp: Path, prefix: str, kek: str, redis_url: str | None, **extra: str) -> dict:
    """Environment for a broker process built from the test fixtures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JITGATE_", "REDIS_URL", "SLACK_", "MICROSOFT_", "TEAMS_"))}
    env.update(
        JITGATE_ENV_FILE=str(tmp / "absent.env"),
        JITGATE_ISSUER="https://jitgate.test",
        JITGATE_KEY_ENCRYPTION_KEY=kek,
        JITGATE_REDIS_PREFIX=prefix,
        JITGATE_DATA_DIR=str(tmp / "data"),
        JITGATE_POLICY_DIR=str(ROOT / "tests/fixtures/policies"),
        JITGATE_AGENTS_FILE=str(tmp / "agents.yaml"),
        JITGATE_APPROVERS_FILE=str(ROOT / "tests/fixtures/approvers.yaml"),
        JITGATE_TARGETS_FILE=str(ROOT / "tests/fixtures/targets.yaml"),
        JITGATE_SWEEP_INTERVAL_S="0.1",
        # Load from a handful of agents on one target: the proposal rate limits (issue 19) have
        # their own tests (tests/broker/test_rate_limits.py) and would only turn load into 429s.
        JITGATE_AGENT_PROPOSALS_PER_MIN="0",
        JITGATE_TARGET_PROPOSALS_PER_MIN="0",
        JITGATE_MAX_OPEN_PER_AGENT="0",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env
