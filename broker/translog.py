"""The audit log's Merkle tree (RFC 9162) and its signed checkpoints (C2SP signed notes).

Pure functions and small value types, no Redis: ``broker/audit.py`` keeps the tree's compact
state in Redis and runs the sealer; ``jitgate audit check-proof`` uses only this module and the
audit public key.

* RFC 9162 §2.1.1: leaf hash ``SHA-256(0x00 || entry)``, node hash ``SHA-256(0x01 || left ||
  right)``, the empty tree's root ``SHA-256("")``; a tree of ``n`` leaves splits at the largest
  power of two smaller than ``n``.
* :class:`Frontier`: the tree's *compact state*, the roots of the perfect subtrees along its right
  edge (one per set bit of the size). Appending a leaf and computing the root need nothing else,
  and a trimmed prefix stays provable through it (its subtrees are the only hashes left of it).
* :class:`Tree`: inclusion proofs (§2.1.3) and consistency proofs (§2.1.4) over a frontier
  (the trimmed prefix, possibly empty) and the leaf hashes after it; ``verify_inclusion`` and
  ``verify_consistency`` are the RFC's verification algorithms, word for word.
* Checkpoints (https://c2sp.org/tlog-checkpoint) are signed notes
  (https://c2sp.org/signed-note) with an Ed25519 key: the body is the origin line, the tree
  size, the base64 root hash, and one extension line ``time <RFC 3339 UTC>``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_ED25519 = b"\x01"  # the signed-note signature type of Ed25519
_EM_DASH = "\u2014"


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``MTH({d(0)}) = SHA-256(0x00 || d(0))``."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: ``SHA-256(0x01 || MTH(left) || MTH(right))``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


# ---------------------------------------------------------------------- compact state
@dataclass
class Frontier:
    """The compact state of a tree of ``size`` leaves: the roots of the perfect subtrees along
    its right edge, largest (leftmost) first, one per set bit of ``size``."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (merging the equal-sized subtrees it completes)."""
        h, n = leaf, self.size
        while n & 1:
            h = node_hash(self.hashes.pop(), h)
            n >>= 1
        self.hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        """The tree's root hash (RFC 9162 MTH)."""
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = node_hash(left, h)
        return h

    def copy(self) -> "Frontier":
        return Frontier(self.size, list(self.hashes))

    def ranges(self) -> list[tuple[int, int]]:
        """The leaf ranges ``[lo, hi)`` the hashes cover, in order."""
        out, lo = [], 0
        for bit in range(self.size.bit_length() - 1, -1, -1):
            if self.size >> bit & 1:
                out.append((lo, lo + (1 << bit)))
                lo += 1 << bit
        return out

    def encode(self) -> str:
        """``size:hex,hex,...`` (what Redis and the trim record hold)."""
        return f"{self.size}:" + ",".join(h.hex() for h in self.hashes)

    @classmethod
    def decode(cls, text: str | bytes | None) -> "Frontier":
        """The frontier :meth:`encode` wrote; raises ValueError on anything else."""
        if not text:
            return cls()
        text = text.decode() if isinstance(text, bytes) else text
        size_s, _, rest = text.partition(":")
        size = int(size_s)
        hashes = [bytes.fromhex(h) for h in rest.split(",")] if rest else []
        if size < 0 or len(hashes) != bin(size).count("1") or any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError("not a tree frontier")
        return cls(size, hashes)


# ---------------------------------------------------------------------- proofs
class Tree:
    """A tree of ``base.size + len(leaves)`` leaves: a compact prefix (possibly empty) and the
    leaf hashes after it. Proves inclusion of any leaf after the prefix and consistency between
    any two sizes from the prefix's size on."""

    def __init__(self, leaves: list[bytes], base: Frontier | None = None) -> None:
        self.base = base or Frontier()
        self.leaves = leaves
        self._known = dict(zip(self.base.ranges(), self.base.hashes))
        self._memo: dict[tuple[int, int], bytes] = {}

    @property
    def size(self) -> int:
        return self.base.size + len(self.leaves)

    def hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) (an RFC 9162 subtree; ``hi`` > ``lo``)."""
        key = (lo, hi)
        got = self._known.get(key) or self._memo.get(key)
        if got is not None:
            return got
        n = hi - lo
        if n == 1:
            if lo < self.base.size:
                raise ValueError(f"leaf {lo} was trimmed: only the compact state of the first "
                                 f"{self.base.size} leaves is left")
            return self.leaves[lo - self.base.size]
        k = _split(n)
        h = node_hash(self.hash(lo, lo + k), self.hash(lo + k, hi))
        if n & (n - 1) == 0:
            self._memo[key] = h  # perfect subtrees are shared by every larger tree
        return h

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        return EMPTY_ROOT if size == 0 else self.hash(0, size)

    def inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(m, D[n]): the audit path of leaf ``index`` in the tree of ``size``."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError(f"leaf {index} is not in a tree of {size}")
        return self._path(index, 0, size)

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m - lo < k:
            return self._path(m, lo, lo + k) + [self.hash(lo + k, hi)]
        return self._path(m, lo + k, hi) + [self.hash(lo, lo + k)]

    def consistency(self, first: int, second: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(m, D[n]) between the trees of ``first`` and ``second`` leaves."""
        second = self.size if second is None else second
        if not 0 <= first <= second <= self.size:
            raise ValueError(f"no consistency proof from {first} to {second} in a tree of {self.size}")
        if first in (0, second):
            return []
        return self._subproof(first, 0, second, True)

    def _subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.hash(lo, hi)]
        k = _split(n)
        if m <= k:
            return self._subproof(m, lo, lo + k, b) + [self.hash(lo + k, hi)]
        return self._subproof(m - k, lo + k, hi, False) + [self.hash(lo, lo + k)]


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` prove leaf hash ``leaf`` at ``index`` in the tree of ``size`` with ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, path: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does ``path`` prove the tree of ``second`` leaves extends the one of ``first``?"""
    if first == 0:
        return not path  # the empty tree is a prefix of every tree
    if first == second:
        return not path and first_root == second_root
    if not 0 < first < second or not path:
        return False
    if first & (first - 1) == 0:
        path = [first_root, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


# ---------------------------------------------------------------------- signed notes
class NoteError(ValueError):
    """A checkpoint or signed note that is malformed or whose signature does not verify."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    """Strict base64: only the canonical encoding of the bytes it decodes to (no unused bits set)."""
    data = base64.b64decode(text.encode(), validate=True)
    if _b64(data) != text:
        raise ValueError("not canonical base64")
    return data


def raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public: bytes) -> bytes:
    """signed-note key ID: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key)."""
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public).digest()[:4]


def verifier_key(name: str, public: bytes) -> str:
    """The note verifier key ``<name>+<hex key id>+<base64(0x01 || key)>`` (what an auditor pins)."""
    return f"{name}+{key_id(name, public).hex()}+{_b64(_ED25519 + public)}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes]:
    """(name, raw Ed25519 public key) of a verifier key; raises :class:`NoteError`."""
    try:
        name, kid_hex, blob_b64 = vkey.strip().split("+", 2)  # a name holds no "+"; base64 may
        blob = _unb64(blob_b64)
        kid = bytes.fromhex(kid_hex)
    except ValueError:
        raise NoteError("not a signed-note verifier key (<name>+<key id>+<base64 key>)") from None
    if not name or blob[:1] != _ED25519 or len(blob) != 33 or kid != key_id(name, blob[1:]):
        raise NoteError("not an Ed25519 signed-note verifier key, or its key id does not match")
    return name, blob[1:]


def sign_note(text: str, name: str, key: ed25519.Ed25519PrivateKey) -> str:
    """The signed note of ``text`` (which ends with a newline) under key ``name``."""
    if not text.endswith("\n") or "\n\n" in text:
        raise ValueError("a note's text ends with one newline and holds no blank line")
    sig = key.sign(text.encode())
    return f"{text}\n{_EM_DASH} {name} {_b64(key_id(name, raw_public(key.public_key())) + sig)}\n"


def open_note(note: str, name: str, public: bytes) -> str:
    """The text of ``note`` when it carries a valid signature of key ``name``/``public``;
    raises :class:`NoteError` naming what is wrong. Signatures of other keys are ignored."""
    text, sep, sigs = note.rpartition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise NoteError("not a signed note (no signature block)")
    text += "\n"
    kid = key_id(name, public)
    pub = ed25519.Ed25519PublicKey.from_public_bytes(public)
    for line in sigs[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _EM_DASH:
            raise NoteError(f"malformed signature line {line[:60]!r}")
        if parts[1] != name:
            continue
        try:
            blob = _unb64(parts[2])
        except ValueError:
            raise NoteError("a signature line is not base64") from None
        if blob[:4] != kid:
            continue
        try:
            pub.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise NoteError(f"the signature of {name} does not verify (the note was changed or forged)") from None
        return text
    raise NoteError(f"the note carries no signature of the audit key {name}+{kid.hex()}")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: ``origin``, ``size``, ``root`` and when it was signed (``time``, RFC 3339)."""

    origin: str
    size: int
    root: bytes
    time: str

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{_b64(self.root)}\ntime {self.time}\n"

    def sign(self, key: ed25519.Ed25519PrivateKey) -> str:
        """The C2SP checkpoint: this body signed under the origin's name."""
        return sign_note(self.body(), self.origin, key)

    @classmethod
    def parse_body(cls, text: str) -> "Checkpoint":
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint body has an origin, a size and a root hash, one a line")
        origin, size_s, root_b64 = lines[:3]
        try:
            size = int(size_s)
            root = _unb64(root_b64)
        except ValueError:
            raise NoteError("a checkpoint's size or root hash is malformed") from None
        if not origin or size < 0 or not re.fullmatch(r"[0-9]+", size_s) or len(root) != HASH_SIZE:
            raise NoteError("a checkpoint's origin, size or root hash is malformed")
        when = next((x[5:] for x in lines[3:-1] if x.startswith("time ")), "")
        return cls(origin, size, root, when)

    @classmethod
    def open(cls, note: str, name: str, public: bytes) -> "Checkpoint":
        """The checkpoint of a signed note, verified against the audit key; raises :class:`NoteError`."""
        cp = cls.parse_body(open_note(note, name, public))
        if cp.origin != name:
            raise NoteError(f"the checkpoint's origin {cp.origin!r} is not the audit key's {name!r}")
        return cp


def now_rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def origin_of(issuer: str) -> str:
    """The log's origin (a schema-less URL, as C2SP asks): the issuer's host and path plus ``/audit``."""
    bare = re.sub(r"^[a-z][a-z0-9+.-]*://", "", issuer.strip().rstrip("/"), flags=re.I)
    return f"{bare}/audit"
