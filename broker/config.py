"""Settings from the environment (and ``.env``); a missing secret refuses start-up."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from dotenv import dotenv_values

from .errors import ConfigError
from .filemodes import check_private

DEFAULT_RETENTION_S = 30 * 86400  # JITGATE_RETENTION_S: a closed request's hash, 30 days
MAX_RETENTION_S = 10 * 365 * 86400


class Secret:
    """A string that never shows itself in ``repr`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)


# Settings whose value is a secret: a .env holding one must be private to its owner.
SECRET_SETTINGS = ("JITGATE_KEY_ENCRYPTION_KEY", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN",
                   "MICROSOFT_APP_PASSWORD", "JITGATE_METRICS_TOKEN",
                   "JITGATE_AUDIT_EXPORT_AUTHORIZATION")


def read_env_file(path: str | os.PathLike = ".env") -> dict[str, str]:
    """The settings in a ``.env`` file, read as python-dotenv reads them (``export``, quotes,
    inline ``# comments``, ``${VAR}``); an absent file is empty. Never writes ``os.environ``.

    A file holding a secret (the key-encryption key, a chat secret, a password in
    ``REDIS_URL``) that others may read is refused, naming the ``chmod`` that fixes it."""
    p = Path(path)
    if not p.is_file():
        return {}
    values = {k: v for k, v in dotenv_values(p).items() if v is not None}
    if any(values.get(name) for name in SECRET_SETTINGS) or _has_password(values.get("REDIS_URL", "")):
        check_private(p, "settings file holding secrets")
    return values


def _has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def environment(env_file: str | os.PathLike | None = None) -> dict[str, str]:
    """What the settings are read from: the ``.env`` file (``env_file``, else
    ``JITGATE_ENV_FILE``, else ``./.env``) overlaid by the process environment, which wins."""
    path = env_file if env_file is not None else os.environ.get("JITGATE_ENV_FILE", ".env")
    return {**read_env_file(path), **os.environ}


def _int(env: dict, name: str, default: int, lo: int = 0, hi: int = 10**9) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(env: dict, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _tristate(env: dict, name: str) -> bool | None:
    """An on/off setting; unset (or empty) is None. Any word but 1/0, true/false, yes/no,
    on/off (any case) refuses to start: a typo must never quietly mean "off"."""
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return None
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be one of 1/0, true/false, yes/no, on/off (or unset), got {env.get(name)!r}")


def _bool(env: dict, name: str, default: bool) -> bool:
    """An on/off setting with a default when unset; strict as :func:`_tristate`."""
    value = _tristate(env, name)
    return default if value is None else value


def _spiffe(env: dict) -> dict:
    """JITGATE_SPIFFE_BUNDLE and JITGATE_SPIFFE_TRUST_DOMAIN: both or neither."""
    bundle = (env.get("JITGATE_SPIFFE_BUNDLE") or "").strip()
    domain = (env.get("JITGATE_SPIFFE_TRUST_DOMAIN") or "").strip()
    if bool(bundle) != bool(domain):
        raise ConfigError("JITGATE_SPIFFE_BUNDLE and JITGATE_SPIFFE_TRUST_DOMAIN must be set together "
                          "(the bundle file holds the JWT-SVID keys of that one trust domain)")
    return {"spiffe_bundle": Path(bundle) if bundle else None, "spiffe_trust_domain": domain}


MIN_METRICS_TOKEN_CHARS = 16
MIN_KEK_DISTINCT_BYTES = 8


def _audit(env: dict) -> dict:
    """The audit log's checkpoint sinks and fail-closed bounds (docs/audit.md). At least one sink
    outside Redis: the file sink is on by default (JITGATE_AUDIT_CHECKPOINT_FILE=off turns it off)."""
    raw_file = env.get("JITGATE_AUDIT_CHECKPOINT_FILE")
    file_on = (raw_file or "").strip().lower() not in FALSE_WORDS
    cp_file = Path(raw_file.strip()) if file_on and (raw_file or "").strip() else None
    witnesses = tuple(u.strip() for u in (env.get("JITGATE_AUDIT_WITNESS_URLS") or "").split(",") if u.strip())
    for url in witnesses:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ConfigError(f"JITGATE_AUDIT_WITNESS_URLS holds {url!r}, not an http(s) URL")
    syslog = (env.get("JITGATE_AUDIT_SYSLOG") or "").strip() or None
    if not file_on and not witnesses and not syslog:
        raise ConfigError("no audit checkpoint sink: set JITGATE_AUDIT_CHECKPOINT_FILE, JITGATE_AUDIT_WITNESS_URLS "
                          "or JITGATE_AUDIT_SYSLOG (signed checkpoints must leave Redis)")
    seal = _float(env, "JITGATE_AUDIT_SEAL_INTERVAL_S", 0.05)
    if not 0.01 <= seal <= 0.25:
        raise ConfigError(f"JITGATE_AUDIT_SEAL_INTERVAL_S must be between 0.01 and 0.25 (a checkpoint at least "
                          f"every 250 ms), got {seal}")
    return {"audit_file_sink": file_on, "audit_checkpoint_file": cp_file, "audit_witness_urls": witnesses, "audit_syslog": syslog,
            "audit_seal_interval_s": seal,
            "audit_checkpoint_idle_s": max(1.0, _float(env, "JITGATE_AUDIT_CHECKPOINT_IDLE_S", 60.0)),
            "audit_max_lag_s": max(0.25, _float(env, "JITGATE_AUDIT_MAX_LAG_S", 5.0)),
            "audit_sink_grace_s": max(1.0, _float(env, "JITGATE_AUDIT_SINK_GRACE_S", 60.0)),
            "audit_fail_closed": _bool(env, "JITGATE_AUDIT_FAIL_CLOSED", True),
            **_audit_export(env)}


def _audit_export(env: dict) -> dict:
    """Where sealed audit entries are forwarded (docs/audit-export.md): none by default."""
    urls = tuple(u.strip() for u in (env.get("JITGATE_AUDIT_EXPORT") or "").split(",") if u.strip())
    for url in urls:
        p = urlsplit(url)
        try:
            ok = bool((p.scheme in ("http", "https") and p.hostname) or (p.scheme == "syslog" and p.hostname and p.port is not None)
                      or (p.scheme == "syslog" and not p.netloc and p.path.startswith("/")))
        except ValueError:  # a port that is not a number
            ok = False
        if not ok:
            raise ConfigError(f"JITGATE_AUDIT_EXPORT holds {url!r}: an https:// or http:// collector URL, "
                              "syslog://host:port (UDP) or syslog:///path/to/socket (a local datagram socket)")
    return {"audit_export": urls,
            "audit_export_format": _choice(env, "JITGATE_AUDIT_EXPORT_FORMAT", ("json", "ocsf"), "json"),
            "audit_export_batch": _int(env, "JITGATE_AUDIT_EXPORT_BATCH", 500, 1, 10000),
            "audit_export_interval_s": min(60.0, max(0.05, _float(env, "JITGATE_AUDIT_EXPORT_INTERVAL_S", 0.5))),
            "audit_export_lag_warn_s": max(1.0, _float(env, "JITGATE_AUDIT_EXPORT_LAG_WARN_S", 60.0)),
            "audit_export_authorization": Secret((env.get("JITGATE_AUDIT_EXPORT_AUTHORIZATION") or "").strip())}


def _metrics(env: dict) -> dict:
    """JITGATE_METRICS_TOKEN (a bearer token /metrics requires) or JITGATE_METRICS_PUBLIC=1
    (no authentication, on purpose); neither: /metrics is refused. Not both."""
    token = (env.get("JITGATE_METRICS_TOKEN") or "").strip()
    public = _bool(env, "JITGATE_METRICS_PUBLIC", False)
    if token and public:
        raise ConfigError("JITGATE_METRICS_TOKEN and JITGATE_METRICS_PUBLIC=1 contradict each other: "
                          "keep the token (scrapers send it) or make /metrics public, not both")
    if token and len(token) < MIN_METRICS_TOKEN_CHARS:
        raise ConfigError(f"JITGATE_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_CHARS} characters "
                          "(e.g. `openssl rand -hex 32`)")
    return {"metrics_token": Secret(token), "metrics_public": public}


def decode_kek(raw: str) -> bytes:
    """The key-encryption key: 32 bytes, URL-safe or standard base64."""
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except Exception:  # noqa: BLE001 - any decoding failure is the same config error
        raise ConfigError("JITGATE_KEY_ENCRYPTION_KEY is not valid base64") from None
    if len(key) != 32:
        raise ConfigError("JITGATE_KEY_ENCRYPTION_KEY must decode to 32 bytes (try `jitgate init`)")
    # 32 random bytes hold about 30 distinct values; fewer than 8 is a made-up key (zeros, one
    # repeated byte, a short pattern), which any guess finds. Odds for a random key: about 1e-37.
    if len(set(key)) < MIN_KEK_DISTINCT_BYTES:
        raise ConfigError(f"JITGATE_KEY_ENCRYPTION_KEY is not random ({len(set(key))} distinct byte values in 32, "
                          "e.g. all zeros or one repeated byte): generate one with `jitgate init` or "
                          "`openssl rand -base64 32`")
    return key


@dataclass(frozen=True)
class Settings:
    """Everything the broker reads from its environment. Build with :meth:`from_env`."""

    issuer: str
    key_encryption_key: bytes = field(repr=False)
    redis_url: str | None = None
    redis_prefix: str = "jitgate:"
    redis_max_connections: int = 256
    data_dir: Path = Path(".jitgate")
    policy_dir: Path = Path("policies")
    agents_file: Path = Path("agents.yaml")
    approvers_file: Path = Path("approvers.yaml")
    targets_file: Path = Path("targets.yaml")
    request_ttl_s: int = 900
    retention_s: int = DEFAULT_RETENTION_S  # how long a closed request stays readable
    collect_ttl_s: int = 300
    max_duration_s: int = 3600
    signing_alg: str = "ES256"
    key_rotation_s: int = 86400
    sweep_interval_s: float = 0.2
    reminder_interval_s: int = 300
    breakglass_max_s: int = 3600
    breakglass_review_s: int = 86400
    breakglass_max_active: int = 2
    breakglass_max_per_day: int = 5
    policy_review_days: int = 90  # remind security when no policy review is recorded for this long; 0: off
    # Agents: DPoP-bound tokens, delegation chains, SPIFFE JWT-SVIDs (docs/agents.md).
    require_dpop: bool = False
    delegation_max_depth: int = 3
    spiffe_bundle: Path | None = None
    spiffe_trust_domain: str = ""
    escalate_after_s: int = 600
    backup_group: str | None = None  # escalation target when the policy names no @backup_group
    max_body_bytes: int = 65536
    security_group: str = "security"
    oncall_group: str = "on-call"
    email_binding: bool = False
    # Set only by `jitgate serve --first-run` (what `make run` passes), never from the
    # environment: the console then prints its first-run banner with a live sign-in link.
    first_run: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    # The environment these settings were read from (the process environment over .env):
    # each desk's factory reads its own variables from it (bot/slack/settings.py, bot/teams/settings.py).
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # The local web console: None = on only when no chat platform is configured.
    console: bool | None = None
    # /metrics: a scraper's bearer token, or served to anyone only when made public on purpose.
    metrics_token: Secret = field(default_factory=lambda: Secret(""), repr=False)
    metrics_public: bool = False
    # Secrets of the credential plugins (JITGATE_CREDENTIAL_*, named by targets.yaml), and how
    # often recorded credentials are settled (revoked when their grant is over) and reconciled.
    credential_secrets: dict = field(default_factory=dict, repr=False)
    credential_settle_s: float = 0.5
    credential_reconcile_s: float = 300.0
    # Proposals that would reach people, per agent and per target and minute (token buckets
    # in Redis shared by the replicas; 0: no limit). Over it: 429 with Retry-After, nobody asked.
    agent_proposals_per_min: int = 10
    target_proposals_per_min: int = 30
    # At most this many requests of one agent wait for people at once (0: no limit).
    max_open_per_agent: int = 10
    # Denial memory (issue 19, item 2): after a person denies, the same action on the same
    # target is denied at once for this long (0: off), for the same agent and the agents of its
    # delegation chain ("agent"), or for every agent of the same owner ("owner").
    denial_cooldown_s: int = 1800
    denial_memory_scope: str = "agent"
    # Dedupe (issue 19, item 1): the same task proposed again while the agent's request for it
    # is pending joins that request instead of asking people twice.
    dedupe: bool = True
    # Alternate paths (issue 19, item 3): within this window after a denial (by a person or by
    # policy), a proposal of the same scope (denial_memory_scope) on the same target with another
    # action, or the same action on another target of the same environment, is linked to it; this
    # many linked attempts in the window raise one security alert and, if set, suspend the agent
    # until a security member reinstates it. A window of 0 turns it off.
    alternate_path_window_s: int = 1800
    alternate_path_alert_after: int = 3
    alternate_path_suspend: bool = False
    # OpenID Shared Signals (broker/ssf, docs/ssf.md): push only to https receivers unless
    # allowed (development, tests on loopback); streams per resource server; the longest poll
    # wait; one push's timeout; SETs held per stream before the oldest are dropped.
    ssf_push_allow_http: bool = False
    ssf_max_streams: int = 5
    ssf_poll_max_wait_s: int = 30
    ssf_push_timeout_s: float = 5.0
    ssf_max_queued: int = 10000
    # The audit log's checkpoint sinks outside Redis and its fail-closed bounds (docs/audit.md).
    audit_file_sink: bool = True
    audit_checkpoint_file: Path | None = None  # None: <data dir>/audit/checkpoints.jsonl

    @property
    def audit_checkpoint_path(self) -> Path | None:
        """Where the file sink appends checkpoints (None: the file sink is off)."""
        if not self.audit_file_sink:
            return None
        return self.audit_checkpoint_file or self.data_dir / "audit" / "checkpoints.jsonl"

    # Step-up (issue 19, item 6): the WebAuthn relying party the console asks keys for. None:
    # from JITGATE_ISSUER (the console's public URL): its host name and its origin.
    webauthn_rp_id: str | None = None
    webauthn_origin: str | None = None

    @property
    def step_up_origin(self) -> str:
        """The console's origin as browsers see it: JITGATE_WEBAUTHN_ORIGIN, else the issuer's."""
        if self.webauthn_origin:
            return self.webauthn_origin
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def step_up_rp_id(self) -> str:
        """The WebAuthn RP id: JITGATE_WEBAUTHN_RP_ID, else the host name of :attr:`step_up_origin`."""
        return self.webauthn_rp_id or (urlsplit(self.step_up_origin).hostname or "")

    audit_witness_urls: tuple[str, ...] = ()
    audit_syslog: str | None = None
    audit_seal_interval_s: float = 0.05
    audit_checkpoint_idle_s: float = 60.0
    audit_max_lag_s: float = 5.0
    audit_sink_grace_s: float = 60.0
    audit_fail_closed: bool = True
    # The audit export sink (broker/auditexport.py): destinations, format, batch, poll interval,
    # the lag that is logged, the collector's Authorization header.
    audit_export: tuple[str, ...] = ()
    audit_export_format: str = "json"
    audit_export_batch: int = 500
    audit_export_interval_s: float = 0.5
    audit_export_lag_warn_s: float = 60.0
    audit_export_authorization: Secret | None = None

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        """Read settings from ``env`` (default: :func:`environment`, the process environment over
        ``.env``); raise :class:`ConfigError` naming the first missing or bad one."""
        env = environment() if env is None else dict(env)
        issuer = env.get("JITGATE_ISSUER", "").strip()
        if not issuer:
            raise ConfigError("JITGATE_ISSUER is not set (the broker's public URL, e.g. https://jitgate.example.com)")
        kek_raw = env.get("JITGATE_KEY_ENCRYPTION_KEY", "").strip()
        if not kek_raw:
            raise ConfigError(
                "JITGATE_KEY_ENCRYPTION_KEY is not set: it encrypts the token signing keys at rest "
                "(generate one with `jitgate init`)"
            )
        alg = env.get("JITGATE_SIGNING_ALG", "ES256")
        if alg not in ("ES256", "EdDSA"):
            raise ConfigError(f"JITGATE_SIGNING_ALG must be ES256 or EdDSA, got {alg!r}")
        return cls(
            issuer=issuer.rstrip("/"),
            key_encryption_key=decode_kek(kek_raw),
            redis_url=env.get("REDIS_URL") or None,
            redis_prefix=env.get("JITGATE_REDIS_PREFIX", "jitgate:"),
            redis_max_connections=_int(env, "JITGATE_REDIS_MAX_CONNECTIONS", 256, 4, 10000),
            data_dir=Path(env.get("JITGATE_DATA_DIR", ".jitgate")),
            policy_dir=Path(env.get("JITGATE_POLICY_DIR", "policies")),
            agents_file=Path(env.get("JITGATE_AGENTS_FILE", "agents.yaml")),
            approvers_file=Path(env.get("JITGATE_APPROVERS_FILE", "approvers.yaml")),
            targets_file=Path(env.get("JITGATE_TARGETS_FILE", "targets.yaml")),
            request_ttl_s=_int(env, "JITGATE_REQUEST_TTL_S", 900, 1, 7 * 86400),
            retention_s=_int(env, "JITGATE_RETENTION_S", DEFAULT_RETENTION_S, 3600, MAX_RETENTION_S),
            collect_ttl_s=_int(env, "JITGATE_COLLECT_TTL_S", 300, 1, 86400),
            max_duration_s=_int(env, "JITGATE_MAX_DURATION_S", 3600, 1, 7 * 86400),
            signing_alg=alg,
            key_rotation_s=_int(env, "JITGATE_KEY_ROTATION_S", 86400, 60, 365 * 86400),
            sweep_interval_s=_float(env, "JITGATE_SWEEP_INTERVAL_S", 0.2),
            reminder_interval_s=_int(env, "JITGATE_REMINDER_INTERVAL_S", 300, 0, 86400),
            breakglass_max_s=_int(env, "JITGATE_BREAKGLASS_MAX_S", 3600, 60, 86400),
            breakglass_review_s=_int(env, "JITGATE_BREAKGLASS_REVIEW_S", 86400, 60, 30 * 86400),
            breakglass_max_active=_int(env, "JITGATE_BREAKGLASS_MAX_ACTIVE", 2, 1, 100),
            breakglass_max_per_day=_int(env, "JITGATE_BREAKGLASS_MAX_PER_DAY", 5, 1, 1000),
            policy_review_days=_int(env, "JITGATE_POLICY_REVIEW_DAYS", 90, 0, 3650),
            require_dpop=_bool(env, "JITGATE_REQUIRE_DPOP", False),
            delegation_max_depth=_int(env, "JITGATE_DELEGATION_MAX_DEPTH", 3, 1, 8),
            **_spiffe(env),
            escalate_after_s=_int(env, "JITGATE_ESCALATE_AFTER_S", 600, 0, 7 * 86400),
            backup_group=(env.get("JITGATE_BACKUP_GROUP") or "").strip() or None,
            max_body_bytes=_int(env, "JITGATE_MAX_BODY_BYTES", 65536, 1024, 10 * 1024 * 1024),
            security_group=env.get("JITGATE_SECURITY_GROUP", "security"),
            oncall_group=env.get("JITGATE_ONCALL_GROUP", "on-call"),
            email_binding=_bool(env, "JITGATE_EMAIL_BINDING", False),
            host=env.get("JITGATE_HOST", "127.0.0.1"),
            port=_int(env, "JITGATE_PORT", 8080, 0, 65535),
            console=_tristate(env, "JITGATE_CONSOLE"),
            **_metrics(env),
            env=env,
            credential_secrets={k: v for k, v in env.items() if k.startswith("JITGATE_CREDENTIAL_")
                                and k not in ("JITGATE_CREDENTIAL_SETTLE_S", "JITGATE_CREDENTIAL_RECONCILE_S")},
            credential_settle_s=max(0.05, _float(env, "JITGATE_CREDENTIAL_SETTLE_S", 0.5)),
            credential_reconcile_s=max(1.0, _float(env, "JITGATE_CREDENTIAL_RECONCILE_S", 300.0)),
            agent_proposals_per_min=_int(env, "JITGATE_AGENT_PROPOSALS_PER_MIN", 10, 0, 100000),
            target_proposals_per_min=_int(env, "JITGATE_TARGET_PROPOSALS_PER_MIN", 30, 0, 100000),
            max_open_per_agent=_int(env, "JITGATE_MAX_OPEN_PER_AGENT", 10, 0, 100000),
            denial_cooldown_s=_int(env, "JITGATE_DENIAL_COOLDOWN_S", 1800, 0, 30 * 86400),
            denial_memory_scope=_choice(env, "JITGATE_DENIAL_MEMORY_SCOPE", ("agent", "owner"), "agent"),
            dedupe=_bool(env, "JITGATE_DEDUPE", True),
            alternate_path_window_s=_int(env, "JITGATE_ALTERNATE_PATH_WINDOW_S", 1800, 0, 30 * 86400),
            alternate_path_alert_after=_int(env, "JITGATE_ALTERNATE_PATH_ALERT_AFTER", 3, 1, 1000),
            alternate_path_suspend=_bool(env, "JITGATE_ALTERNATE_PATH_SUSPEND", False),
            ssf_push_allow_http=_bool(env, "JITGATE_SSF_PUSH_ALLOW_HTTP", False),
            ssf_max_streams=_int(env, "JITGATE_SSF_MAX_STREAMS", 5, 1, 100),
            ssf_poll_max_wait_s=_int(env, "JITGATE_SSF_POLL_MAX_WAIT_S", 30, 0, 300),
            ssf_push_timeout_s=min(60.0, max(0.5, _float(env, "JITGATE_SSF_PUSH_TIMEOUT_S", 5.0))),
            ssf_max_queued=_int(env, "JITGATE_SSF_MAX_QUEUED", 10000, 100, 1_000_000),
            **_audit(env),
            **_webauthn(env),
        )


def _webauthn(env: Mapping[str, str]) -> dict:
    """JITGATE_WEBAUTHN_ORIGIN (scheme://host[:port], no path) and JITGATE_WEBAUTHN_RP_ID (a host
    name the origin's host is, or ends with after a dot): WebAuthn refuses anything else anyway,
    so a mismatch is said at start rather than at the first approval."""
    origin = (env.get("JITGATE_WEBAUTHN_ORIGIN") or "").strip().rstrip("/") or None
    rp_id = (env.get("JITGATE_WEBAUTHN_RP_ID") or "").strip() or None
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.path or parts.query:
            raise ConfigError(f"JITGATE_WEBAUTHN_ORIGIN must look like https://console.example.com, got {origin!r}")
    host = urlsplit(origin or env.get("JITGATE_ISSUER", "")).hostname or ""
    if rp_id is not None and host and host != rp_id and not host.endswith("." + rp_id):
        raise ConfigError(f"JITGATE_WEBAUTHN_RP_ID {rp_id!r} must be the console's host name {host!r} "
                          "or a parent domain of it")
    return {"webauthn_origin": origin, "webauthn_rp_id": rp_id}


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = (env.get(name) or default).strip()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def load_settings(env_file: str | os.PathLike | None = None) -> Settings:
    """The settings of this process, read from :func:`environment` (the process environment
    over ``.env``); raises :class:`ConfigError` naming a missing or wrong setting."""
    return Settings.from_env(environment(env_file))


def redis_url_for_tools(settings: Settings) -> str:
    """Where an operator command (run beside a broker, not in it) finds Redis: ``REDIS_URL``,
    or the socket of the embedded Redis that ``jitgate serve`` started; raises
    :class:`ConfigError` when there is neither."""
    if settings.redis_url:
        return settings.redis_url
    sock = settings.data_dir / "redis" / "redis.sock"
    if sock.exists():
        return f"unix://{sock.resolve()}?db=0"
    raise ConfigError("REDIS_URL is unset and no embedded Redis is running (start `jitgate serve` first)")
