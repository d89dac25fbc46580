"""OpenBao / HashiCorp Vault credentials: a token per grant (hvac; the API is the same).

Each grant gets an orphan token (it does not die with jitgate's own token, and revoking it
revokes nothing else) with the policies the target's mapping gives the granted action (and
``default`` only when the mapping names it), a TTL and an explicit max TTL that end with the grant, not renewable.
Its display name is the handle and its metadata names jitgate and the request, so the
reconciler finds what jitgate made by listing token accessors. Revocation is
``auth/token/revoke-accessor`` (the accessor is recorded; the token itself never is).

targets.yaml::

    credential:
      plugin: openbao
      addr: https://bao.internal:8200
      token_env: JITGATE_CREDENTIAL_BAO       # jitgate's own token (docs/credentials.md: its policy)
      token_role: jitgate                     # orphan token role allowing the mapped policies
      actions:
        read: {policies: [orders-read]}
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time

from ..errors import ConfigError
from .port import Grant, IssueFailed, Issued, RevokeFailed

_KEYS = frozenset({"plugin", "addr", "token_env", "token_role", "actions", "timeout_s", "handle_prefix", "namespace"})
_POLICY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{1,20}-$")
LIST_LIMIT = 10_000


class OpenBaoPlugin:
    """One OpenBao (or Vault) server."""

    name = "openbao"

    def __init__(self, target_id: str, config: dict, secrets_: dict) -> None:
        where = f"target {target_id}: credential"
        unknown = set(config) - _KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        addr = config.get("addr")
        if not isinstance(addr, str) or not addr.startswith(("https://", "http://")):
            raise ConfigError(f"{where}: addr must be the server's URL (https://...)")
        env_name = config.get("token_env")
        if not isinstance(env_name, str) or not env_name.startswith("JITGATE_CREDENTIAL_"):
            raise ConfigError(f"{where}: token_env must name an environment variable JITGATE_CREDENTIAL_* "
                              "holding jitgate's token (never the token itself in the file)")
        token = secrets_.get(env_name)
        if not token:
            raise ConfigError(f"{where}: {env_name} is not set (jitgate's token on {addr})")
        self.addr, self._token = addr.rstrip("/"), token
        self.namespace = config.get("namespace")
        # A token role (orphan, allowed_policies): what lets jitgate's own token be unprivileged.
        self.token_role = config.get("token_role")
        if self.token_role is not None and not (isinstance(self.token_role, str) and _POLICY.match(self.token_role)):
            raise ConfigError(f"{where}: token_role must be the name of a token role")
        self.timeout_s = float(config.get("timeout_s", 5))
        self.prefix = str(config.get("handle_prefix", "jitgate-"))
        if not _PREFIX.match(self.prefix):
            raise ConfigError(f"{where}: handle_prefix must be lower-case letters, digits and -, ending in -")
        actions = config.get("actions")
        if not isinstance(actions, dict) or not actions:
            raise ConfigError(f"{where}: actions must map each granted action to its policies")
        self.actions: dict[str, tuple[str, ...]] = {}
        for action, privs in actions.items():
            pol = privs.get("policies") if isinstance(privs, dict) else None
            if (not isinstance(privs, dict) or set(privs) != {"policies"} or not isinstance(pol, list) or not pol
                    or not all(isinstance(p, str) and _POLICY.match(p) and p != "root" for p in pol)):
                raise ConfigError(f"{where}.actions.{action}: must be {{policies: [names]}} (never root)")
            self.actions[str(action)] = tuple(pol)

    def _client(self):
        import hvac  # noqa: PLC0415 - loaded only when an OpenBao target is configured

        return hvac.Client(url=self.addr, token=self._token, namespace=self.namespace, timeout=self.timeout_s)

    def handle_for(self, grant: Grant) -> str:
        return f"{self.prefix}{grant.request_id}-{secrets.token_hex(3)}"

    def mapped(self, action: str) -> bool:
        return action in self.actions

    def _issue(self, handle: str, grant: Grant) -> Issued:
        ttl = max(1, grant.expires_at - int(time.time()))
        policies = list(self.actions[grant.action])
        params = dict(policies=policies, no_default_policy="default" not in policies, renewable=False,
                      ttl=f"{ttl}s", explicit_max_ttl=f"{ttl}s", display_name=handle, num_uses=0,
                      meta={"jitgate": "1", "jitgate_handle": handle, "jitgate_request": grant.request_id,
                            "jitgate_agent": grant.agent})
        tokens = self._client().auth.token
        if self.token_role:
            out = tokens.create(role_name=self.token_role, **params)  # the role makes it an orphan
        else:
            out = tokens.create_orphan(**params)
        auth = out["auth"]
        secret = {"token": auth["client_token"], "addr": self.addr, "policies": list(self.actions[grant.action])}
        env = {"BAO_ADDR": self.addr, "BAO_TOKEN": auth["client_token"], "VAULT_ADDR": self.addr,
               "VAULT_TOKEN": auth["client_token"]}
        return Issued(self.name, handle, grant.expires_at, secret, env, ref=auth["accessor"])

    async def issue(self, handle: str, grant: Grant) -> Issued:
        try:
            return await asyncio.to_thread(self._issue, handle, grant)
        except Exception as e:  # noqa: BLE001 - requests' and hvac's errors: unreachable or refused
            raise IssueFailed(f"OpenBao at {self.addr} did not issue a token ({e.__class__.__name__}: {e})") from e

    def _accessors(self) -> dict[str, str]:
        """handle -> accessor of every token jitgate made (metadata jitgate=1)."""
        client = self._client()
        keys = (client.list("auth/token/accessors") or {}).get("data", {}).get("keys", [])[:LIST_LIMIT]
        out = {}
        for accessor in keys:
            try:
                meta = client.auth.token.lookup_accessor(accessor)["data"].get("meta") or {}
            except Exception:  # noqa: BLE001 - revoked or expired meanwhile
                continue
            handle = meta.get("jitgate_handle")
            if meta.get("jitgate") == "1" and isinstance(handle, str) and handle.startswith(self.prefix):
                out[handle] = accessor
        return out

    def _revoke(self, handle: str, ref: str | None) -> bool:
        import hvac  # noqa: PLC0415

        accessor = ref or self._accessors().get(handle)
        if accessor is None:
            return False
        client = self._client()
        try:
            meta = client.auth.token.lookup_accessor(accessor)["data"].get("meta") or {}
        except hvac.exceptions.InvalidRequest:
            return False  # gone: expired or revoked already
        if meta.get("jitgate_handle") != handle:
            return False  # never revoke what is not this handle's token
        client.auth.token.revoke_accessor(accessor)
        return True

    async def revoke(self, handle: str, ref: str | None = None) -> bool:
        try:
            return await asyncio.to_thread(self._revoke, handle, ref)
        except Exception as e:  # noqa: BLE001
            raise RevokeFailed(f"OpenBao at {self.addr} did not revoke {handle} ({e.__class__.__name__}: {e})") from e

    async def list_issued(self) -> list[str]:
        return sorted(await asyncio.to_thread(lambda: list(self._accessors())))

    async def close(self) -> None:
        return None


def plugin_from_config(target_id: str, config: dict, secrets_: dict, context=None) -> OpenBaoPlugin:
    """The ``jitgate.credentials`` entry point ``openbao`` (also for HashiCorp Vault)."""
    return OpenBaoPlugin(target_id, config, secrets_)
