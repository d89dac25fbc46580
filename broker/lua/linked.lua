-- An attempt linked to a recent denial (issue 19, item 3: alternate paths), counted in the
-- window; the attempt that reaches the threshold raises one security alert for the window
-- (audit entry and outbox notice in this same step) and, if asked, suspends the agent.
-- KEYS: linked attempts (sorted set of request ids by ms), alert marker, suspension key,
--       audit stream, audit head, outbox, the request (its alert sentence is kept on it)
-- ARGV: request id, now ms, window ms, alert after (K), suspend ('1'/'0'), alert events json,
--       suspension record json, outbox kind of the alert, the alert's sentence
-- Returns {linked attempts in the window (this one included), 1 when this attempt alerted}.
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window)
local n = redis.call('ZCARD', KEYS[1])
if n < tonumber(ARGV[4]) or redis.call('EXISTS', KEYS[2]) == 1 then return {n, 0} end
audit_append(KEYS[4], KEYS[5], cjson.decode(ARGV[6]))
redis.call('SET', KEYS[2], ARGV[1], 'PX', window)
redis.call('HSET', KEYS[7], 'alternate_paths_alert', ARGV[9])
if ARGV[5] == '1' then redis.call('SET', KEYS[3], ARGV[7]) end
outbox(KEYS[6], ARGV[1], ARGV[8])
return {n, 1}
