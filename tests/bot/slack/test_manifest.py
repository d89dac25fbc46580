"""manifests/slack-app.yaml: exactly the scopes the bot uses, the slash command, interactivity."""

from __future__ import annotations

from pathlib import Path

import yaml

from bot.slack.commands import COMMAND
from bot.slack.desk import EVENTS_PATH

MANIFEST = Path(__file__).resolve().parents[3] / "manifests" / "slack-app.yaml"

# Every Web API method the desk calls, and the bot scope it needs (None: none needed).
METHOD_SCOPES = {
    "auth.test": None, "chat.postMessage": "chat:write", "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write", "views.open": None,
}
# Methods called only when a setting or the approvers file asks for them, and their scopes,
# which the manifest lists commented out with the condition.
OPTIONAL_METHOD_SCOPES = {
    "users.info": ("users:read", "users:read.email"),  # JITGATE_EMAIL_BINDING
    "usergroups.users.list": ("usergroups:read",),     # slack_usergroups bindings
}


def test_manifest_scopes_commands_and_urls():
    """Requirement 10: the manifest asks for exactly the scopes used, declares /jit and interactivity at /slack/events."""
    m = yaml.safe_load(MANIFEST.read_text())
    needed = {s for s in METHOD_SCOPES.values() if s} | {"commands"}
    assert set(m["oauth_config"]["scopes"]["bot"]) == needed
    assert "user" not in m["oauth_config"]["scopes"]
    (cmd,) = m["features"]["slash_commands"]
    assert cmd["command"] == COMMAND and cmd["url"].endswith(EVENTS_PATH)
    assert m["settings"]["interactivity"]["is_enabled"] is True
    assert m["settings"]["interactivity"]["request_url"].endswith(EVENTS_PATH)
    text = MANIFEST.read_text()
    for scopes in OPTIONAL_METHOD_SCOPES.values():
        assert all(f"# - {scope}\n" in text for scope in scopes)


async def test_desk_calls_only_the_listed_methods(slack):
    """Requirement 10: a full approval round uses only Web API methods whose scopes the manifest grants."""
    rid = await slack.propose(evidence=[{"kind": "log", "title": f"i{i}", "excerpt": "x"} for i in range(7)])
    await slack.click("U0BOB", "jit_approve", rid)
    await slack.click("U0BOB", "jit_evidence", rid)
    await slack.click("U0ERIN", "jit_deny", rid)
    await slack.submit_deny("U0ERIN", rid, "no")
    await slack.status(rid, "denied")
    await slack.settle()
    used = {c.method for c in slack.fake.calls}
    assert used <= set(METHOD_SCOPES) and {"chat.postMessage", "chat.update", "views.open"} <= used
