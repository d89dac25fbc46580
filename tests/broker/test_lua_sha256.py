"""SHA-256 inside Redis Lua (broker/lua/sha256.lua), checked against hashlib on a real Redis."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from redis.exceptions import ResponseError

import broker

CHUNK = (Path(broker.__file__).parent / "lua" / "sha256.lua").read_text()

# The chunk is prepended textually, exactly as the state-transition scripts will do.
HASH_ALL = CHUNK + """
local out = {}
for i = 1, #ARGV do out[i] = sha256_hex(ARGV[i]) end
return out
"""
HEX_TO_BIN = CHUNK + "\nreturn hex_to_bin(ARGV[1])\n"
U64_BE = CHUNK + "\nreturn u64_be(tonumber(ARGV[1]))\n"
COMBINED = CHUNK + "\nreturn {sha256_hex(ARGV[1]), hex_to_bin(ARGV[2]), u64_be(tonumber(ARGV[3]))}\n"
CHAIN = CHUNK + """
local prev, content, seq = ARGV[1], ARGV[2], tonumber(ARGV[3])
local input = hex_to_bin(prev) .. hex_to_bin(content) .. u64_be(seq)
return {#input, sha256_hex(input)}
"""

NIST_448 = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
NIST_896 = (
    b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
    b"ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
)


async def lua_sha256(redis, *messages: bytes) -> list[str]:
    """Hash each message inside Redis and return the hex digests as str."""
    result = await redis.eval(HASH_ALL, 0, *messages)
    return [r.decode() for r in result]


def sha(m: bytes) -> str:
    return hashlib.sha256(m).hexdigest()


async def test_empty_string(redis):
    """The empty message hashes to the well-known e3b0c442... digest."""
    assert await lua_sha256(redis, b"") == [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    ]


async def test_abc(redis):
    """FIPS 180-4 one-block vector "abc"."""
    assert await lua_sha256(redis, b"abc") == [
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    ]


async def test_nist_448_bit_vector(redis):
    """NIST two-block 448-bit message vector."""
    assert await lua_sha256(redis, NIST_448) == [
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    ]


async def test_nist_896_bit_vector(redis):
    """NIST 896-bit message vector."""
    assert await lua_sha256(redis, NIST_896) == [
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
    ]


async def test_random_lengths_0_to_200(redis):
    """Random bytes of every length 0..200 match hashlib."""
    rng = random.Random(0x5A256)
    messages = [rng.randbytes(n) for n in range(201)]
    assert await lua_sha256(redis, *messages) == [sha(m) for m in messages]


@pytest.mark.parametrize("fill", [0x00, 0xFF, None])
async def test_padding_boundary_lengths(redis, fill):
    """Lengths around the 56/64-byte padding boundaries, with 0x00, 0xff and mixed bytes."""
    lengths = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 121, 127, 128, 129]
    rng = random.Random(fill if fill is not None else 7)
    if fill is None:
        messages = [bytes(rng.choice((0x00, 0xFF, rng.randrange(256))) for _ in range(n)) for n in lengths]
    else:
        messages = [bytes([fill]) * n for n in lengths]
    assert await lua_sha256(redis, *messages) == [sha(m) for m in messages]


async def test_all_byte_values(redis):
    """Every byte value 0x00..0xff survives the transfer and the word loading."""
    message = bytes(range(256)) * 2
    assert await lua_sha256(redis, message) == [sha(message)]


async def test_10kb_input(redis):
    """A 10 KB input (160 blocks) matches hashlib."""
    message = random.Random(10).randbytes(10 * 1024)
    assert await lua_sha256(redis, message) == [sha(message)]


async def test_chain_input_72_bytes(redis):
    """The audit-chain form SHA256(prev(32) || content_sha(32) || seq u64 BE) matches hashlib."""
    rng = random.Random(72)
    for seq in (0, 1, 2**32 + 5, 2**53 - 1):
        prev, content = rng.randbytes(32), hashlib.sha256(rng.randbytes(100)).digest()
        expected_input = prev + content + seq.to_bytes(8, "big")
        length, digest = await redis.eval(CHAIN, 0, prev.hex(), content.hex(), str(seq))
        assert length == 72
        assert digest.decode() == sha(expected_input)


async def test_chain_input_passed_as_raw_bytes(redis):
    """The 72-byte chain input passed directly as binary ARGV hashes like hashlib."""
    message = bytes([0xFF] * 32 + [0x00] * 32) + (2**40).to_bytes(8, "big")
    assert await lua_sha256(redis, message) == [sha(message)]


@pytest.mark.parametrize("n", [0, 1, 255, 256, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**53 - 1])
async def test_u64_be(redis, n):
    """u64_be yields the 8-byte big-endian encoding of integers up to 2^53-1."""
    assert await redis.eval(U64_BE, 0, str(n)) == n.to_bytes(8, "big")


@pytest.mark.parametrize("bad", ["-1", "1.5", "9007199254740992"])
async def test_u64_be_rejects_out_of_range(redis, bad):
    """u64_be raises on negatives, fractions and values >= 2^53."""
    with pytest.raises(ResponseError, match="u64_be"):
        await redis.eval(U64_BE, 0, bad)


async def test_hex_to_bin(redis):
    """hex_to_bin decodes lower- and upper-case hex, including 00 and ff bytes."""
    raw = bytes(range(256))
    assert await redis.eval(HEX_TO_BIN, 0, raw.hex()) == raw
    assert await redis.eval(HEX_TO_BIN, 0, raw.hex().upper()) == raw
    assert await redis.eval(HEX_TO_BIN, 0, "") == b""


@pytest.mark.parametrize("bad", ["abc", "zz", "0g"])
async def test_hex_to_bin_rejects_bad_input(redis, bad):
    """hex_to_bin raises on odd length or non-hex characters."""
    with pytest.raises(ResponseError, match="hex_to_bin"):
        await redis.eval(HEX_TO_BIN, 0, bad)


async def test_combined_script(redis):
    """All three helpers work together in one script returning a table."""
    digest, raw, be = await redis.eval(COMBINED, 0, b"abc", "00ff10", "4294967296")
    assert digest.decode() == sha(b"abc")
    assert raw == b"\x00\xff\x10"
    assert be == (2**32).to_bytes(8, "big")


async def test_chunk_leaks_only_three_names(redis):
    """Internal helpers (bit aliases, K/H0/W tables) are not visible after the chunk."""
    internals = ["K", "H0", "W", "band", "ror", "tobit", "hexpair"]
    probe = CHUNK + "\nreturn {type(sha256_hex), type(hex_to_bin), type(u64_be)"
    # Redis 7 raises on reading an undefined global, so a visible name is one whose read succeeds.
    probe += "".join(f", tostring(pcall(function() return {n} end))" for n in internals) + "}\n"
    assert await redis.eval(probe, 0) == [b"function"] * 3 + [b"false"] * len(internals)


async def test_evalsha_reuses_state_across_calls(redis):
    """Repeated EVALSHA calls on one loaded script keep producing correct digests."""
    sha1 = await redis.script_load(HASH_ALL)
    for m in (b"", NIST_896, b"abc", bytes(200)):
        assert [d.decode() for d in await redis.evalsha(sha1, 0, m)] == [sha(m)]
