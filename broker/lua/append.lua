-- Append audit events that change no state, optionally setting fields on a request
-- (e.g. the chat message references after a notification was posted) and queueing a
-- notification (reminders).
-- KEYS: audit stream, audit head, outbox, req (optional)
-- ARGV: events json, fields json, notification kind ('' none), request id
if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 0 then return {'missing'} end
audit_append(KEYS[1], KEYS[2], cjson.decode(ARGV[1]))
if KEYS[4] then hset_json(KEYS[4], ARGV[2]) end
outbox(KEYS[3], ARGV[4], ARGV[3])
return {'ok'}
