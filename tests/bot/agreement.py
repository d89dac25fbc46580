"""Issue 15: Slack, Teams and the console agree on who may decide a request and on the grant
cap, because each asks the one rule (broker/rules.py) instead of keeping a copy.

Each desk's ``test_agreement.py`` (tests/bot/slack, tests/bot/teams, tests/bot/console) runs
:func:`setup` on its own desk, reads what that desk shows (whom it @mentions or offers the
buttons to, the durations it offers, what its plain Approve grants) and compares it with
:func:`expected`, the core's answer. The scenario is chosen so every part of the rule shows:
the agent's owner is in the approver group (never a decider), one member already approved
for less time (counted once, and their choice caps the grant), the policy caps the request.
"""

from __future__ import annotations

from pathlib import Path

from broker import rules
from bot.render import DURATION_CHOICES

# Every approver bound on both platforms; deploy-bot's owner alice is in sre.
APPROVERS = """\
approvers:
  - {id: alice, groups: [sre, on-call], slack: U0ALICE, teams: aad-alice}
  - {id: bob, groups: [sre], slack: U0BOB, teams: aad-bob}
  - {id: carol, groups: [security], slack: U0CAROL, teams: aad-carol}
  - {id: dave, groups: [platform], slack: U0DAVE, teams: aad-dave}
  - {id: erin, groups: [sre], slack: U0ERIN, teams: aad-erin}
  - {id: frank, groups: [on-call], slack: U0FRANK, teams: aad-frank}
"""
REQUESTED_S = 1800  # prod-deploy's @max_duration("900") cuts it
BOB_CHOSE_S = 600  # bob approves for less time: the grant can be no longer
DECIDERS = {"erin"}  # sre, minus alice (owns deploy-bot) and bob (counted)
CAP_S = 600


def approvers_file(tmp_path: Path) -> Path:
    path = tmp_path / "agreement-approvers.yaml"
    path.write_text(APPROVERS)
    return path


async def setup(harness) -> str:
    """Propose as deploy-bot and record bob's approval for less time (through the core, as any
    desk would); returns the request id. The caller waits for its desk to show the request."""
    r = await harness.propose(duration_s=REQUESTED_S)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    await harness.approve(rid, "bob", duration_s=BOB_CHOSE_S)
    return rid


async def expected(harness, rid: str) -> tuple[set[str], int, list[int]]:
    """The core's answer: (who may still decide, the approvable maximum, the shorter choices)."""
    life = harness.broker.lifecycle
    req = await life.get(rid)
    who = {a.id for a in life.deciders(req)}
    cap = rules.approvable_max(req, life.settings.max_duration_s)
    assert (who, cap) == (DECIDERS, CAP_S)  # the scenario means what the docstring says
    return who, cap, [d for d in DURATION_CHOICES if d < cap]
