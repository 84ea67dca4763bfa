-- opskit token bucket (GCRA), one key per (policy, client), the server's clock.
-- KEYS[1]: the bucket. ARGV[1]: cost. ARGV[2]: force (1: spend the cost even past the burst, putting
-- the bucket in debt; the reply still says whether it would have passed). ARGV[2i+1], ARGV[2i+2]:
-- interval (microseconds per token) and burst of rate i. The key holds one theoretical arrival time
-- (microseconds) per rate, comma-separated.
-- Returns {allowed, index of the most constraining rate, remaining, retry_after_us, reset_us}.
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local cost = tonumber(ARGV[1])
local force = ARGV[2] == '1'
local n = (#ARGV - 2) / 2
local tats = {}
local stored = redis.call('GET', KEYS[1])
if stored then
  for value in string.gmatch(stored, '[^,]+') do tats[#tats + 1] = tonumber(value) end
end
local starts, ends, allowed = {}, {}, 1
for i = 1, n do
  local interval, burst = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
  local tat = tats[i]
  if tat == nil or tat < now then tat = now end
  starts[i] = tat
  ends[i] = tat + cost * interval
  if ends[i] - now > burst * interval + 0.001 then allowed = 0 end
end
local final = (allowed == 1 or force) and ends or starts
local best, best_remaining, retry, ttl = 1, -1, 0, 1
local out = {}
for i = 1, n do
  local interval, burst = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
  local remaining = math.floor((burst * interval - (final[i] - now)) / interval + 0.000001)
  if best_remaining < 0 or remaining < best_remaining then best, best_remaining = i, remaining end
  if allowed == 0 then retry = math.max(retry, ends[i] - now - burst * interval) end
  ttl = math.max(ttl, math.ceil((final[i] - now) / 1000))
  out[i] = string.format('%.0f', final[i])
end
if allowed == 1 or force then
  redis.call('SET', KEYS[1], table.concat(out, ','), 'PX', ttl)
end
return {allowed, best, math.max(0, best_remaining), math.ceil(retry), math.ceil(final[best] - now)}
