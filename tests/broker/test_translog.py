"""RFC 9162 hashing and proofs and C2SP signed-note checkpoints (broker/translog.py), checked
against a direct transcription of the RFC's MTH definition on every tree up to 33 leaves."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.translog import (EMPTY_ROOT, Checkpoint, Frontier, NoteError, Tree, leaf_hash, node_hash, origin_of,
                             parse_verifier_key, raw_public, verifier_key, verify_consistency, verify_inclusion)


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, word for word."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def test_leaf_and_node_hashes_are_domain_separated():
    """RFC 9162 §2.1.1: leaves are hashed with a 0x00 prefix, nodes with 0x01 (no second preimage)."""
    import hashlib

    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("n", range(0, 34))
def test_compact_state_proofs_and_trimmed_prefixes_agree_with_the_rfc(n):
    """The frontier's root is MTH; inclusion and consistency proofs verify with the RFC's
    algorithms, also over a trimmed prefix kept only as its frontier, and fail for a wrong root."""
    leaves = [leaf_hash(bytes([i])) for i in range(n)]
    f = Frontier()
    for leaf in leaves:
        f.append(leaf)
    assert f.root() == _mth(leaves) and Frontier.decode(f.encode()).root() == f.root()
    for cut in {0, n // 3, n // 2, n}:
        base = Frontier()
        for leaf in leaves[:cut]:
            base.append(leaf)
        t = Tree(leaves[cut:], base)
        assert t.root() == _mth(leaves)
        for i in range(cut, n):
            assert verify_inclusion(leaves[i], i, n, t.inclusion(i), _mth(leaves))
            assert not verify_inclusion(leaf_hash(b"other"), i, n, t.inclusion(i), _mth(leaves))
        for m in range(cut, n + 1):
            proof = t.consistency(m)
            assert verify_consistency(m, n, _mth(leaves[:m]), _mth(leaves), proof)
            if 0 < m < n:
                assert not verify_consistency(m, n, leaf_hash(b"forged"), _mth(leaves), proof)


def test_a_checkpoint_is_a_signed_note_that_names_any_change():
    """C2SP tlog-checkpoint / signed-note: the body verifies with the key; a changed size, a
    key of another name or a forged signature are refused."""
    key = ed25519.Ed25519PrivateKey.generate()
    origin = origin_of("https://jitgate.example.com/")
    assert origin == "jitgate.example.com/audit"
    note = Checkpoint(origin, 7, leaf_hash(b"r"), "2026-12-04T00:00:00.000Z").sign(key)
    assert note.startswith(f"{origin}\n7\n") and "\n\n\u2014 " in note
    vkey = verifier_key(origin, raw_public(key.public_key()))
    name, public = parse_verifier_key(vkey)
    assert Checkpoint.open(note, name, public).size == 7
    with pytest.raises(NoteError, match="does not verify"):
        Checkpoint.open(note.replace("\n7\n", "\n8\n"), name, public)
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(NoteError, match="no signature of the audit key"):
        Checkpoint.open(note, name, raw_public(other.public_key()))
    with pytest.raises(NoteError):
        parse_verifier_key(vkey[:-2] + "AA")
