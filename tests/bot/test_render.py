"""Platform-neutral wording shared by the desks."""

from __future__ import annotations

from types import SimpleNamespace

from bot import render


def test_delegation_links_name_who_let_whom_do_what():
    """Approvers see the verified chain as plain lines, root first — never the raw signed links."""
    req = SimpleNamespace(delegation_chain=[
        {"link": 1, "delegator": "orchestrator", "delegate": "planner", "actions": ["deploy"], "targets": ["prod/*"],
         "reason": "release train"},
        {"link": 2, "delegator": "planner", "delegate": "worker", "actions": ["deploy"], "targets": ["prod/api"]},
    ])
    assert render.delegation_links(req) == [
        "orchestrator → planner: deploy on prod/* (release train)",
        "planner → worker: deploy on prod/api",
    ]
    assert render.delegation_links(SimpleNamespace(delegation_chain=[])) == []
