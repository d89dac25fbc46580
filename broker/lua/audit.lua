-- Audit append, shared by every script: the raw events are sequenced ('seq') in the same atomic
-- step as the state change they record, and nothing else. No hash is computed here: the sealer
-- (broker/audit.py) integrates the entries into the Merkle tree outside the script.
-- The XADDs run before any state write, so a failed append leaves the state untouched.
local function audit_append(stream, head, events)
  if #events == 0 then return end
  local seq = tonumber(redis.call('HGET', head, 'seq')) or 0
  for _, ev in ipairs(events) do
    seq = seq + 1
    redis.call('XADD', stream, '*', 'seq', seq, 'event', ev)
  end
  redis.call('HSET', head, 'seq', seq)
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

local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A grant ended early: the request holds a token (grant_jti) that is not past its exp, and
-- its status is no longer active (revoked, completed, or any other end a script writes but
-- 'expired': a grant expires at its end, which the token's exp already says). The
-- broker's SSF transmitter (broker/ssf) tells subscribed resource servers, at least once,
-- from the stream '<outbox>:ssf'. Called by outbox() for every change of a request, so a
-- script that ends grants (one or a batch) gets it by queueing its notices through outbox()
-- with the request key, or by calling this itself after writing the status; 'ssf_at' makes
-- a second call for the same grant a no-op. A grant that reached its exp needs no signal.
local function grant_ended(outbox_key, req, id)
  local g = redis.call('HMGET', req, 'status', 'grant_jti', 'grant_exp', 'ssf_at', 'closed_by', 'close_reason')
  local st = g[1]
  if not st or st == 'active' or st == 'approved' or st == 'pending' or st == 'expired' then return end
  if not g[2] or g[2] == '' or (g[4] and g[4] ~= '') then return end
  local exp = tonumber(g[3])
  local now = redis_now_ms()
  if exp == nil or exp * 1000 <= now then return end
  redis.call('HSET', req, 'ssf_at', tostring(now))
  local aud = ''
  local ok, p = pcall(cjson.decode, redis.call('HGET', req, 'proposal') or '')
  if ok and type(p) == 'table' and type(p['target']) == 'string' then aud = p['target'] end
  redis.call('XADD', outbox_key .. ':ssf', 'MAXLEN', '~', 100000, '*', 'id', id, 'jti', g[2], 'exp', g[3],
             'aud', aud, 'status', st, 'by', g[5] or '', 'reason', g[6] or '', 'at', tostring(now))
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
  -- The agent's requests waiting for people (issue 19, item 4: at most so many at once). A
  -- script that moves a request on without its key here leaves a stale member, which the
  -- reader drops (Store.open_requests).
  if st == 'pending' then redis.call('SADD', p .. 'pending', id) else redis.call('SREM', p .. 'pending', id) end
  -- The agent's history of the last day (issue 19, item 5; read by history.lua): each request
  -- once when first seen, once when granted (approved or later), once when denied.
  local now24 = redis_now_ms()
  local function seen(name)
    if redis.call('ZADD', p .. name, 'NX', now24, id) == 1 then  -- trimmed only when it grows
      redis.call('ZREMRANGEBYSCORE', p .. name, '-inf', now24 - 86400000)
      redis.call('PEXPIRE', p .. name, 86400000)
    end
  end
  seen('seen')
  if st == 'approved' or st == 'active' then seen('granted') elseif st == 'denied' then seen('denied') end
  -- Requests waiting for people per approver group (issue 19, item 7: the approvers' load).
  local group = redis.call('HGET', req, 'approver_group')
  if group and group ~= '' then
    local gp = string.sub(req, 1, #req - #id - 6) .. 'group:'
    if st == 'pending' then
      redis.call('SADD', gp .. 'pending:' .. group, id)
      redis.call('SADD', gp .. 'names', group)
    else
      redis.call('SREM', gp .. 'pending:' .. group, id)
    end
  end
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
  if req then
    grant_ended(stream, req, id)
    index_grant(req, id)
  end
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
  return head .. data .. tail
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

