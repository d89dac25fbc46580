"""Signed Slack requests for the tests: interaction payloads, slash commands, Socket Mode envelopes."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
TEAM = "T0TEST"


def signed(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None,
           content_type: str = "application/x-www-form-urlencoded") -> dict:
    """Headers Slack would send with ``body``: ``v0=HMAC-SHA256(secret, "v0:{ts}:{body}")``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig, "Content-Type": content_type}


def block_actions(user: str, action_id: str, *, value: str | None = None, selected: str | None = None,
                  channel: str = "C0APPROVALS", ts: str = "0", response_url: str = "http://127.0.0.1:9/none",
                  trigger_id: str = "trigger-1") -> dict:
    """A ``block_actions`` payload as Slack sends it for a click on a message button or select."""
    action = {"action_id": action_id, "block_id": "jit_decide", "action_ts": str(time.time())}
    if selected is not None:
        action.update(type="static_select", selected_option={"text": {"type": "plain_text", "text": "x"}, "value": selected})
    else:
        action.update(type="button", value=value, text={"type": "plain_text", "text": "x"})
    return {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0JITGATE",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": trigger_id,
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": ts, "text": "..."},
        "response_url": response_url,
        "actions": [action],
    }


def view_submission(user: str, private_metadata: str, reason: str, *, callback_id: str = "jit_deny_reason") -> dict:
    """A ``view_submission`` payload for the deny modal."""
    return {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0JITGATE",
        "token": "legacy-verification-token",
        "trigger_id": "trigger-2",
        "view": {
            "id": "V0DENY", "team_id": TEAM, "type": "modal", "callback_id": callback_id,
            "private_metadata": private_metadata, "hash": "h", "app_id": "A0JITGATE",
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
        },
    }


def form_payload(payload: dict) -> str:
    """Interactions arrive form-encoded as ``payload=<json>``."""
    return urlencode({"payload": json.dumps(payload)})


def slash(user: str, text: str, *, response_url: str, channel: str = "C0APPROVALS") -> str:
    """A ``/jit`` slash-command form body."""
    return urlencode({
        "token": "legacy-verification-token", "team_id": TEAM, "team_domain": "test", "channel_id": channel,
        "channel_name": "approvals", "user_id": user, "user_name": user.lower(), "command": "/jit", "text": text,
        "api_app_id": "A0JITGATE", "response_url": response_url, "trigger_id": "trigger-3",
    })


def modal_submission(user: str, *, callback_id: str, private_metadata: str, values: dict | None = None,
                     external_id: str = "", view_id: str = "V0MODAL") -> dict:
    """A ``view_submission`` payload for any modal: ``values`` maps block id → (action id, typed text)."""
    state = {block: {action: {"type": "plain_text_input", "value": text}} for block, (action, text) in (values or {}).items()}
    return {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM},
        "api_app_id": "A0JITGATE",
        "token": "legacy-verification-token",
        "trigger_id": "trigger-4",
        "view": {
            "id": view_id, "team_id": TEAM, "type": "modal", "callback_id": callback_id, "external_id": external_id,
            "private_metadata": private_metadata, "hash": "h", "app_id": "A0JITGATE", "state": {"values": state},
        },
    }
