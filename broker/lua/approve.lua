-- Record one approval; the last one needed approves the request. Returns {result, status,
-- count, the request's fields afterwards}.
-- Everything that depends on the other approvals is computed HERE, from the approvals this
-- hash holds, not from what the caller read before: two approvals racing must not lose a
-- cap nor write a wrong count or approver list into the audit log.
-- KEYS: req, deadlines, audit stream, audit head, outbox
-- ARGV: 1 id, 2 approver, 3 approval json, 4 now ms (the broker's clock), 5 required count,
--       6 proposal sha, 7 channel, 8 cap s (the request's own: proposal, policy, settings),
--       9 collect deadline ms (the latest; capped by the grant's end here),
--       10 approval.recorded events for count 1, 2, ... required (events json: the script
--       picks the one for the count it makes), 11/12 request.approved event before/after its
--       data, 13 events if the deadline has passed, 14 fields then, 15 retention ms then
--       ('' none), 16 notification kind if partial, 17 if complete, 18 the group of a mixed
--       quorum this approval counts for ('' none), 19 how many that group needs
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
if redis.call('HGET', KEYS[1], 'proposal_sha256') ~= ARGV[6] then return {'stale', cur} end
local now = tonumber(ARGV[4])
-- A decision after the deadline is refused, and the request expires now (as the sweep would).
if past_deadline(KEYS[1], now) then
  expire_late(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[7], ARGV[13], ARGV[14], ARGV[15])
  return {'late', 'expired', tostring(#approvals), redis.call('HGETALL', KEYS[1])}
end
-- A mixed quorum: the approval counts for one group, and only while that group lacks approvals
-- (the caller chose it from what it read; another approver may have filled it since).
if ARGV[18] ~= '' then
  local have = 0
  for _, a in ipairs(approvals) do
    if a['group'] == ARGV[18] then have = have + 1 end
  end
  if have >= tonumber(ARGV[19]) then return {'filled', cur, tostring(#approvals), redis.call('HGETALL', KEYS[1])} end
end
local mine = cjson.decode(ARGV[3])
approvals[#approvals + 1] = mine
local n = #approvals
local required = tonumber(ARGV[5])
local complete = n >= required
-- The entry for this count was prepared by the caller (it knows everything else in it).
local recorded = cjson.decode(ARGV[10])
if recorded[n] == nil then return redis.error_reply('no approval.recorded event for count ' .. n) end
local events = {recorded[n]}
local granted, names = tonumber(ARGV[8]), {}
if complete then
  -- The cap is the smallest over every approval recorded, whoever read what.
  for _, a in ipairs(approvals) do
    local d = tonumber(a['duration_s'])
    if d ~= nil and d < granted then granted = d end
    names[#names + 1] = json_str(a['approver'])
  end
  if granted < 1 then granted = 1 end
  events[2] = audit_event(ARGV[11], '{"approved_duration_s":' .. string.format('%d', granted) .. ',"approvers":['
    .. table.concat(names, ',') .. ']}', ARGV[12])
end
audit_append(KEYS[3], KEYS[4], events)
redis.call('HSET', KEYS[1], 'approvals', cjson.encode(approvals))
redis.call('HINCRBY', KEYS[1], 'version', 1)
local status = cur
if complete then
  status = 'approved'
  -- The grant's end is fixed now: a token collected later never lives past it.
  local grant_end = now + granted * 1000
  local deadline = math.min(tonumber(ARGV[9]), grant_end)
  redis.call('HSET', KEYS[1], 'status', status, 'approved_duration_s', string.format('%d', granted),
             'grant_end_ms', string.format('%d', grant_end))
  set_deadline(KEYS[2], ARGV[1], KEYS[1], string.format('%d', deadline))
end
if complete then outbox(KEYS[5], ARGV[1], ARGV[17]) else outbox(KEYS[5], ARGV[1], ARGV[16]) end
wake(ARGV[7], KEYS[1], ARGV[1], status)
return {'ok', status, tostring(n), redis.call('HGETALL', KEYS[1])}
