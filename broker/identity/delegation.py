"""Delegation chains: an agent acting for another, each link signed by its delegator.

A chain is verified root first against the registry (every delegator registered with
``can_delegate: true``), narrowing actions and targets link by link; the lifecycle asks
Cedar about each link and records the chain as the token's ``act`` claim.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InvalidRequest
from ..jose import (
    DELEGATION_TYP,
    HeaderNotAllowed,
    JoseError,
    check_header,
    finite_number as _finite_number,
    split_jws,
    uncovered,
    verify_jws_signature,
)
from .assertions import _sole_audience
from .keys import _dummy_key
from .registry import ID_PATTERN, Registry

# --- delegation chains ----------------------------------------------------------------

MAX_DELEGATION_LIFETIME_S = 7 * 86400
_SCOPE_ENTRY = re.compile(r"[A-Za-z0-9._:/@-]{1,200}\*?|\*")
_MAX_SCOPE_ENTRIES = 50
_MAX_DELEGATION_REASON = 500


class InvalidDelegation(InvalidRequest):
    """A delegation chain that does not hold; ``detail`` names the bad link."""

    code, title = "invalid-delegation", "Invalid delegation chain"


@dataclass(frozen=True)
class DelegationLink:
    """One verified link: ``delegator`` let ``delegate`` ask for ``actions`` on ``targets``."""

    index: int  # 1-based, as people count
    delegator: str
    delegate: str
    actions: tuple[str, ...]
    targets: tuple[str, ...]
    issued_at: int
    expires_at: int
    jti: str
    reason: str | None = None

    def to_dict(self) -> dict:
        d = {"link": self.index, "delegator": self.delegator, "delegate": self.delegate,
             "actions": list(self.actions), "targets": list(self.targets),
             "issued_at": self.issued_at, "expires_at": self.expires_at, "jti": self.jti}
        if self.reason:
            d["reason"] = self.reason
        return d


def _scope(claims: dict, name: str, where: str) -> tuple[str, ...]:
    value = claims.get(name)
    if not isinstance(value, list) or not value or len(value) > _MAX_SCOPE_ENTRIES:
        raise InvalidDelegation(f"{where}: '{name}' must be a list of 1 to {_MAX_SCOPE_ENTRIES} names")
    for item in value:
        if not isinstance(item, str) or not _SCOPE_ENTRY.fullmatch(item):
            raise InvalidDelegation(f"{where}: '{name}' holds {item!r}, which is not a name or a prefix ending in '*'")
    return tuple(value)


def verify_delegation_chain(
    chain: Iterable[str],
    *,
    registry: Registry,
    requester: str,
    action: str,
    target: str,
    audience: str,
    now: float,
    max_depth: int,
    leeway_s: int = 30,
) -> list[DelegationLink]:
    """Verify a delegation chain, root first, whose last link delegates to ``requester``.

    Every link must be signed by its delegator's registered key (``typ``
    jitgate-delegation+jwt, ``aud`` this broker), the delegator registered with
    ``can_delegate: true``, unexpired, the delegator of each link the delegate of the one
    before, no agent twice (no cycles), each link's actions and targets within the
    previous link's, at most ``max_depth`` links, and the request's action and target
    within the last link. Raises :class:`InvalidDelegation` naming the first bad link.
    Cedar's ``delegate`` decision per link is the lifecycle's to ask.
    """
    chain = list(chain)
    if len(chain) > max_depth:
        raise InvalidDelegation(f"delegation link {max_depth + 1}: the chain is deeper than the {max_depth} links allowed")
    links: list[DelegationLink] = []
    seen: set[str] = set()
    for index, token in enumerate(chain, start=1):
        where = f"delegation link {index}"
        try:
            header, claims = split_jws(token, "link")
        except JoseError:
            raise InvalidDelegation(f"{where}: not a compact JWS") from None
        if header.get("typ") != DELEGATION_TYP:
            raise InvalidDelegation(f"{where}: typ must be {DELEGATION_TYP}")
        try:
            alg = check_header(header)
        except HeaderNotAllowed as exc:
            raise InvalidDelegation(f"{where}: {exc}") from None
        iss, sub = claims.get("iss"), claims.get("sub")
        if not isinstance(iss, str) or not ID_PATTERN.fullmatch(iss):
            raise InvalidDelegation(f"{where}: 'iss' must name the delegating agent")
        if not isinstance(sub, str) or not ID_PATTERN.fullmatch(sub):
            raise InvalidDelegation(f"{where}: 'sub' must name the agent delegated to")
        where = f"delegation link {index} ({iss} -> {sub})"
        delegator = registry.agent(iss)
        # Unknown, keyless, other algorithm or kid, bad signature: one answer (and a signature
        # check either way), so a chain cannot be used to learn which agent ids exist.
        known = (delegator is not None and delegator.public_jwk is not None and alg == delegator.alg
                 and ("kid" not in header or header["kid"] == delegator.kid))
        if not verify_jws_signature(delegator._key if known else _dummy_key(alg), alg, token) or not known:
            raise InvalidDelegation(f"{where}: signature does not verify against '{iss}''s registered key")
        if not delegator.can_delegate:
            raise InvalidDelegation(f"{where}: agent '{iss}' may not delegate (can_delegate is not set in the agents file)")
        if not _sole_audience(claims.get("aud"), audience):
            raise InvalidDelegation(f"{where}: audience is not this broker (aud must be its issuer alone, a string)")
        iat, exp, jti = claims.get("iat"), claims.get("exp"), claims.get("jti")
        if not _finite_number(iat) or not _finite_number(exp) or exp <= iat:
            raise InvalidDelegation(f"{where}: needs numeric 'iat' and 'exp', exp after iat")
        if exp - iat > MAX_DELEGATION_LIFETIME_S:
            raise InvalidDelegation(f"{where}: lives longer than {MAX_DELEGATION_LIFETIME_S} s")
        if iat > now + leeway_s:
            raise InvalidDelegation(f"{where}: issued in the future")
        if now >= exp:
            raise InvalidDelegation(f"{where}: expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(exp))}")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 128:
            raise InvalidDelegation(f"{where}: needs a 'jti'")
        reason = claims.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > _MAX_DELEGATION_REASON):
            raise InvalidDelegation(f"{where}: 'reason' must be a string of at most {_MAX_DELEGATION_REASON} characters")
        actions, targets = _scope(claims, "actions", where), _scope(claims, "targets", where)

        if links and iss != links[-1].delegate:
            raise InvalidDelegation(f"{where}: delegator '{iss}' is not the delegate of link {index - 1} ('{links[-1].delegate}')")
        if not links:
            seen.add(iss)
        if sub in seen:
            raise InvalidDelegation(f"{where}: cycle, '{sub}' already appears earlier in the chain")
        seen.add(sub)
        if links:
            wider = uncovered(list(links[-1].actions), list(actions))
            if wider is not None:
                raise InvalidDelegation(f"{where}: widens the actions: '{wider}' is not within link {index - 1}'s {list(links[-1].actions)}")
            wider = uncovered(list(links[-1].targets), list(targets))
            if wider is not None:
                raise InvalidDelegation(f"{where}: widens the targets: '{wider}' is not within link {index - 1}'s {list(links[-1].targets)}")
        links.append(DelegationLink(index, iss, sub, actions, targets, int(iat), int(exp), jti, reason))

    if links:
        last = links[-1]
        where = f"delegation link {last.index} ({last.delegator} -> {last.delegate})"
        if last.delegate != requester:
            raise InvalidDelegation(f"{where}: delegates to '{last.delegate}', not to the requesting agent '{requester}'")
        if uncovered(list(last.actions), [action]) is not None:
            raise InvalidDelegation(f"{where}: the action '{action}' is outside the delegated actions {list(last.actions)}")
        if uncovered(list(last.targets), [target]) is not None:
            raise InvalidDelegation(f"{where}: the target '{target}' is outside the delegated targets {list(last.targets)}")
    return links
