-- An agent's recent history for the approval message (issue 19, item 5), from the indexes
-- audit.lua index_grant keeps (never a scan): requests, grants and denials in the last 24 h
-- (Redis time), active grants and requests waiting now, and the last few denials' records.
-- KEYS: seen, granted, denied, active, pending (the agent's index keys); ARGV: how many denials
-- to detail, the request key prefix ('<prefix>{req:')
-- Returns {requests, granted, denied, active, pending, id1, denial1, proposal1, ...}.
local t = redis.call('TIME')
local since = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - 86400000
local out = {redis.call('ZCOUNT', KEYS[1], since, '+inf'), redis.call('ZCOUNT', KEYS[2], since, '+inf'),
             redis.call('ZCOUNT', KEYS[3], since, '+inf'), redis.call('SCARD', KEYS[4]), redis.call('SCARD', KEYS[5])}
for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[3], '+inf', since, 'LIMIT', 0, tonumber(ARGV[1]))) do
  local v = redis.call('HMGET', ARGV[2] .. id .. '}', 'denial', 'proposal')
  out[#out + 1] = id
  out[#out + 1] = v[1] or ''
  out[#out + 1] = v[2] or ''
end
return out
