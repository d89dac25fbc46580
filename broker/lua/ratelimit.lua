-- Token buckets for proposals that would reach people (issue 19, item 4). One bucket per agent
-- and one per target, refilled continuously at `rate` tokens a minute up to `rate`; a proposal
-- takes one token from each, or from neither when either is empty.
-- KEYS: agent bucket, target bucket
-- ARGV: now ms, agent rate per minute (0: no limit), target rate per minute (0: no limit)
-- Returns {0, ''} when taken, else {ms until a token is there, 'agent' | 'target'}.
local now = tonumber(ARGV[1])
local function level(key, rate)
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or at == nil then return rate end
  return math.min(rate, tokens + math.max(0, now - at) * rate / 60000)
end
local levels, wait, which = {}, 0, ''
for i = 1, 2 do
  local rate = tonumber(ARGV[i + 1])
  if rate > 0 then
    local t = level(KEYS[i], rate)
    levels[i] = t
    if t < 1 then
      local ms = math.ceil((1 - t) * 60000 / rate)
      if ms > wait then wait, which = ms, (i == 1 and 'agent' or 'target') end
    end
  end
end
if wait > 0 then return {wait, which} end
for i = 1, 2 do
  local rate = tonumber(ARGV[i + 1])
  if rate > 0 then
    redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - 1), 'at', ARGV[1])
    redis.call('PEXPIRE', KEYS[i], 61000)  -- full again a minute after the last take
  end
end
return {0, ''}
