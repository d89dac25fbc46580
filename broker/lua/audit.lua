-- Hash-chained audit append, shared by every script (prepended after sha256.lua).
-- entry_hash = SHA256(prev_hash || SHA256(event JSON) || seq as u64 big-endian).
-- The XADDs run before any state write, so a failed append leaves the state untouched.
local GENESIS = string.rep('0', 64)

local function audit_append(stream, head, events)
  if #events == 0 then return end
  local h = redis.call('HMGET', head, 'seq', 'hash')
  local seq = tonumber(h[1]) or 0
  local prev = h[2] or GENESIS
  for _, ev in ipairs(events) do
    seq = seq + 1
    local hash = sha256_hex(hex_to_bin(prev) .. hex_to_bin(ev[2]) .. u64_be(seq))
    -- No 'prev' field: it is the previous entry's hash, so storing it again costs memory only.
    redis.call('XADD', stream, '*', 'seq', seq, 'hash', hash, 'event', ev[1])
    prev = hash
  end
  redis.call('HSET', head, 'seq', seq, 'hash', prev)
end

local function hset_json(key, fields_json)
  local fields = cjson.decode(fields_json)
  local args = {}
  for k, v in pairs(fields) do
    args[#args + 1] = k
    args[#args + 1] = tostring(v)
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end

local function set_deadline(zset, id, req, op)
  if op == '' then return end
  if op == '-' then
    redis.call('ZREM', zset, id)
    redis.call('HSET', req, 'deadline_ms', '')
  else
    redis.call('ZADD', zset, op, id)
    redis.call('HSET', req, 'deadline_ms', op)
  end
end

-- Per-agent grant indexes (issue 16, item 2): the set of the agent's active grants, the
-- same per environment (the request's 'env', recorded at submit), and the grants it
-- collected by time (trimmed to the last hour). Kept true from the request's status as a
-- script left it: outbox() calls this for every change it is given the request key of (as
-- it tells Shared Signals), so every script that changes a request and queues its notice
-- keeps the index with no code of its own; the scripts that queue no per-request notice
-- (the sweep's batch expiry, break-glass creation) call it themselves. Idempotent: policy
-- context counts with SCARD/ZCOUNT, never a scan. The key prefix is the request key's,
-- without '{req:<id>}'.
local function index_grant(req, id)
  local g = redis.call('HMGET', req, 'agent', 'env', 'status')
  local agent, env, st = g[1], g[2], g[3]
  if not agent or not st then return end
  local p = string.sub(req, 1, #req - #id - 6) .. 'agent:' .. agent .. ':'
  if st == 'active' then
    redis.call('SADD', p .. 'active', id)
    if env and env ~= '' then redis.call('SADD', p .. 'active:' .. env, id) end
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('ZADD', p .. 'collected', 'NX', now, id)
    redis.call('ZREMRANGEBYSCORE', p .. 'collected', '-inf', now - 3600000)
    redis.call('PEXPIRE', p .. 'collected', 3600000)
  else
    redis.call('SREM', p .. 'active', id)
    if env and env ~= '' then redis.call('SREM', p .. 'active:' .. env, id) end
  end
end

-- The notification outbox: desks are told about the change by whichever broker
-- consumes the entry (at least once, even if this process dies right now).
-- A kind starting with '?' is queued only if people were shown the request (a desk posted
-- it, or it is break-glass): a grant policy gave at once has no message to keep in step.
local function outbox(stream, id, kind, req)
  if req then index_grant(req, id) end
  if kind:sub(1, 1) == '?' then
    if req and redis.call('HEXISTS', req, 'messages') == 0 and redis.call('HGET', req, 'break_glass') ~= '1' then
      return
    end
    kind = kind:sub(2)
  end
  if kind ~= '' then
    redis.call('XADD', stream, 'MAXLEN', '~', 100000, '*', 'id', id, 'kind', kind)
  end
end

-- Long-poll wake-ups are published only while someone waits on the request: the long poll
-- marks it (watch_until, Redis time in ms) before it reads it, so a change after that read
-- is published and a change before it is seen by the read. A change nobody waits for (an
-- auto-grant, a sweep of unattended grants) would otherwise cost every broker process a
-- pub/sub message to read and drop.
local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function watched(req, now)
  local w = tonumber(redis.call('HGET', req, 'watch_until'))
  return w ~= nil and w >= now
end

local function wake(channel, req, id, status)
  if watched(req, redis_now_ms()) then redis.call('PUBLISH', channel, id .. ' ' .. status) end
end

-- A JSON string exactly as orjson writes it (the bytes Python's event() would hash): only
-- '"', '\' and control characters below 0x20 are escaped; \b \t \n \f \r in short form, the
-- others as \u00xx (lowercase); DEL, '/' and non-ASCII bytes pass through.
local JSON_SHORT = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\t'] = '\\t', ['\n'] = '\\n',
                    ['\f'] = '\\f', ['\r'] = '\\r'}
local function json_str(s)
  return '"' .. string.gsub(s, '[%z\1-\31"\\]', function(c)
    return JSON_SHORT[c] or string.format('\\u%04x', string.byte(c))
  end) .. '"'
end

-- An audit event whose "data" the script computes: the caller sends the canonical JSON
-- before and after the data object (keys sorted, so "data" sits between "at" and
-- "request_id"), and the script joins them; the result is what event() would have written.
local function audit_event(head, data, tail)
  local json = head .. data .. tail
  return {json, sha256_hex(json)}
end

-- A late decision or collection: the request's deadline has passed, so instead of the change
-- asked for, it expires now with the caller's expiry events and fields, exactly as the
-- sweep would (audit entry, deadline cleared, retention, desk notice, wake-up).
local function expire_late(req, deadlines, stream, head, outbox_key, id, channel, events_json, fields_json, retention_ms)
  audit_append(stream, head, cjson.decode(events_json))
  hset_json(req, fields_json)
  redis.call('HSET', req, 'status', 'expired')
  redis.call('HINCRBY', req, 'version', 1)
  set_deadline(deadlines, id, req, '-')
  if retention_ms ~= '' then redis.call('PEXPIRE', req, retention_ms) end
  outbox(outbox_key, id, 'expired', req)
  wake(channel, req, id, 'expired')
end

-- Whether the request's stored deadline has passed at ``now_ms``.
local function past_deadline(req, now_ms)
  local due = tonumber(redis.call('HGET', req, 'deadline_ms'))
  return due ~= nil and due <= now_ms
end

