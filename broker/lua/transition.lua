-- One compare-and-set state change with its audit events. Returns {result, status, '', the
-- request's fields afterwards} (the caller need not read it again).
-- KEYS: req, deadlines, audit stream, audit head, outbox
-- ARGV: id, allowed from-states (space separated), to-state, fields json, events json,
--       deadline op ('' keep, '-' clear, score), channel, now ms, due check ('1': only if
--       the stored deadline has passed), retention ms ('' none: PEXPIRE on closing),
--       notification kind ('' none), return the fields on success ('1'/'0'),
--       13 in time ('1': only if the stored deadline has NOT passed; if it has, the request
--       expires now instead, with events 14, fields 15 and retention ms 16, and {'late', ...})
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[6] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end
  return {'missing'}
end
local cur = redis.call('HGET', KEYS[1], 'status')
if cur == ARGV[3] then return {'noop', cur, '', redis.call('HGETALL', KEYS[1])} end
local allowed = false
for s in string.gmatch(ARGV[2], '%S+') do
  if s == cur then allowed = true end
end
if not allowed then return {'conflict', cur, '', redis.call('HGETALL', KEYS[1])} end
if ARGV[9] == '1' then
  local due = tonumber(redis.call('HGET', KEYS[1], 'deadline_ms'))
  if due == nil or due > tonumber(ARGV[8]) then return {'not_due', cur} end
end
if ARGV[13] == '1' and past_deadline(KEYS[1], tonumber(ARGV[8])) then
  expire_late(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[7], ARGV[14], ARGV[15], ARGV[16])
  return {'late', 'expired', '', redis.call('HGETALL', KEYS[1])}
end
audit_append(KEYS[3], KEYS[4], cjson.decode(ARGV[5]))
hset_json(KEYS[1], ARGV[4])
redis.call('HSET', KEYS[1], 'status', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'version', 1)
set_deadline(KEYS[2], ARGV[1], KEYS[1], ARGV[6])
if ARGV[10] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[10]) end
outbox(KEYS[5], ARGV[1], ARGV[11], KEYS[1])
wake(ARGV[7], KEYS[1], ARGV[1], ARGV[3])
if ARGV[12] == '0' then return {'ok', ARGV[3]} end
return {'ok', ARGV[3], '', redis.call('HGETALL', KEYS[1])}
