"""For resource servers: receive the broker's Shared Signals (SSF 1.0, CAEP 1.0) so that a
token revoked or completed before its ``exp`` is refused at once, without introspecting each
request.

:meth:`TokenVerifier.subscribe` creates a poll stream (RFC 8936) at the broker and keeps a
background thread long-polling it; :meth:`TokenVerifier.receive_push` is the body of a push
endpoint (RFC 8935) for servers the broker can reach. Either way each Security Event Token is
verified (``typ`` secevent+jwt, the broker's JWKS, ``iss``, ``aud`` = this server) before the
``jti`` it names is refused.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from ..jose import (
    HeaderNotAllowed,
    JoseError,
    UnusableKey,
    check_header,
    make_assertion,
    parse_public_jwk,
    split_jws,
    verify_jws_signature,
)
from .credentials import load_key
from .errors import InvalidToken, TransportError, api_error

if TYPE_CHECKING:
    from .verify import TokenVerifier

CAEP_SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
SSF_VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
SECEVENT_TYPE = "application/secevent+jwt"
# A revoked jti is remembered this long (longer than any token the broker issues: 7 days at most).
REVOKED_TTL_S = 8 * 86400.0


class RevokedTokens:
    """The ``jti`` values of tokens the broker said ended early; bounded, oldest forgotten first."""

    def __init__(self, max_entries: int = 200_000, ttl_s: float = REVOKED_TTL_S) -> None:
        self._entries: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_s
        self._lock = threading.Lock()

    def add(self, jti: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            self._entries[jti] = now + self._ttl
            self._entries.move_to_end(jti)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def __contains__(self, jti: object) -> bool:
        with self._lock:
            until = self._entries.get(jti) if isinstance(jti, str) else None
            return until is not None and until > time.time()

    def __len__(self) -> int:
        return len(self._entries)


class SetRefused(InvalidToken):
    """A Security Event Token this server will not act on; ``error`` is the RFC 8935 section 2.4
    code (``invalid_request``, ``invalid_key``, ``invalid_issuer``, ``invalid_audience``)."""


def verify_set(token: str, jwks: dict, *, issuer: str, audience: str) -> dict:
    """The claims of a SET from the broker: ``typ`` secevent+jwt (RFC 8417 section 2.3), signed
    by a JWKS key (ES256/EdDSA), ``iss`` the issuer, ``aud`` this server, ``jti``, ``iat`` and
    an ``events`` object. Raises :class:`SetRefused` naming the failed check."""
    try:
        header, claims = split_jws(token, "security event token")
    except JoseError as exc:
        raise SetRefused(str(exc), "invalid_request") from None
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ("secevent+jwt", SECEVENT_TYPE):
        raise SetRefused("the SET typ must be secevent+jwt", "invalid_request")
    try:
        alg = check_header(header)
    except HeaderNotAllowed as exc:
        raise SetRefused(f"the SET header is refused: {exc}", "invalid_key") from None
    kid = header.get("kid")
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    jwk = next((k for k in keys or [] if isinstance(k, dict) and k.get("kid") == kid), None) if kid else None
    if jwk is None:
        raise SetRefused("the SET is signed with a key not in the JWKS", "invalid_key")
    try:
        key, _kid, key_alg = parse_public_jwk(jwk)
    except UnusableKey as exc:
        raise SetRefused(f"the JWKS key is unusable: {exc}", "invalid_key") from None
    if key_alg != alg or not verify_jws_signature(key, alg, token):
        raise SetRefused("the SET signature does not verify", "invalid_key")
    if claims.get("iss") != issuer.rstrip("/"):
        raise SetRefused("the SET was issued by another issuer", "invalid_issuer")
    aud = claims.get("aud")
    if aud != audience and not (isinstance(aud, list) and audience in aud):
        raise SetRefused("the SET is meant for another receiver", "invalid_audience")
    if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("events"), dict):
        raise SetRefused("the SET lacks its jti or events", "invalid_request")
    return claims


def revoked_jti(claims: dict, issuer: str) -> str | None:
    """The access token a ``session-revoked`` SET names (its ``jwt_id`` subject from this
    issuer), or None for any other event."""
    event = claims["events"].get(CAEP_SESSION_REVOKED)
    if not isinstance(event, dict):
        return None
    subject = claims.get("sub_id") or event.get("subject")
    if not isinstance(subject, dict) or subject.get("format") != "jwt_id" or subject.get("iss") != issuer:
        return None
    jti = subject.get("jti")
    return jti if isinstance(jti, str) else None


class Subscription:
    """A poll stream at the broker (RFC 8936) read by a daemon thread: each SET is verified,
    its revoked ``jti`` handed to the verifier, and acknowledged in the next poll. Every wait
    has a deadline; failures back off up to 30 s. ``healthy(max_age_s)`` says whether a poll
    succeeded within ``max_age_s`` (the verifier can refuse everything otherwise)."""

    def __init__(self, verifier: "TokenVerifier", server_id: str, private_key: Any, *, stream_id: str | None = None,
                 description: str = "jitgate TokenVerifier", timeout_s: float = 60.0) -> None:
        self.verifier = verifier
        self.server_id = server_id
        self._key = load_key(private_key)
        self.stream_id = stream_id
        self.description = description
        self.received = 0
        self.last_ok = float("-inf")
        self._polling_since: float | None = None  # when the poll in flight was sent
        self.last_error: str | None = None
        self.verification_states: list[str] = []
        self._timeout_s = timeout_s
        self._http = httpx.Client(timeout=timeout_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_url = ""

    def _headers(self) -> dict:
        return {"Authorization": "Bearer " + make_assertion(self._key, agent_id=self.server_id,
                                                            audience=self.verifier.issuer)}

    def _url(self, endpoint_url: str) -> str:
        # The broker names its poll endpoint on its issuer; this server reaches it at broker_url.
        return self.verifier.broker_url + urlsplit(endpoint_url).path

    def open(self) -> "Subscription":
        """Create the poll stream (or read the given one) and start polling."""
        base = f"{self.verifier.broker_url}/ssf/stream"
        try:
            if self.stream_id is None:
                resp = self._http.post(base, json={"description": self.description}, headers=self._headers())
            else:
                resp = self._http.get(base, params={"stream_id": self.stream_id}, headers=self._headers())
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot open the SSF stream: {exc}") from exc
        if resp.status_code not in (200, 201):
            raise api_error(resp.status_code, _body(resp))
        cfg = resp.json()
        if cfg.get("iss") != self.verifier.issuer:
            raise TransportError("the SSF stream's iss is not the broker's issuer")  # SSF 1.0 section 8.1.1.1
        self.stream_id = cfg["stream_id"]
        self.last_ok = time.monotonic()
        self._poll_url = self._url(cfg["delivery"]["endpoint_url"])
        self._thread = threading.Thread(target=self._run, name=f"jitgate-ssf-{self.stream_id}", daemon=True)
        self._thread.start()
        return self

    def close(self, *, delete: bool = False) -> None:
        """Stop polling; with ``delete`` also delete the stream at the broker."""
        self._stop.set()
        if delete and self.stream_id:
            try:
                httpx.delete(f"{self.verifier.broker_url}/ssf/stream", params={"stream_id": self.stream_id},
                             headers=self._headers(), timeout=5)
            except httpx.HTTPError:
                pass
        self._http.close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def healthy(self, max_age_s: float) -> bool:
        """Whether the broker answered within ``max_age_s``, or a long poll is open (the broker
        holds it until a SET comes; a broker that goes away breaks it at once, a silent network
        holds it at most ``timeout_s``)."""
        now = time.monotonic()
        since = self._polling_since
        return now - self.last_ok <= max_age_s or (since is not None and now - since < self._timeout_s)

    def _run(self) -> None:
        ack: list[str] = []
        errs: dict[str, dict] = {}
        backoff = 0.2
        while not self._stop.is_set():
            body: dict[str, Any] = {"returnImmediately": False, "maxEvents": 100}
            if ack:
                body["ack"] = ack
            if errs:
                body["setErrs"] = errs
            try:
                self._polling_since = time.monotonic()
                try:
                    resp = self._http.post(self._poll_url, json=body, headers=self._headers())
                finally:
                    self._polling_since = None
                if resp.status_code != 200:
                    raise api_error(resp.status_code, _body(resp))
                sets = resp.json().get("sets") or {}
            except Exception as exc:  # noqa: BLE001 - the broker away or refusing: retry with back-off
                if self._stop.is_set():
                    return
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self.last_ok = time.monotonic()
            self.last_error = None
            backoff = 0.2
            ack, errs = [], {}
            for set_jti, token in sets.items():
                try:
                    self.verifier.handle_set(token, self.server_id, self)
                    ack.append(set_jti)
                    self.received += 1
                except InvalidToken as exc:
                    errs[set_jti] = {"err": exc.error, "description": exc.reason}
                except Exception as exc:  # noqa: BLE001 - e.g. the JWKS unreachable: not acknowledged, so it comes again
                    self.last_error = f"{exc.__class__.__name__}: {exc}"


def _body(resp: httpx.Response) -> Any:
    try:
        return resp.json() if resp.content else None
    except ValueError:
        return None
