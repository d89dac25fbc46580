"""The jitgate agent client: ask for a privilege, wait honestly, use it, give it back.

Needs only ``httpx``, ``pyjwt`` and ``cryptography`` (``pip install jitgate-client``)::

    from broker.client import Client, Evidence

    client = Client("http://127.0.0.1:8080", "demo-agent", ".jitgate/demo-agent.pem")
    async with client.grant(action="restart", target="prod/payments-api",
                            justification="OOM loop since 10:02", duration=300,
                            evidence=[Evidence.log("pod events", "OOMKilled x14")]) as token:
        await restart(headers=token.headers("POST", url))

See docs/agents.md for the decorator, the CLI, DPoP, delegation and SPIFFE.
"""

from ..jose import generate_key, make_delegation, public_jwk
from .client import Client, outcome
from .credentials import AgentKey, Svid, load_key
from .decorator import Refusal, requires_approval
from .errors import (
    ApiError,
    AuthenticationFailed,
    Cancelled,
    Conflict,
    DelegationRefused,
    Denied,
    Expired,
    InvalidRequest,
    InvalidToken,
    JitgateError,
    NotFound,
    NotGranted,
    Revoked,
    TimedOut,
    TransportError,
)
from .models import DpopAuth, Escalation, Evidence, Grant, TaskOutcome, Token
from .signals import RevokedTokens, SetRefused, Subscription
from .sync import SyncClient
from .verify import ANY_AUDIENCE, Introspector, ReplayCache, TokenVerifier, check_binding, parse_authorization, verify

__all__ = [
    "ANY_AUDIENCE", "AgentKey", "ApiError", "AuthenticationFailed", "Cancelled", "Client", "Conflict", "DelegationRefused", "Denied",
    "DpopAuth", "Escalation", "Evidence", "Expired", "Grant", "Introspector", "InvalidRequest", "InvalidToken",
    "JitgateError", "NotFound", "NotGranted", "Refusal", "ReplayCache", "Revoked", "RevokedTokens", "SetRefused", "Subscription", "Svid", "SyncClient", "TaskOutcome", "TimedOut",
    "Token", "TokenVerifier", "TransportError", "check_binding", "generate_key", "load_key", "make_delegation", "outcome",
    "parse_authorization", "public_jwk", "requires_approval", "verify",
]
