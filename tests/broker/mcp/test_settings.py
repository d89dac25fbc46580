"""The gateway's file is read strictly: what is not understood is not enforced, so it refuses to start."""

from __future__ import annotations

import pytest

from broker.errors import ConfigError
from broker.mcp.settings import load_config, parse_config

OK = {"command": ["python", "server.py"], "target": "staging/notes"}


def test_a_minimal_file_and_its_defaults():
    """One stdio upstream: nothing allow-listed, actions mcp:<upstream>/<tool>, 600 s wait, 300 s grants."""
    config = parse_config({"upstreams": {"notes": OK}})
    notes = config.upstreams["notes"]
    assert notes.command == ("python", "server.py") and notes.allow == frozenset() and notes.url is None
    assert notes.action_for("write_note") == "mcp:notes/write_note"
    assert (config.wait_s, config.duration_s) == (600, 300)


def test_actions_map_tools():
    up = parse_config({"upstreams": {"notes": {**OK, "actions": {"write_note": "notes.write"}}}}).upstreams["notes"]
    assert up.action_for("write_note") == "notes.write" and up.action_for("read") == "mcp:notes/read"


@pytest.mark.parametrize("doc, says", [
    ({}, "'upstreams'"),
    ({"upstreams": {"notes": OK}, "allow_all": True}, "unknown key(s) allow_all"),
    ({"upstreams": {"notes": {**OK, "alow": ["read"]}}}, "unknown key(s) alow"),
    ({"upstreams": {"no__tes": OK}}, "letters, digits and '-'"),
    ({"upstreams": {"notes": {"target": "t"}}}, "exactly one of 'command'"),
    ({"upstreams": {"notes": {**OK, "url": "http://x/mcp"}}}, "exactly one of 'command'"),
    ({"upstreams": {"notes": {"command": ["x"]}}}, "'target'"),
    ({"upstreams": {"notes": {**OK, "token_header": "Authorization"}}}, "needs a 'url'"),
    ({"upstreams": {"notes": {"url": "http://x/mcp", "target": "t", "token_header": "Bad Header"}}}, "header name"),
    ({"upstreams": {"notes": {"url": "file:///etc/passwd", "target": "t"}}}, "http(s) URL"),
    ({"upstreams": {"notes": {**OK, "allow": "read_note"}}}, "'allow'"),
    ({"upstreams": {"notes": OK}, "wait_s": 0}, "'wait_s'"),
    ({"upstreams": {"notes": OK}, "wait_s": True}, "'wait_s'"),
])
def test_what_is_not_understood_refuses_to_start(doc, says):
    """Fail closed: an unknown key (a misspelt allow-list, say), two transports or none, a token header
    a stdio upstream cannot carry, a bad number: each is a ConfigError saying what is wrong."""
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert says in err.value.detail


def test_the_file_is_named_in_its_errors(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("upstreams: [notes]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in err.value.detail


def test_the_example_file_is_valid():
    """examples/mcp-gateway.yaml (the README's) loads as it is."""
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[3] / "examples" / "mcp-gateway.yaml")
    assert config.upstreams["payments"].token_header == "Authorization"
    assert config.upstreams["payments"].action_for("refund") == "payments.refund"
    assert "read_file" in config.upstreams["files"].allow


def test_an_outcome_is_cut_to_what_the_broker_accepts():
    """The gateway's outcome quotes an upstream's answer: control characters become spaces, the
    summary is cut to 500 characters; evidence must be https links (at most 10)."""
    from broker.mcp.outcome import make_outcome

    out = make_outcome("failure", "boom\x1b[31m" + "x" * 600)
    assert out["status"] == "failure" and len(out["summary"]) == 500 and "\x1b" not in out["summary"]
    assert make_outcome("success") == {"status": "success"}
    assert make_outcome("success", evidence=["https://ci.example.com/1"])["evidence"] == ["https://ci.example.com/1"]
    for bad in ({"status": "maybe"}, {"status": "success", "evidence": ["http://x"]},
                {"status": "success", "evidence": ["https://x"] * 11}):
        with pytest.raises(ValueError):
            make_outcome(**bad)
