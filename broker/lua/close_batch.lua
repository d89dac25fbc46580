-- Close a batch of open requests the policies no longer permit (issue 16, item 1): the
-- re-evaluation after a posture or policy change. Pending and approved requests are
-- denied, active grants revoked, all in one step with the batch's audit entry (the chain
-- hash is paid once per batch, as the sweep's). Each closed request gets the outbox entry a
-- single denial or revocation queues (its desks' messages are updated one by one), its
-- wake-up, and (through outbox()) leaves the agent's grant index.
-- KEYS: deadlines, audit stream, audit head, outbox, then one request hash per item
-- ARGV: 1 now ms, 2 events json, 3 channel, 4 retention ms ('' none),
--       5 items json [[id, expected status, new status, fields json, notification kind], ...]
-- If any request moved since it was read, nothing is written and {'retry', index} says which.
local items = cjson.decode(ARGV[5])
for i, item in ipairs(items) do
  if redis.call('HGET', KEYS[4 + i], 'status') ~= item[2] then return {'retry', tostring(i)} end
end
audit_append(KEYS[2], KEYS[3], cjson.decode(ARGV[2]))
for i, item in ipairs(items) do
  local key = KEYS[4 + i]
  hset_json(key, item[4])
  redis.call('HSET', key, 'status', item[3])
  redis.call('HINCRBY', key, 'version', 1)
  set_deadline(KEYS[1], item[1], key, '-')
  if ARGV[4] ~= '' then redis.call('PEXPIRE', key, ARGV[4]) end
  outbox(KEYS[4], item[1], item[5], key)
  wake(ARGV[3], key, item[1], item[3])
end
return {'ok', tostring(#items)}
