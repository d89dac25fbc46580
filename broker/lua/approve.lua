-- Record one approval; the last one needed approves the request. Returns {result, status,
-- count, the request's fields afterwards}.
-- KEYS: req, deadlines, audit stream, audit head, outbox
-- ARGV: id, approver, approval json, events if partial, events if complete,
--       fields if complete, deadline if complete, channel, required count, proposal sha,
--       notification kind if partial, notification kind if complete
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local cur = redis.call('HGET', KEYS[1], 'status')
local raw = redis.call('HGET', KEYS[1], 'approvals')
local approvals = {}
if raw and raw ~= '' and raw ~= '[]' then approvals = cjson.decode(raw) end
for _, a in ipairs(approvals) do
  if a['approver'] == ARGV[2] then return {'noop', cur, tostring(#approvals), redis.call('HGETALL', KEYS[1])} end
end
if cur ~= 'pending' then return {'conflict', cur, tostring(#approvals), redis.call('HGETALL', KEYS[1])} end
-- What was approved is what runs: the approver saw this exact proposal.
if redis.call('HGET', KEYS[1], 'proposal_sha256') ~= ARGV[10] then return {'stale', cur} end
approvals[#approvals + 1] = cjson.decode(ARGV[3])
local n = #approvals
local complete = n >= tonumber(ARGV[9])
if complete then
  audit_append(KEYS[3], KEYS[4], cjson.decode(ARGV[5]))
else
  audit_append(KEYS[3], KEYS[4], cjson.decode(ARGV[4]))
end
redis.call('HSET', KEYS[1], 'approvals', cjson.encode(approvals))
redis.call('HINCRBY', KEYS[1], 'version', 1)
local status = cur
if complete then
  status = 'approved'
  hset_json(KEYS[1], ARGV[6])
  redis.call('HSET', KEYS[1], 'status', status)
  set_deadline(KEYS[2], ARGV[1], KEYS[1], ARGV[7])
end
if complete then outbox(KEYS[5], ARGV[1], ARGV[12]) else outbox(KEYS[5], ARGV[1], ARGV[11]) end
wake(ARGV[8], KEYS[1], ARGV[1], status)
return {'ok', status, tostring(n), redis.call('HGETALL', KEYS[1])}
