"""Issue 24.2: with JITGATE_EMAIL_BINDING on, a Slack user is bound to an approver by e-mail only
when Slack vouches for a full member of this workspace with a confirmed, plain-ASCII address.
Signed clicks against the running app; users.info answered by the Slack stand-in."""

from __future__ import annotations

import pytest

from bot.slack.blocks import APPROVE
from broker.directory import Directory, email_key
from broker.errors import ConfigError
from tests.bot.slack.conftest import APPROVERS, running

GOOD = {"team_id": "T0TEST", "is_email_confirmed": True, "profile": {"email": "gina@example.com"}}

REFUSED = {
    "no is_email_confirmed field": {"team_id": "T0TEST", "profile": {"email": "gina@example.com"}},
    "unconfirmed": {**GOOD, "is_email_confirmed": False},
    "external Slack Connect user": {**GOOD, "is_stranger": True},
    "another workspace": {**GOOD, "team_id": "T0OTHER"},
    "no workspace": {k: v for k, v in GOOD.items() if k != "team_id"},
    "guest": {**GOOD, "is_restricted": True},
    "single-channel guest": {**GOOD, "is_ultra_restricted": True},
    "bot": {**GOOD, "is_bot": True},
    "app user": {**GOOD, "is_app_user": True},
    "deleted": {**GOOD, "deleted": True},
    "Kelvin sign folding into k": {**GOOD, "profile": {"email": "\u212aim@example.com"}},
    "upper-case Kelvin look-alike domain": {**GOOD, "profile": {"email": "kim@example.\u212a"}},
    "trailing space": {**GOOD, "profile": {"email": "gina@example.com "}},
}


@pytest.fixture
def approvers_file(tmp_path):
    path = tmp_path / "approvers.yaml"
    path.write_text(APPROVERS.read_text() + "  - id: kim\n    groups: [sre]\n    email: kim@example.com\n")
    return path


async def test_only_confirmed_members_of_this_workspace_bind_by_email(tmp_path, redis_url, prefix, redis, fake_slack,
                                                                       approvers_file):
    """Issue 24.2 "bind only members of the workspace itself whose e-mail Slack reports as confirmed, never strangers,
    guests, bots or deleted users; compare addresses exactly after a documented normalisation; refuse and log
    everything else": each such user's click is refused and changes nothing; a confirmed member binds."""
    users = {}
    for n, (case, record) in enumerate(REFUSED.items()):
        uid = f"U0BAD{n:02d}"
        fake_slack.users[uid] = {"id": uid, **record}
        users[uid] = case
    fake_slack.users["U0GINA"] = {"id": "U0GINA", **GOOD}
    async with running(tmp_path, redis_url, prefix, fake_slack, approvers_file=approvers_file,
                       email_binding=True) as slack:
        rid = await slack.propose()
        for uid, case in users.items():
            await slack.click(uid, APPROVE, rid)
            answer = (await slack.ephemerals(uid))[0]
            assert "not bound" in answer, (case, answer)
        req = await slack.life.get(rid)
        assert req.approvals == [] and req.status == "pending"
        await slack.click("U0GINA", APPROVE, rid)
        await slack.ephemerals("U0GINA")
        req = await slack.life.get(rid)
        assert req.approvers == ["gina"] and req.approvals[0]["platform_user"] == "U0GINA"


def test_addresses_compare_after_the_documented_normalisation_only():
    """Issue 24.2 "ASCII-only local part and domain, domain lowercased, refuse non-ASCII such as the Kelvin sign": the
    directory matches ASCII case variants and nothing that only Unicode folding would make equal."""
    directory = Directory.load(APPROVERS, APPROVERS.parent / "missing-targets.yaml")
    assert directory.by_email("GINA@Example.COM").id == "gina"
    for address in ("gina@example.com\u200b", "g\u0131na@example.com", "gina@ex\u0430mple.com", "gina @example.com",
                    '"gina"@example.com', "gina@example.com.", "gina@example"):
        assert directory.by_email(address) is None, address
    assert email_key("\u212aim@example.com") is None and "\u212aim@example.com".lower() == "kim@example.com"


def test_a_non_ascii_address_in_the_approvers_file_refuses_to_load(tmp_path):
    """Issue 24.2 "compare addresses exactly after a documented normalisation": the file's own addresses must be
    normalisable, so a look-alike cannot be configured either."""
    path = tmp_path / "approvers.yaml"
    path.write_text("approvers:\n  - id: kim\n    groups: [sre]\n    email: \"\\u212aim@example.com\"\n")
    with pytest.raises(ConfigError, match="ASCII e-mail address"):
        Directory.load(path, tmp_path / "targets.yaml")
