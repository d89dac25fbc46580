"""SSH user certificates (OpenSSH format, signed with ``cryptography``).

Per grant jitgate makes a fresh Ed25519 key pair for the agent and signs its public key with a
CA key it holds: key id = the handle (it names the request), a random serial, the mapped
principals, valid from a minute ago (clock skew) until the grant's end, and the
``force-command`` / ``source-address`` options and extensions the mapping gives. Expiry is the
revocation; for an earlier end the certificate's key id goes into a KRL (OpenSSH key revocation
list, written with ``ssh-keygen -k``) that sshd reads through ``RevokedKeys``; entries leave the
KRL once their certificate has expired anyway, so it stays small.

The CA key is generated on first use and kept in ``ca_key_file`` encrypted with the
key-encryption key (AES-256-GCM, like the token signing keys); its public half is written
beside it (``.pub``) for sshd's ``TrustedUserCAKeys``. Replicas share the file (and the KRL).

targets.yaml::

    credential:
      plugin: ssh
      ca_key_file: /var/lib/jitgate/ssh-ca.enc     # default: <data dir>/ssh-ca-<target>.enc
      krl_file: /etc/ssh/jitgate.krl               # default: <data dir>/ssh-<target>.krl
      actions:
        restart: {principals: [deploy], force_command: "systemctl restart app", source_address: [10.0.0.0/8]}
        debug: {principals: [oncall], extensions: [permit-pty]}
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import json
import os
import re
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigError
from .port import Grant, IssueFailed, Issued, RevokeFailed

_KEYS = frozenset({"plugin", "ca_key_file", "krl_file", "actions", "handle_prefix", "skew_s"})
_ACTION_KEYS = frozenset({"principals", "force_command", "source_address", "extensions"})
_PRINCIPAL = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_EXTENSIONS = frozenset({"permit-pty", "permit-port-forwarding", "permit-agent-forwarding", "permit-X11-forwarding",
                         "permit-user-rc"})
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{1,20}-$")


def _slug(target_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", target_id).strip("-")


class SshCertificatePlugin:
    """One group of hosts that trust one CA."""

    name = "ssh"

    def __init__(self, target_id: str, config: dict, secrets_: dict, context=None) -> None:
        where = f"target {target_id}: credential"
        unknown = set(config) - _KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        if context is None or not getattr(context, "kek", None):
            raise ConfigError(f"{where}: the ssh plugin needs the key-encryption key (it encrypts the CA key)")
        data_dir = Path(getattr(context, "data_dir", ".jitgate"))
        self._aead = AESGCM(context.kek)
        self._aad = f"jitgate ssh ca {target_id}".encode()
        self.ca_key_file = Path(config.get("ca_key_file") or data_dir / f"ssh-ca-{_slug(target_id)}.enc")
        self.krl_file = Path(config.get("krl_file") or data_dir / f"ssh-{_slug(target_id)}.krl")
        self.prefix = str(config.get("handle_prefix", "jitgate-"))
        if not _PREFIX.match(self.prefix):
            raise ConfigError(f"{where}: handle_prefix must be lower-case letters, digits and -, ending in -")
        self.skew_s = int(config.get("skew_s", 60))
        actions = config.get("actions")
        if not isinstance(actions, dict) or not actions:
            raise ConfigError(f"{where}: actions must map each granted action to its principals")
        self.actions: dict[str, dict] = {}
        for action, spec in actions.items():
            aw = f"{where}.actions.{action}"
            if not isinstance(spec, dict) or set(spec) - _ACTION_KEYS:
                raise ConfigError(f"{aw}: must be a mapping of {sorted(_ACTION_KEYS)}")
            principals = spec.get("principals")
            if not isinstance(principals, list) or not principals or not all(
                    isinstance(p, str) and _PRINCIPAL.match(p) for p in principals):
                raise ConfigError(f"{aw}.principals: a non-empty list of user names (a certificate for every "
                                  "principal is never issued)")
            extensions = spec.get("extensions", [])
            if not isinstance(extensions, list) or set(extensions) - _EXTENSIONS:
                raise ConfigError(f"{aw}.extensions: some of {sorted(_EXTENSIONS)}")
            force = spec.get("force_command")
            if force is not None and (not isinstance(force, str) or not force.strip()):
                raise ConfigError(f"{aw}.force_command: a command line")
            source = spec.get("source_address")
            if source is not None and (not isinstance(source, list) or not all(isinstance(s, str) for s in source)):
                raise ConfigError(f"{aw}.source_address: a list of addresses or CIDR ranges")
            self.actions[str(action)] = {"principals": tuple(principals), "extensions": tuple(extensions),
                                         "force_command": force, "source_address": tuple(source or ())}
        self._ca = self._load_or_create_ca()

    # ------------------------------------------------------------------ the CA key
    def _load_or_create_ca(self) -> Ed25519PrivateKey:
        if not self.ca_key_file.exists():
            self.ca_key_file.parent.mkdir(parents=True, exist_ok=True)
            key = Ed25519PrivateKey.generate()
            raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
            nonce = os.urandom(12)
            blob = nonce + self._aead.encrypt(nonce, raw, self._aad)
            try:
                fd = os.open(self.ca_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first: use that one
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
        blob = self.ca_key_file.read_bytes()
        try:
            raw = self._aead.decrypt(blob[:12], blob[12:], self._aad)
        except Exception as e:  # noqa: BLE001 - cryptography's InvalidTag: a wrong KEK or a changed file
            raise ConfigError(f"{self.ca_key_file}: the SSH CA key does not decrypt with JITGATE_KEY_ENCRYPTION_KEY") from e
        key = Ed25519PrivateKey.from_private_bytes(raw)
        pub = self.ca_public_line(key)
        pub_file = self.ca_key_file.with_name(self.ca_key_file.name + ".pub")
        if not pub_file.exists() or pub_file.read_text().strip() != pub:
            pub_file.write_text(pub + "\n")
        return key

    @staticmethod
    def ca_public_line(key: Ed25519PrivateKey) -> str:
        return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()

    @property
    def ca_public_key(self) -> str:
        """The CA's public key, one OpenSSH line (for ``TrustedUserCAKeys``)."""
        return self.ca_public_line(self._ca)

    # ------------------------------------------------------------------ the port
    def handle_for(self, grant: Grant) -> str:
        return f"{self.prefix}{grant.request_id}-{secrets.token_hex(3)}"

    def mapped(self, action: str) -> bool:
        return action in self.actions

    def _issue(self, handle: str, grant: Grant) -> Issued:
        spec = self.actions[grant.action]
        user_key = Ed25519PrivateKey.generate()
        serial = secrets.randbits(63)
        now = int(time.time())
        builder = (serialization.SSHCertificateBuilder()
                   .public_key(user_key.public_key())
                   .serial(serial)
                   .type(serialization.SSHCertificateType.USER)
                   .key_id(handle.encode())
                   .valid_principals([p.encode() for p in spec["principals"]])
                   .valid_after(now - self.skew_s)
                   .valid_before(grant.expires_at))
        if spec["force_command"]:
            builder = builder.add_critical_option(b"force-command", spec["force_command"].encode())
        if spec["source_address"]:
            builder = builder.add_critical_option(b"source-address", ",".join(spec["source_address"]).encode())
        for ext in sorted(spec["extensions"]):
            builder = builder.add_extension(ext.encode(), b"")
        cert = builder.sign(self._ca)
        private = user_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                         serialization.NoEncryption()).decode()
        cert_line = cert.public_bytes().decode() + f" {handle}"
        secret = {"private_key": private, "certificate": cert_line, "principals": list(spec["principals"]),
                  "serial": serial, "valid_before": dt.datetime.fromtimestamp(grant.expires_at, dt.UTC).isoformat()}
        return Issued(self.name, handle, grant.expires_at, secret, {}, ref=json.dumps(
            {"serial": serial, "valid_before": grant.expires_at}))

    async def issue(self, handle: str, grant: Grant) -> Issued:
        try:
            return self._issue(handle, grant)
        except Exception as e:  # noqa: BLE001
            raise IssueFailed(f"could not sign an SSH certificate ({e.__class__.__name__}: {e})") from e

    def _revoke(self, handle: str, ref: str | None) -> bool:
        info = json.loads(ref) if ref else {}
        valid_before = int(info.get("valid_before", time.time() + 86400))
        if valid_before <= time.time():
            return False  # expired: expiry was the revocation
        sidecar = self.krl_file.with_name(self.krl_file.name + ".json")
        self.krl_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.krl_file.with_name(self.krl_file.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # replicas (and threads) write the KRL one at a time
            entries = json.loads(sidecar.read_text()) if sidecar.exists() else {}
            now = time.time()
            entries = {k: v for k, v in entries.items() if v > now}  # expired certificates need no entry
            entries[handle] = valid_before
            self._write_krl(entries)
            tmp = sidecar.with_name(sidecar.name + ".tmp")
            tmp.write_text(json.dumps(entries))
            os.replace(tmp, sidecar)
        return True

    def _write_krl(self, entries: dict[str, int]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            ca_pub = Path(tmp) / "ca.pub"
            ca_pub.write_text(self.ca_public_key + "\n")
            spec = Path(tmp) / "spec"
            spec.write_text("".join(f"id: {k}\n" for k in sorted(entries)))
            out = Path(tmp) / "krl"
            subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(out), "-s", str(ca_pub), str(spec)],
                           check=True, capture_output=True, timeout=30)
            tmp_krl = self.krl_file.with_name(self.krl_file.name + ".tmp")
            tmp_krl.write_bytes(out.read_bytes())
            os.replace(tmp_krl, self.krl_file)  # sshd never reads half a KRL

    async def revoke(self, handle: str, ref: str | None = None) -> bool:
        try:
            return await asyncio.to_thread(self._revoke, handle, ref)
        except Exception as e:  # noqa: BLE001 - ssh-keygen missing or failing, a read-only folder
            raise RevokeFailed(f"could not add {handle} to the KRL {self.krl_file} ({e.__class__.__name__}: {e})") from e

    async def list_issued(self) -> list[str]:
        return []  # a certificate lives in no target system: nothing to list (expiry ends it anyway)

    async def close(self) -> None:
        return None


def plugin_from_config(target_id: str, config: dict, secrets_: dict, context=None) -> SshCertificatePlugin:
    """The ``jitgate.credentials`` entry point ``ssh``."""
    return SshCertificatePlugin(target_id, config, secrets_, context)
