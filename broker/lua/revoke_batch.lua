-- The kill switch: end a batch of open requests in one step, with ONE audit entry naming
-- them all (the caller's batch event), while each request gets exactly the state change and
-- the outbox entry a single revoke (or deny, or withdrawal) of it gives: its own status,
-- close fields, version, deadline removal, retention, outbox entry (so the desks and the
-- Shared Signals transmitter see each one) and long-poll wake-up.
-- KEYS: deadlines, audit stream, audit head, outbox, then one request hash per item
-- ARGV: events json (the batch event), channel, retention ms ('' none),
--       items json [[id, status read, new status, outbox kind, denial json or ''], ...],
--       closed_at, closed_by, close_reason, kill switch id ('' none: agents no longer registered)
-- The caller read each status first and built the event from it: if any request moved
-- since, nothing is written and {'retry', index} says which one.
local items = cjson.decode(ARGV[4])
for i, item in ipairs(items) do
  if redis.call('HGET', KEYS[4 + i], 'status') ~= item[2] then return {'retry', tostring(i)} end
end
audit_append(KEYS[2], KEYS[3], cjson.decode(ARGV[1]))
local ids = {}
for i, item in ipairs(items) do
  local key = KEYS[4 + i]
  redis.call('HSET', key, 'status', item[3], 'closed_at', ARGV[5], 'closed_by', ARGV[6],
             'close_reason', ARGV[7], 'deadline_ms', '')
  if ARGV[8] ~= '' then redis.call('HSET', key, 'kill_switch', ARGV[8]) end
  if item[5] ~= '' then redis.call('HSET', key, 'denial', item[5]) end
  redis.call('HINCRBY', key, 'version', 1)
  if ARGV[3] ~= '' then redis.call('PEXPIRE', key, ARGV[3]) end
  outbox(KEYS[4], item[1], item[4], key)
  wake(ARGV[2], key, item[1], item[3])
  ids[#ids + 1] = item[1]
end
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return {'ok', tostring(#ids)}
