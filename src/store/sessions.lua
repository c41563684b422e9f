-- lockstep session state in Redis (cluster mode, docs/durability.md): one owner per
-- session (a lease with a fencing number) and the session's journal. Run by EVALSHA
-- (loaded again after NOSCRIPT), so every check and write of one call is atomic across
-- the cluster.
--
-- KEYS[1] ls:s:{id}:lease  string "<holder>#<fence>", expires after the lease time
-- KEYS[2] ls:s:{id}:fence  integer, INCR at each acquisition: the fencing number
-- KEYS[3] ls:s:{id}:h      hash header (JSON, journal format), seq, seen, fence
-- KEYS[4] ls:s:{id}:ev     list of the log elements since the snapshot, in seq order
-- KEYS[5] ls:s:{id}:moved  exists while the session may not be handed off again
-- KEYS[6] ls:clock          Redis' time (ms) at the last tick or acquire of any reflector
-- KEYS[7] ls:outage         exists for a lease after Redis was silent: takeovers wait
-- ARGV[1] = operation, then its arguments.
local op = ARGV[1]

-- Outages. Every reflector ticks each quarter of its lease. When no tick and no acquire
-- came for half a lease, nobody could reach Redis (it was stopped, or cut off): leases
-- ran out meanwhile although their owners are alive and kept their sessions running.
-- So for one lease from now no session may be taken over; owners renew theirs first
-- (a lease that ran out while nobody took it is renewed: see 'renew').
-- The same when the clock is missing although the caller saw it before (`seen` '1'):
-- Redis lost its data (it restarted without persistence). Owners then write their
-- sessions again (see 'renew' and 'append') before anybody may take one over. The
-- outage key holds the silence in ms, or -1 for lost data. Returns Redis' time (ms).
local function clock(lease_ms, seen)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last = tonumber(redis.call('GET', KEYS[6]) or '')
  if last and now - last > lease_ms / 2 then
    redis.call('SET', KEYS[7], tostring(now - last), 'PX', lease_ms)
  elseif not last and seen == '1' then
    redis.call('SET', KEYS[7], '-1', 'PX', lease_ms)
  end
  redis.call('SET', KEYS[6], tostring(now))
  return now
end

if op == 'tick' then
  -- ARGV: lease ms, seen (1: the caller saw the clock before). Returns the silence (ms)
  -- the outage rule is waiting out (-1: Redis lost its data), or 0.
  clock(tonumber(ARGV[2]), ARGV[3])
  return tonumber(redis.call('GET', KEYS[7]) or '0')
end

if op == 'acquire' then
  -- ARGV: holder, lease ms, seen (as for 'tick'). Returns {0, current token}, {2} (after
  -- an outage: wait), or {1, token, fence, header, seq, seen, events}.
  local now = clock(tonumber(ARGV[3]), ARGV[4])
  local cur = redis.call('GET', KEYS[1])
  if cur then return {0, cur} end
  if redis.call('EXISTS', KEYS[7]) == 1 then return {2} end
  -- A session's first fencing number is Redis' time in ms: never one an earlier owner
  -- had, also after Redis lost its data (an owner frozen meanwhile stays fenced).
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], tostring(now)) end
  local fence = redis.call('INCR', KEYS[2])
  local token = ARGV[2] .. '#' .. fence
  redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
  local h = redis.call('HMGET', KEYS[3], 'header', 'seq', 'seen')
  return {1, token, fence, h[1] or '', h[2] or '', h[3] or '', redis.call('LRANGE', KEYS[4], 0, -1)}
end

if op == 'renew' then
  -- ARGV: token, fence, lease ms. The holder extends its lease; a lease that expired
  -- while nobody took it (the fencing number is still ours) is taken again. Returns 1,
  -- 0 (lost), or 2: Redis lost the session (no lease, no fencing number: nobody took it
  -- since, a taker would have made one): it is ours again, and the holder must write its
  -- whole state.
  local cur = redis.call('GET', KEYS[1])
  if cur == ARGV[2] then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    return 1
  end
  if cur then return 0 end
  local fence = redis.call('GET', KEYS[2])
  if fence == ARGV[3] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
    return 1
  end
  if not fence then
    redis.call('SET', KEYS[2], ARGV[3])
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
    return 2
  end
  return 0
end

if op == 'release' then
  -- ARGV: token
  if redis.call('GET', KEYS[1]) == ARGV[2] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end

if op == 'handoff' then
  -- ARGV: token, minimum interval ms between hand-offs. A JOIN for the session reached
  -- another reflector while this one holds it: may the holder hand it off now? Returns
  -- 1 (yes; no further hand-off for the interval), 0 (not held by this token), -1 (it
  -- was handed off less than the interval ago, or hand-offs are off: interval 0).
  if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
  local interval = tonumber(ARGV[3])
  if interval <= 0 or redis.call('EXISTS', KEYS[5]) == 1 then return -1 end
  redis.call('SET', KEYS[5], '1', 'PX', interval)
  return 1
end

if op == 'append' then
  -- ARGV: fence, rebase (1|0), header JSON ('' = unchanged), seq ('' = unchanged), seen ('' = unchanged),
  -- retention ms, first seq of the events ('' = none), events...
  -- Returns 1 (written), 0 (fenced: another owner took the session), -1 (the events do
  -- not continue the stored seq, or Redis lost the session: the owner must rewrite the
  -- whole state).
  local rebase = ARGV[3] == '1'
  local fence = redis.call('GET', KEYS[2])
  if not fence then
    -- Redis lost the session (or its retention ran out): nobody took it since. The
    -- whole state puts it back, unless another holder's lease is there.
    local cur = redis.call('GET', KEYS[1])
    if cur and string.sub(cur, -(#ARGV[2] + 1)) ~= '#' .. ARGV[2] then return 0 end
    if not rebase then return -1 end
    redis.call('SET', KEYS[2], ARGV[2])
  elseif fence ~= ARGV[2] then
    return 0
  end
  if not rebase and ARGV[8] ~= '' then
    local stored = tonumber(redis.call('HGET', KEYS[3], 'seq') or '-1')
    if (stored + 1) % 4294967296 ~= tonumber(ARGV[8]) then return -1 end
  end
  if rebase then
    redis.call('DEL', KEYS[4])
  end
  local n = #ARGV
  for i = 9, n, 500 do
    redis.call('RPUSH', KEYS[4], unpack(ARGV, i, math.min(n, i + 499)))
  end
  -- One HSET for every field that changed (fewer calls: this runs once per session and batch).
  local h = {'HSET', KEYS[3], 'fence', ARGV[2]}
  if ARGV[4] ~= '' then h[#h + 1] = 'header'; h[#h + 1] = ARGV[4] end
  if ARGV[5] ~= '' then h[#h + 1] = 'seq'; h[#h + 1] = ARGV[5] end
  if ARGV[6] ~= '' then h[#h + 1] = 'seen'; h[#h + 1] = ARGV[6] end
  redis.call(unpack(h))
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
  redis.call('PEXPIRE', KEYS[4], ARGV[7])  -- no-op while the list is empty (no key)
  return 1
end

return redis.error_reply('unknown operation ' .. tostring(op))
