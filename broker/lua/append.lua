-- Append audit events that change no state, optionally setting fields on a request
-- (e.g. the chat message references after a notification was posted).
-- KEYS: audit stream, audit head, req (optional)
-- ARGV: events json, fields json
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0 then return {'missing'} end
audit_append(KEYS[1], KEYS[2], cjson.decode(ARGV[1]))
if KEYS[3] then hset_json(KEYS[3], ARGV[2]) end
return {'ok'}
