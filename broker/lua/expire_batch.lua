-- Expire a batch of requests whose deadlines have passed, with ONE audit entry for the
-- batch (the scheduler's sweep: its cost is what is due, and the chain hash is paid once).
-- KEYS: deadlines, audit stream, audit head, outbox, then one request hash per item
-- ARGV: now ms, events json (the batch event), channel, retention ms ('' none),
--       items json [[id, expected status, close reason], ...], closed_at
-- The caller read each status first and built the event from it: if any request moved
-- since (or is not due), nothing is written and {'retry', index} says which one.
local items = cjson.decode(ARGV[5])
local now = tonumber(ARGV[1])
for i, item in ipairs(items) do
  local key = KEYS[4 + i]
  local st = redis.call('HMGET', key, 'status', 'deadline_ms')
  local due = tonumber(st[2])
  if st[1] ~= item[2] or due == nil or due > now then return {'retry', tostring(i)} end
end
audit_append(KEYS[2], KEYS[3], cjson.decode(ARGV[2]))
local ids, lines = {}, {}
local clock = redis_now_ms()
for i, item in ipairs(items) do
  local key = KEYS[4 + i]
  redis.call('HSET', key, 'status', 'expired', 'closed_at', ARGV[6], 'closed_by', 'scheduler',
             'close_reason', item[3], 'deadline_ms', '')
  redis.call('HINCRBY', key, 'version', 1)
  if item[2] == 'active' then index_grant(key, item[1]) end
  if ARGV[4] ~= '' then redis.call('PEXPIRE', key, ARGV[4]) end
  ids[#ids + 1] = item[1]
  if watched(key, clock) then lines[#lines + 1] = item[1] .. ' expired' end
end
if #ids > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids))
  -- One outbox entry for the batch: the consumer fans it out per request.
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'id', ids[1], 'ids', table.concat(ids, ' '), 'kind', 'expired')
end
if #lines > 0 then redis.call('PUBLISH', ARGV[3], table.concat(lines, '\n')) end
return {'ok', tostring(#ids)}
