"""Agent identity: the registry of agents and resource servers, and their signed assertions.

Agents hold no shared secret. Each one is registered with a public JWK (Ed25519 or P-256)
and authenticates every call with ``Authorization: Bearer <JWT>`` signed by its private
key: ``iss`` = ``sub`` = its id, ``aud`` = the broker, ``iat``, ``exp`` (at most five
minutes later) and a ``jti`` that may be used once. Resource servers that call
introspection authenticate the same way, from their own section of the agents file.

One idea per module; this package re-exports every name callers use, so they import
from ``broker.identity`` as before:

- :mod:`.registry`: agents, resource servers and the agents file (strict YAML, hot
  reload, atomic ``add_agent``/``add_resource_server``), and the SPIFFE id syntax;
- :mod:`.assertions`: bearer assertions and DPoP proofs, each ``jti`` accepted once;
- :mod:`.spiffe`: JWT-SVIDs verified against a SPIFFE trust bundle;
- :mod:`.delegation`: delegation chains, root first, narrowing link by link;
- :mod:`.keys`: generating and loading keys (the JOSE primitives are :mod:`broker.jose`'s).
"""

from __future__ import annotations

from ..jose import (  # re-exported: callers import key helpers from here
    ALLOWED_ALGS,
    DELEGATION_TYP,
    DpopProof,
    HeaderNotAllowed,
    JoseError,
    MalformedJws,
    PrivateKeyMaterial,
    UnusableKey,
    check_header,
    jwk_thumbprint,
    make_assertion,
    make_delegation,
    public_jwk,
    split_jws,
    uncovered,
    verify_dpop_proof,
    verify_jws_signature,
)
from .assertions import BAD_ASSERTION, AssertionVerifier, InvalidDpopProof
from .delegation import MAX_DELEGATION_LIFETIME_S, DelegationLink, InvalidDelegation, verify_delegation_chain
from .keys import generate_key, load_private_key
from .registry import (
    GATEWAY_AUDIENCE,
    ID_PATTERN,
    SPIFFE_SCHEME,
    Agent,
    Registry,
    ResourceServer,
    add_agent,
    add_resource_server,
    set_disabled,
    spiffe_id_problem,
    trust_domain_of,
)
from .spiffe import BAD_SVID, SVID_MAX_REMAINING_S, SpiffeBundle

__all__ = [
    "ALLOWED_ALGS",
    "BAD_ASSERTION",
    "BAD_SVID",
    "DELEGATION_TYP",
    "GATEWAY_AUDIENCE",
    "ID_PATTERN",
    "MAX_DELEGATION_LIFETIME_S",
    "SPIFFE_SCHEME",
    "SVID_MAX_REMAINING_S",
    "Agent",
    "AssertionVerifier",
    "DelegationLink",
    "DpopProof",
    "HeaderNotAllowed",
    "InvalidDelegation",
    "InvalidDpopProof",
    "JoseError",
    "MalformedJws",
    "PrivateKeyMaterial",
    "Registry",
    "ResourceServer",
    "SpiffeBundle",
    "UnusableKey",
    "add_agent",
    "add_resource_server",
    "set_disabled",
    "check_header",
    "generate_key",
    "jwk_thumbprint",
    "load_private_key",
    "make_assertion",
    "make_delegation",
    "public_jwk",
    "spiffe_id_problem",
    "split_jws",
    "trust_domain_of",
    "uncovered",
    "verify_delegation_chain",
    "verify_dpop_proof",
    "verify_jws_signature",
]
