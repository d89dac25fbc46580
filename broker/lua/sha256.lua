-- SHA-256 (FIPS 180-4) for Redis Lua (Lua 5.1 + LuaBitOp).
--
-- This chunk is textually PREPENDED to other scripts. It only declares locals:
-- no globals (Redis forbids them), no KEYS/ARGV, no top-level return.
--
-- Exposed names:
--   sha256_hex(msg) -> 64-char lowercase hex digest of the byte string msg
--   hex_to_bin(hex) -> byte string for an even-length hex string (either case)
--   u64_be(n)       -> 8-byte big-endian encoding of an integer 0 <= n < 2^53
--
-- All other helpers live inside the do ... end block so they do not occupy
-- local slots or shadow names in the including script.
--
-- Arithmetic: numbers are doubles, exact up to 2^53, so a sum of a handful of
-- 32-bit values is exact; LuaBitOp reduces its arguments modulo 2^32.

local sha256_hex, hex_to_bin, u64_be

do
  local band, bxor, ror, rshift = bit.band, bit.bxor, bit.ror, bit.rshift
  local sbyte, schar, srep, sformat = string.byte, string.char, string.rep, string.format
  local floor, tonumber = math.floor, tonumber

  -- Round constants (first 32 bits of the fractional parts of the cube roots of
  -- the first 64 primes). A constant table: built once per chunk load, no fix-up loop.
  local K = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  }

  -- Message schedule, reused across blocks and calls (scripts run single-threaded);
  -- every entry is written before it is read.
  local W = {}

  u64_be = function(n)
    if type(n) ~= "number" or n < 0 or n >= 9007199254740992 or n ~= floor(n) then
      error("u64_be: expected an integer in [0, 2^53), got " .. tostring(n))
    end
    local hi = floor(n / 4294967296)
    local lo = n - hi * 4294967296
    return schar(
      floor(hi / 16777216) % 256, floor(hi / 65536) % 256, floor(hi / 256) % 256, hi % 256,
      floor(lo / 16777216) % 256, floor(lo / 65536) % 256, floor(lo / 256) % 256, lo % 256)
  end

  local function hexpair(cc)
    return schar(tonumber(cc, 16))
  end

  hex_to_bin = function(hex)
    if type(hex) ~= "string" or #hex % 2 ~= 0 or hex:find("[^0-9a-fA-F]") then
      error("hex_to_bin: expected an even-length hex string")
    end
    return (hex:gsub("..", hexpair))
  end

  -- Word values are kept as doubles. Bit ops accept any value and reduce it
  -- modulo 2^32 themselves (returning signed 32-bit), so sums are only reduced
  -- (x % 2^32, a VM op rather than a C call) where they would otherwise keep
  -- growing from round to round.
  sha256_hex = function(msg)
    local ml = #msg
    -- Padding: 0x80, zeros up to 56 mod 64, then the bit length as 64-bit big-endian.
    local s = msg .. "\128" .. srep("\0", (55 - ml) % 64) .. u64_be(ml * 8)

    local h1, h2, h3, h4 = 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a
    local h5, h6, h7, h8 = 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
    local w, k = W, K

    for p = 1, #s, 64 do
      -- Load 16 big-endian words (unsigned, by arithmetic).
      local q = p
      for j = 1, 16 do
        local b1, b2, b3, b4 = sbyte(s, q, q + 3)
        w[j] = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
        q = q + 4
      end
      -- Extend to 64 words.
      for j = 17, 64 do
        local x, y = w[j - 15], w[j - 2]
        w[j] = (w[j - 16] + w[j - 7]
          + bxor(ror(x, 7), ror(x, 18), rshift(x, 3))
          + bxor(ror(y, 17), ror(y, 19), rshift(y, 10))) % 4294967296
      end
      -- Compression. ch(e,f,g) = (e & f) | (~e & g): the two terms share no bits,
      -- so | is +, and ~e is -1 - e (bit ops reduce mod 2^32). maj(a,b,c) =
      -- b ^ ((a ^ b) & (b ^ c)), where this round's b ^ c is the previous round's a ^ b.
      local a, b, c, d, e, f, g, h = h1, h2, h3, h4, h5, h6, h7, h8
      local bc = bxor(b, c)
      for j = 1, 64 do
        local t1 = h + bxor(ror(e, 6), ror(e, 11), ror(e, 25))
          + band(e, f) + band(-1 - e, g) + k[j] + w[j]
        local ab = bxor(a, b)
        local t2 = bxor(ror(a, 2), ror(a, 13), ror(a, 22)) + bxor(b, band(ab, bc))
        bc = ab
        h = g; g = f; f = e
        e = (d + t1) % 4294967296
        d = c; c = b; b = a
        a = (t1 + t2) % 4294967296
      end
      h1 = (h1 + a) % 4294967296; h2 = (h2 + b) % 4294967296
      h3 = (h3 + c) % 4294967296; h4 = (h4 + d) % 4294967296
      h5 = (h5 + e) % 4294967296; h6 = (h6 + f) % 4294967296
      h7 = (h7 + g) % 4294967296; h8 = (h8 + h) % 4294967296
    end

    return sformat("%08x%08x%08x%08x%08x%08x%08x%08x", h1, h2, h3, h4, h5, h6, h7, h8)
  end
end
