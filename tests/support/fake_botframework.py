"""Local stand-ins for the far side of the Bot Framework wire, on 127.0.0.1 ephemeral ports.

* ``FakeBotFramework`` (plain http): the channel's OpenID metadata document and JWKS (an
  RS256 key endorsed for ``msteams``), and a Bot Connector that records
  ``POST /v3/conversations/...``, ``PUT .../activities/{id}`` and ``POST /v3/conversations``
  (opening a 1:1 chat), answers them like Teams does, and refuses calls without a bearer
  token issued by the login stand-in.
* ``FakeLogin`` (TLS, with its own CA): the Entra login authority's OpenID configuration
  and token endpoint for the client-credentials grant, so MSAL itself runs offline.
  Point ``REQUESTS_CA_BUNDLE`` at ``ca_path`` to trust it.

Both run in threads: botbuilder fetches the OpenID metadata with blocking ``requests``
and MSAL is synchronous, so a stand-in on the test's event loop would deadlock.
Tokens are minted with the fake's key: ``iss`` = the configured issuer, ``aud`` = the app
id, and the ``serviceurl`` claim, like the Bot Connector's.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import secrets
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

APP_ID = "00000000-0000-0000-0000-00000000a991"
APP_PASSWORD = "test-app-password"
TENANT = "11111111-2222-3333-4444-555555555555"
ISSUER = "https://api.botframework.test"
SCOPE = "https://api.botframework.com/.default"


def _b64u(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64json(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key, kid: str, endorsements: list[str]) -> dict:
    nums = key.public_key().public_numbers()
    return {"kty": "RSA", "use": "sig", "kid": kid, "n": _b64u(nums.n), "e": _b64u(nums.e),
            "endorsements": endorsements}


@dataclass
class Call:
    """One request the Bot Connector stand-in received."""

    method: str
    path: str  # URL-decoded
    headers: dict
    body: dict | None
    at: float
    status: int = 200

    @property
    def text(self) -> str:
        return (self.body or {}).get("text") or ""

    @property
    def card(self) -> dict | None:
        for a in (self.body or {}).get("attachments") or []:
            if a.get("contentType") == "application/vnd.microsoft.card.adaptive":
                return a.get("content")
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _serve(handler_cls, tls: ssl.SSLContext | None = None) -> tuple[_Server, threading.Thread]:
    server = _Server(("127.0.0.1", 0), handler_cls)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner = None  # set on the subclass

    def log_message(self, *args):  # quiet
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, payload=None, headers: dict | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.owner.handle(self, "GET", self._body())

    def do_POST(self):
        self.owner.handle(self, "POST", self._body())

    def do_PUT(self):
        self.owner.handle(self, "PUT", self._body())

    def do_DELETE(self):
        self.owner.handle(self, "DELETE", self._body())


class FakeLogin:
    """The Entra login authority, over TLS with a CA of its own."""

    def __init__(self, workdir: Path, *, app_id: str = APP_ID, password: str = APP_PASSWORD, tenant: str = TENANT):
        self.app_id, self.password, self.tenant = app_id, password, tenant
        self.issued: set[str] = set()
        self.requests: list[dict] = []
        self.ca_path = workdir / "fake-login-ca.pem"
        self._tls = self._make_tls(workdir)
        handler = type("LoginHandler", (_Handler,), {"owner": self})
        self.server, self.thread = _serve(handler, self._tls)
        self.base = f"https://127.0.0.1:{self.server.server_port}"
        self.authority = f"{self.base}/{tenant}"

    def _make_tls(self, workdir: Path) -> ssl.SSLContext:
        now = dt.datetime.now(dt.timezone.utc)
        ca_key, leaf_key = rsa_key(), rsa_key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jitgate test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        cert_path, key_path = workdir / "fake-login.pem", workdir / "fake-login.key"
        cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_path, key_path)
        return ctx

    def handle(self, h: _Handler, method: str, raw: bytes) -> None:
        path = h.path.split("?")[0]
        prefix = f"/{self.tenant}"
        if method == "GET" and path == f"{prefix}/v2.0/.well-known/openid-configuration":
            h._send(200, {
                "issuer": f"{self.authority}/v2.0",
                "authorization_endpoint": f"{self.authority}/oauth2/v2.0/authorize",
                "token_endpoint": f"{self.authority}/oauth2/v2.0/token",
                "jwks_uri": f"{self.authority}/discovery/v2.0/keys",
            })
            return
        if method == "POST" and path == f"{prefix}/oauth2/v2.0/token":
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            self.requests.append(form)
            if (form.get("grant_type") != "client_credentials" or form.get("client_id") != self.app_id
                    or form.get("client_secret") != self.password or form.get("scope") != SCOPE):
                h._send(401, {"error": "invalid_client", "error_description": "bad client credentials"})
                return
            token = "fake-access-token-" + secrets.token_hex(8)
            self.issued.add(token)
            h._send(200, {"token_type": "Bearer", "expires_in": 3600, "access_token": token})
            return
        h._send(404, {"error": "not_found"})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Plan:
    """A scripted answer for the next Bot Connector call(s) that ``when`` accepts."""

    status: int
    headers: dict = field(default_factory=dict)
    when: object = None  # a predicate on the Call; None: any call


class FakeBotFramework:
    """OpenID metadata + JWKS + Bot Connector, over plain http on 127.0.0.1."""

    def __init__(self, login: FakeLogin, *, app_id: str = APP_ID, issuer: str = ISSUER, tenant: str = TENANT):
        self.login = login
        self.app_id, self.issuer, self.tenant = app_id, issuer, tenant
        self.key = rsa_key()
        self.kid = "fake-kid-" + secrets.token_hex(4)
        self.nonce = secrets.token_hex(6)  # botbuilder caches metadata per URL, process-wide
        self.calls: list[Call] = []
        self.rejected: list[Call] = []
        self.plans: deque[Plan] = deque()
        self.channels: dict[str, list[dict]] = {}  # team id -> channel list for /v3/teams/{id}/conversations
        self._ids = 0
        self._lock = threading.Lock()
        handler = type("ConnectorHandler", (_Handler,), {"owner": self})
        self.server, self.thread = _serve(handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.metadata_url = f"{self.base}/{self.nonce}/v1/.well-known/openidconfiguration"
        self.jwks_url = f"{self.base}/{self.nonce}/v1/.well-known/keys"
        self.service_url = f"{self.base}/svc/"

    # ----------------------------------------------------------------- tokens
    def token(self, *, aud: str | None = None, iss: str | None = None, serviceurl: str | None = None,
              exp_in: float = 3600, now: float | None = None, key=None, kid: str | None = None,
              alg: str = "RS256", omit: tuple = (), secret: bytes | None = None) -> str:
        """A Bot Framework channel token as the Bot Connector would send it."""
        now = time.time() if now is None else now
        claims = {
            "iss": self.issuer if iss is None else iss,
            "aud": self.app_id if aud is None else aud,
            "serviceurl": self.service_url if serviceurl is None else serviceurl,
            "nbf": int(now) - 5,
            "iat": int(now) - 5,
            "exp": int(now + exp_in),
        }
        for name in omit:
            claims.pop(name, None)
        headers = {"kid": self.kid if kid is None else kid}
        if alg == "none" or alg.startswith("HS"):
            # Hand-made: PyJWT refuses to use a public key as an HMAC secret, which is the attack.
            head = _b64json({"alg": alg, "typ": "JWT", **headers})
            signing_input = f"{head}.{_b64json(claims)}"
            if alg == "none":
                return signing_input + "."
            mac = hmac.new(secret or self.public_pem(), signing_input.encode(), hashlib.sha256).digest()
            return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        return jwt.encode(claims, key or self.key, algorithm=alg, headers=headers)

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    # ----------------------------------------------------------------- records
    def fail_next(self, status: int, times: int = 1, when=None, **headers: str) -> None:
        """Answer the next ``times`` Bot Connector calls (those ``when(call)`` accepts) with
        ``status``, e.g. 429 with ``Retry_After="1"``."""
        for _ in range(times):
            self.plans.append(Plan(status, {k.replace("_", "-"): v for k, v in headers.items()}, when))

    def reset(self) -> None:
        self.calls.clear()
        self.rejected.clear()
        self.plans.clear()
        self.channels.clear()

    def posts(self, conversation: str | None = None) -> list[Call]:
        """New top-level messages (``POST /v3/conversations/{id}/activities``)."""
        return [c for c in self.calls if c.method == "POST" and c.path.endswith("/activities")
                and (conversation is None or c.path == f"/svc/v3/conversations/{conversation}/activities")]

    def replies(self, conversation: str | None = None, activity_id: str | None = None) -> list[Call]:
        """Replies in a thread (``POST /v3/conversations/{id}/activities/{activityId}``)."""
        out = []
        for c in self.calls:
            if c.method != "POST" or "/activities/" not in c.path:
                continue
            conv, _, aid = c.path[len("/svc/v3/conversations/"):].partition("/activities/")
            if (conversation is None or conv == conversation) and (activity_id is None or aid == activity_id):
                out.append(c)
        return out

    def created(self) -> list[Call]:
        """Conversations the bot opened (``POST /v3/conversations``, e.g. a personal chat)."""
        return [c for c in self.calls if c.method == "POST" and c.path == "/svc/v3/conversations"]

    def updates(self, activity_id: str | None = None) -> list[Call]:
        """Edits (``PUT /v3/conversations/{id}/activities/{activityId}``)."""
        return [c for c in self.calls if c.method == "PUT" and (activity_id is None or c.path.endswith("/" + activity_id))]

    # ----------------------------------------------------------------- serving
    def handle(self, h: _Handler, method: str, raw: bytes) -> None:
        path = unquote(h.path.split("?")[0])
        if method == "GET" and path == f"/{self.nonce}/v1/.well-known/openidconfiguration":
            h._send(200, {"issuer": self.issuer, "jwks_uri": self.jwks_url,
                          "id_token_signing_alg_values_supported": ["RS256"]})
            return
        if method == "GET" and path == f"/{self.nonce}/v1/.well-known/keys":
            h._send(200, {"keys": [public_jwk(self.key, self.kid, ["msteams"])]})
            return
        if not path.startswith("/svc/v3/"):
            h._send(404, {"error": {"code": "NotFound", "message": path}})
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        call = Call(method, path, dict(h.headers.items()), body, time.time())
        auth = h.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.login.issued:
            call.status = 401
            self.rejected.append(call)
            h._send(401, {"error": {"code": "Unauthorized", "message": "no valid bearer token"}})
            return
        with self._lock:
            plan = next((p for p in self.plans if p.when is None or p.when(call)), None)
            if plan is not None:
                self.plans.remove(plan)
        if plan is not None:
            call.status = plan.status
            self.rejected.append(call)
            h._send(plan.status, {"error": {"code": "Throttled" if plan.status == 429 else "Error", "message": "planned"}},
                    plan.headers)
            return
        self.calls.append(call)
        rest = path[len("/svc/v3/"):]
        if method == "GET" and rest.startswith("teams/") and rest.endswith("/conversations"):
            team = rest[len("teams/"):-len("/conversations")]
            h._send(200, {"conversations": self.channels.get(team, [])})
            return
        if method == "POST" and rest == "conversations":
            # createConversation: a 1:1 chat with one user is always the same conversation.
            members = (body or {}).get("members") or [{}]
            who = str(members[0].get("id") or "nobody").replace(":", "-")
            h._send(201, {"id": f"a:1personal-{who}", "activityId": None})
            return
        if rest.startswith("conversations/") and "/activities" in rest:
            with self._lock:
                self._ids += 1
                new_id = f"1700000000{self._ids:03d}"
            if method == "POST":
                h._send(201, {"id": new_id})
                return
            if method == "PUT":
                h._send(200, {"id": rest.rsplit("/", 1)[1]})
                return
        h._send(404, {"error": {"code": "NotFound", "message": path}})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
