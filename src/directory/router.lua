-- lockstep router state in Redis: one script, run atomically by EVAL, so every
-- reflector of a cluster changes rooms, seats, children and placement consistently.
-- The rules are those of src/router/memory_directory.cpp (docs/router.md); time is Redis's.
--
-- Keys:  ls:refl             hash  reflector id -> {"region","url","files","load","draining","instance","hb"}
--        ls:room:<room>      string JSON {"pol":{cap,over,ttl,retire},"next":n,"shards":[...]}
--        ls:rooms            set   every room name (for listings)
--                            a seat: {token, confirmed, conns: {"<reflector>#<instance>:<serial>": true}, exp}
--        ls:tok:<token>      string JSON {"room","user"}
--        ls:children:<p>     hash  purpose -> {"session","refl"}
-- ARGV[1] = operation, ARGV[2] = heartbeat TTL in ms, then the operation's arguments.
local op = ARGV[1]
local HB_TTL = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function count(tbl)
  local n = 0
  for _ in pairs(tbl) do n = n + 1 end
  return n
end

local function refl_by_id(id)
  local v = redis.call('HGET', 'ls:refl', id)
  if not v then return nil end
  local r = cjson.decode(v)
  r.id = id
  r.live = (now - r.hb) <= HB_TTL
  return r
end

local function all_reflectors()
  local flat = redis.call('HGETALL', 'ls:refl')
  local out = {}
  for i = 1, #flat, 2 do
    local r = cjson.decode(flat[i + 1])
    r.id = flat[i]
    r.live = (now - r.hb) <= HB_TTL
    out[#out + 1] = r
  end
  return out
end

-- Least-loaded live reflector of the region, else of any region.
local function place(region)
  local best, any
  for _, r in ipairs(all_reflectors()) do
    if r.live and not r.draining then
      if any == nil or r.load < any.load or (r.load == any.load and r.id < any.id) then any = r end
      if region ~= '' and r.region == region and
         (best == nil or r.load < best.load or (r.load == best.load and r.id < best.id)) then best = r end
    end
  end
  return best or any
end

local function threshold(pol)
  local x = math.ceil(pol.cap * pol.over - 1e-9)
  if x < 1 then x = 1 end
  return x
end

local function load_room(name)
  local v = redis.call('GET', 'ls:room:' .. name)
  if v then return cjson.decode(v) end
  return nil
end

local function save_room(name, r)
  redis.call('SET', 'ls:room:' .. name, cjson.encode(r))
  redis.call('SADD', 'ls:rooms', name)
end

local function free_seat(sh, user)
  local st = sh.seats[user]
  redis.call('DEL', 'ls:tok:' .. st.token)
  sh.seats[user] = nil
  if next(sh.seats) == nil then sh.empty = now end
end

-- A seat's connections are named "<reflector id>#<instance>:<serial>": those of a
-- reflector that is no longer live, or has restarted since (new instance), are gone.
local function drop_dead_connections(r)
  local alive = {}
  for _, rf in ipairs(all_reflectors()) do
    if rf.live then alive[rf.id .. '#' .. tostring(rf.instance or '')] = true end
  end
  for _, sh in ipairs(r.shards) do
    for _, st in pairs(sh.seats) do
      if st.confirmed then
        for c in pairs(st.conns) do
          local owner = string.match(c, '^(.*):[^:]*$') or c
          if not alive[owner] then st.conns[c] = nil end
        end
        if next(st.conns) == nil then
          st.confirmed = false
          st.exp = now + r.pol.ttl
        end
      end
    end
  end
end

local function sweep(r)
  drop_dead_connections(r)
  for _, sh in ipairs(r.shards) do
    for user, st in pairs(sh.seats) do
      if not st.confirmed and st.exp <= now then
        redis.call('DEL', 'ls:tok:' .. st.token)
        sh.seats[user] = nil
      end
    end
    if next(sh.seats) == nil then
      if sh.empty == 0 then sh.empty = now end
    else
      sh.empty = 0
    end
  end
  local thr = threshold(r.pol)
  local i = #r.shards
  while i > 1 do
    local sh = r.shards[i]
    if next(sh.seats) == nil and now - sh.empty >= r.pol.retire then
      local others_full = true
      for j, o in ipairs(r.shards) do
        if j ~= i and count(o.seats) < thr then others_full = false end
      end
      if not others_full then table.remove(r.shards, i) end
    end
    i = i - 1
  end
end

-- A room as GET /v1/rooms/<room> shows it (after a sweep); nil if unknown.
local function room_json(name)
  local r = load_room(name)
  if r == nil then return nil end
  sweep(r)
  save_room(name, r)
  local shards = {}
  for _, sh in ipairs(r.shards) do
    local members, reserved = 0, 0
    for _, st in pairs(sh.seats) do
      if st.confirmed then members = members + 1 else reserved = reserved + 1 end
    end
    shards[#shards + 1] = {session = sh.session, shard = sh.idx, members = members, reserved = reserved,
                           capacity = r.pol.cap, reflector = sh.refl}
  end
  return {room = name, capacity = r.pol.cap, overflow = r.pol.over, shards = shards}
end

local function spawn(name, r, region)
  local idx = r.next
  r.next = r.next + 1
  local p = place(region)
  local session = name
  if idx > 1 then session = name .. '~' .. idx end
  local sh = {idx = idx, session = session, refl = p and p.id or '', empty = now, seats = {}}
  r.shards[#r.shards + 1] = sh
  return sh
end

local function answer(name, sh, st, region)
  local rf = refl_by_id(sh.refl)
  if rf == nil or not rf.live or rf.draining then
    -- Its reflector is gone or draining: move the shard so all its users go to one place.
    rf = place(region)
    if rf then sh.refl = rf.id end
  end
  local base = ''
  if rf then base = (string.gsub(rf.url, '/+$', '')) end
  local exp = 0
  if not st.confirmed then exp = math.max(0, st.exp - now) end
  return {room = name, session = sh.session, shard = sh.idx,
          reflector = rf and (base .. '/r/' .. st.token) or '', files = rf and rf.files or '',
          expires_in_ms = exp}
end

local function find_token(token)
  local v = redis.call('GET', 'ls:tok:' .. token)
  if not v then return nil end
  local ref = cjson.decode(v)
  local r = load_room(ref.room)
  if r == nil then return nil end
  for _, sh in ipairs(r.shards) do
    local st = sh.seats[ref.user]
    if st and st.token == token then return ref, r, sh, st end
  end
  return nil
end

if op == 'join' then
  local name, user, region, token = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  if place(region) == nil then
    return cjson.encode({status = 503, error = 'no live reflector to place the session on', field = 'region'})
  end
  local r = load_room(name)
  if r == nil then
    r = {pol = {cap = tonumber(ARGV[7]), over = tonumber(ARGV[8]), ttl = tonumber(ARGV[9]),
                retire = tonumber(ARGV[10])}, next = 1, shards = {}}
  end
  sweep(r)
  for _, sh in ipairs(r.shards) do
    local st = sh.seats[user]
    if st then
      if not st.confirmed then st.exp = now + r.pol.ttl end
      local a = answer(name, sh, st, region)
      save_room(name, r)
      return cjson.encode(a)
    end
  end
  local target
  for _, sh in ipairs(r.shards) do
    if count(sh.seats) < r.pol.cap then target = sh break end
  end
  if target == nil then target = spawn(name, r, region) end
  local st = {token = token, confirmed = false, conns = {}, exp = now + r.pol.ttl}
  target.seats[user] = st
  target.empty = 0
  redis.call('SET', 'ls:tok:' .. token, cjson.encode({room = name, user = user}))
  local a = answer(name, target, st, region)
  -- Always keep headroom: when every shard is at the threshold, open the next one.
  local thr, all = threshold(r.pol), true
  for _, sh in ipairs(r.shards) do
    if count(sh.seats) < thr then all = false end
  end
  if all then spawn(name, r, region) end
  save_room(name, r)
  return cjson.encode(a)

elseif op == 'leave' then
  local name, user = ARGV[3], ARGV[4]
  local r = load_room(name)
  if r == nil then return 0 end
  for _, sh in ipairs(r.shards) do
    if sh.seats[user] then
      free_seat(sh, user)
      save_room(name, r)
      return 1
    end
  end
  return 0

elseif op == 'room' then
  local room = room_json(ARGV[3])
  if room == nil then return false end
  return cjson.encode(room)

elseif op == 'rooms' then
  local out = {}
  for _, name in ipairs(redis.call('SORT', 'ls:rooms', 'ALPHA', 'LIMIT', 0, tonumber(ARGV[3]))) do
    local room = room_json(name)
    if room then out[#out + 1] = room end
  end
  return cjson.encode(out)

elseif op == 'mjoin' then
  local token, jname, conn = ARGV[3], ARGV[4], ARGV[5]
  local ref, r, sh, st = find_token(token)
  if ref == nil then return 0 end
  local slash = string.find(jname, '/', 1, true)
  local same = jname == sh.session or (slash ~= nil and string.sub(jname, slash + 1) == sh.session)
  if not same or (not st.confirmed and st.exp < now) then return 0 end
  st.confirmed = true
  st.conns[conn] = true
  save_room(ref.room, r)
  return 1

elseif op == 'seat' then
  local ref, r, sh, st = find_token(ARGV[3])
  if ref == nil or (not st.confirmed and st.exp < now) then return 0 end
  return 1

elseif op == 'mleft' then
  local token, left, conn = ARGV[3], ARGV[4] == '1', ARGV[5]
  local ref, r, sh, st = find_token(token)
  if ref == nil then return 0 end
  st.conns[conn] = nil
  if next(st.conns) == nil and st.confirmed then
    if left then
      free_seat(sh, ref.user)
    else
      st.confirmed = false
      st.exp = now + r.pol.ttl
    end
  end
  save_room(ref.room, r)
  return 1

elseif op == 'child' then
  local parent, purpose, region = ARGV[3], ARGV[4], ARGV[5]
  local v = redis.call('HGET', 'ls:children:' .. parent, purpose)
  local c
  if v then
    c = cjson.decode(v)
  else
    local p = place(region)
    if p == nil then
      return cjson.encode({status = 503, error = 'no live reflector to place the session on', field = 'region'})
    end
    c = {session = parent .. '/' .. purpose, refl = p.id}
    redis.call('HSET', 'ls:children:' .. parent, purpose, cjson.encode(c))
  end
  local rf = refl_by_id(c.refl)
  return cjson.encode({parent = parent, session = c.session, purpose = purpose,
                       reflector = rf and rf.url or '', files = rf and rf.files or ''})

elseif op == 'children' then
  local flat = redis.call('HGETALL', 'ls:children:' .. ARGV[3])
  local out = {}
  for i = 1, #flat, 2 do
    local c = cjson.decode(flat[i + 1])
    local rf = refl_by_id(c.refl)
    out[#out + 1] = {session = c.session, purpose = flat[i], reflector = rf and rf.url or ''}
  end
  return cjson.encode(out)

elseif op == 'register' then
  local info = cjson.decode(ARGV[4])
  info.hb = now
  redis.call('HSET', 'ls:refl', ARGV[3], cjson.encode(info))
  return 1

elseif op == 'reflectors' then
  local out = {}
  for _, r in ipairs(all_reflectors()) do
    out[#out + 1] = {id = r.id, region = r.region, url = r.url, peer = r.peer, files = r.files, load = r.load,
                     last_heartbeat_ms_ago = now - r.hb, live = r.live, draining = r.draining or false}
  end
  return cjson.encode(out)
end
return redis.error_reply('unknown operation ' .. tostring(op))
