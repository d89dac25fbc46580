-- Create a request. KEYS: req, deadlines, audit stream, audit head, idempotency key, outbox,
-- reminders
-- ARGV: id, fields json, events json, deadline op, idem ttl ms, has idem ('1'/'0'), status,
--       retention ms ('' none: a request closed at birth, e.g. denied by policy, expires then),
--       notification kind ('' none), first reminder score ('' none)
-- No wake-up is published: nobody can be waiting on a request that did not exist.
if ARGV[6] == '1' then
  local existing = redis.call('GET', KEYS[5])
  if existing then return {'exists', existing} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'conflict', 'id'} end
audit_append(KEYS[3], KEYS[4], cjson.decode(ARGV[3]))
hset_json(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'status', ARGV[7], 'version', 1)
set_deadline(KEYS[2], ARGV[1], KEYS[1], ARGV[4])
if ARGV[6] == '1' then redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[5]) end
if ARGV[8] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[8]) end
outbox(KEYS[6], ARGV[1], ARGV[9], KEYS[1])
if ARGV[10] ~= '' then redis.call('ZADD', KEYS[7], ARGV[10], ARGV[1]) end
return {'ok', ARGV[1], '', redis.call('HGETALL', KEYS[1])}
