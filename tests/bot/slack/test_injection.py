"""Everything the agent wrote is untrusted: Slack control sequences render inert, links show
their real URL, and the message stays inside Block Kit's limits."""

from __future__ import annotations

import re

from broker.notify import Kind, Notice
from bot.slack.blocks import EVIDENCE
from tests.bot.slack.conftest import _texts

HOSTILE = ("Deploy now <!channel> <!here> <!everyone> <@U0BOB> <#C0SECURITY> <!subteam^S0SRE> "
           "<https://evil.example/phish|https://tickets.example.com/INC-42> &lt;!channel&gt; *APPROVED* by security")

# Our own markup: the deadline's <!date^…|…> and nothing else may open a '<' sequence.
OURS = re.compile(r"<!date\^\d+\^\{date_short_pretty\} at \{time\}\|[^<>]*>")


def _agent_markup(texts: list[str]) -> list[str]:
    return [m for t in texts for m in re.findall(r"<[^>]*>", OURS.sub("", t))]


async def test_control_sequences_render_inert(slack):
    """Requirement 1: a justification full of Slack control sequences renders as plain text (no mention, no link)."""
    rid = await slack.propose(
        justification=HOSTILE, tool="<!channel>", dataset="a & b <@U0ERIN>", ticket="<https://x.example|OPS-1>",
        evidence=[{"kind": "link", "title": "<!here> look", "url": "https://evil.example/?a=1&b=<2>|label"},
                  {"kind": "log", "title": "t", "excerpt": "```\n<!channel>\n```<@U0BOB>"}],
    )
    ref = await slack.message_ref(rid)
    texts = _texts(slack.message(ref)["blocks"]) + [slack.message(ref)["text"]]
    assert _agent_markup(texts) == []
    joined = "\n".join(texts)
    assert "&lt;!channel&gt;" in joined and "&lt;@U0BOB&gt;" in joined and "&amp;lt;!channel&amp;gt;" in joined
    assert "&lt;https://evil.example/phish|https://tickets.example.com/INC-42&gt;" in joined
    # The evidence link is shown as its real URL, never behind a label.
    assert "https://evil.example/?a=1&amp;b=&lt;2&gt;|label" in joined
    # Posting used no parse/link_names that would turn plain "@channel" into a mention.
    post = slack.fake.of("chat.postMessage")[0].args
    assert "link_names" not in post and "parse" not in post and post["unfurl_links"] is False


async def test_thread_replies_and_dms_escape_reasons(slack):
    """Requirement 1: text people type (a deny reason) is escaped in thread replies, the message and DMs too."""
    rid = await slack.propose()
    ref = await slack.message_ref(rid)
    await slack.submit_deny("U0BOB", rid, "no <!channel> <https://evil.example|here>")
    await slack.status(rid, "denied")
    await slack.settle()
    texts = slack.fake.thread(*ref) + [c.args["text"] for c in slack.fake.of("chat.postMessage")
                                       if c.args["channel"] == "U0ALICE"]
    texts += _texts(slack.message(ref)["blocks"])
    assert any("&lt;!channel&gt;" in t for t in texts)
    # Only our own channel link (<#C…>) in the owner's DM may open a '<' sequence.
    assert [m for m in _agent_markup(texts) if not re.fullmatch(r"<#C[A-Z0-9]+>", m)] == []


async def test_largest_proposal_fits_block_kit_limits(slack):
    """Requirement 1: the largest proposal the API accepts posts fine (≤ 3000 characters per text, ≤ 50 blocks)."""
    big = "&<>" * 1333  # 3999 characters that triple when escaped
    # 20 items with long escaped fields (the agent API caps the body at 64 KiB).
    evidence = [{"kind": "log", "title": "&" * 200, "url": "https://e.example/" + "&" * 1000, "excerpt": "<" * 1000}
                for _ in range(20)]
    rid = await slack.propose(justification=big, tool="&" * 200, dataset="<" * 200, ticket=">" * 200, evidence=evidence)
    ref = await slack.message_ref(rid)  # the stand-in answers ok: false beyond Slack's limits
    blocks = slack.message(ref)["blocks"]
    assert len(blocks) <= 50
    assert max(len(t) for t in _texts(blocks)) <= 3000
    assert any(t.endswith("…") for t in _texts(blocks))  # cut visibly, not silently
    await slack.click("U0BOB", EVIDENCE, rid)
    (call,) = await slack.fake.wait_for(lambda: slack.fake.of("views.open"), what="evidence modal")
    assert len(call.args["view"]["blocks"]) <= 100
    assert slack.fake.of("views.open", ok=False) == [] and slack.fake.of("chat.update", ok=False) == []


async def test_delegation_chain_is_shown_and_inert(slack):
    """Requirement 1: the verified delegation chain is in the message, root first; a delegator's reason stays inert."""
    import dataclasses

    rid = await slack.propose()
    chain = [{"delegator": "orchestrator", "delegate": "planner", "actions": ["deploy"], "targets": ["prod/*"],
              "reason": "nightly <!channel> <https://evil.example|release>"},
             {"delegator": "planner", "delegate": "deploy-bot", "actions": ["deploy"], "targets": ["prod/payments-api"]}]
    req = dataclasses.replace(await slack.life.get(rid), delegation_chain=chain)
    notifier = slack.h.broker.desks[0].notifier
    (ref,) = await notifier.post_proposal(Notice(Kind.PROPOSED, req))  # the stand-in refuses anything outside Block Kit's limits
    text = slack.message_text((ref.destination, ref.ref))
    assert ("1. orchestrator → planner: deploy on prod/* (nightly &lt;!channel&gt; "
            "&lt;https://evil.example|release&gt;)\n2. planner → deploy-bot: deploy on prod/payments-api") in text
    assert _agent_markup(_texts(slack.message((ref.destination, ref.ref))["blocks"])) == []
