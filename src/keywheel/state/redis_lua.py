"""The Redis store's Lua scripts: the rule book of :mod:`keywheel.state.rules`, ported line by line.

Each script runs atomically on the server, one round trip each, and reads the clock from Redis
``TIME`` (unless a test passes a fixed ``now``), so replicas whose own clocks disagree make the
same decisions.  Numbers travel as ``%.17g`` strings: Redis would turn a Lua number into an integer.

Every key a script touches is declared in ``KEYS`` and carries the provider's hash tag, so a
provider's scripts run on one Cluster slot.  The layout (``P`` = ``{prefix}:{provider}``):

- ``P:p``        hash: the provider — ``tu`` throttled until; breaker ``bs`` state, ``bf`` failures,
                 ``bu`` until, ``bc`` cool-off, ``bt`` trial key id;
- ``P:rr``       string: the id of the key picked last (the round-robin's position, for every replica);
- ``P:fl``       hash: in-flight requests, field ``replica|id``;
- ``P:rep``      sorted set: replicas by the time they were last seen (their in-flight lease);
- ``P:k:<id>``   hash: one key — ``s`` state, ``u`` until, ``r`` reason, ``c`` cause, ``b`` backoff,
                 ``l`` last rate limited (absent: never); counters ``n`` requests, ``ok`` successes,
                 ``f:<Kind>`` failures, ``le`` last error, ``lu`` last used, ``ti``/``to`` tokens,
                 ``lat`` latency sum (ms);
- ``P:w:<group>:<window>``  one quota window of a key group (:mod:`keywheel.state.windows`, whose
                 docstring is the algorithm): sliding — a sorted set of charges scored by their
                 selection time, member ``seq`` (a request) or ``seq:amount`` (tokens), expiring
                 with the window; daily — a hash ``used``, ``reset`` (the next local midnight,
                 chosen among candidates Python computes, as Lua has no time zones).
"""

from __future__ import annotations

COMMON = r"""
local function fmt(x) return string.format('%.17g', x) end
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- the in-flight lease: forget the slots of replicas not seen for `lease` seconds
-- quota windows (keywheel.state.windows, ported): spec = {limit, seconds, unit 'r'|'t', daily, resets}
local function amount_of(member)
  local a = string.match(member, ':(%d+)$')
  if a then return tonumber(a) end
  return 1
end
local function next_reset(resets, now)
  local best = nil
  for c in string.gmatch(resets, '[^,]+') do
    local v = tonumber(c)
    if v > now and (best == nil or v < best) then best = v end
  end
  return best or (now + 86400)
end
local function win_used(wk, spec, now, guard)
  if spec.daily then
    local h = redis.call('HMGET', wk, 'used', 'reset')
    local used, reset = tonumber(h[1]) or 0, tonumber(h[2]) or 0
    if now >= reset then
      reset = next_reset(spec.resets, now)
      used = 0
      redis.call('HSET', wk, 'used', '0', 'reset', fmt(reset))
      redis.call('PEXPIRE', wk, math.ceil((reset - now + 3600) * 1000))  -- relative: clocks may disagree
    end
    return used, reset
  end
  redis.call('ZREMRANGEBYSCORE', wk, '-inf', fmt(now - spec.seconds - guard))
  if spec.unit == 'r' then return redis.call('ZCARD', wk), 0 end
  local used = 0
  for _, m in ipairs(redis.call('ZRANGE', wk, 0, -1)) do used = used + amount_of(m) end
  return used, 0
end
local function win_wait(wk, spec, cost, now, guard)
  local used, reset = win_used(wk, spec, now, guard)
  if used + cost <= spec.limit or used == 0 then return 0 end
  if spec.daily then return math.max(reset - now, 0) end
  local room, freed, last = used + cost - spec.limit, 0, now
  local all = redis.call('ZRANGE', wk, 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    freed = freed + amount_of(all[i])
    last = tonumber(all[i + 1])
    if freed >= room then break end
  end
  return math.max(last + spec.seconds + guard - now, 0)
end
local function win_take(wk, spec, cost, now, guard, seq)
  if spec.daily then
    redis.call('HINCRBY', wk, 'used', cost)
    return ''
  end
  local member = tostring(seq)
  if spec.unit == 't' then member = member .. ':' .. tostring(cost) end
  redis.call('ZADD', wk, fmt(now), member)
  redis.call('PEXPIRE', wk, math.ceil((spec.seconds + guard) * 1000) + 1000)
  if spec.unit == 't' then return member end
  return ''
end
-- the in-flight lease: forget the slots of replicas not seen for `lease` seconds
local function expire_replicas(fl, rep, now, lease)
  local dead = redis.call('ZRANGEBYSCORE', rep, '-inf', fmt(now - lease))
  if #dead == 0 then return end
  local gone = {}
  for _, r in ipairs(dead) do gone[r] = true end
  local all = redis.call('HKEYS', fl)
  for _, f in ipairs(all) do
    local r = string.match(f, '^(.*)|')
    if r and gone[r] then redis.call('HDEL', fl, f) end
  end
  redis.call('ZREMRANGEBYSCORE', rep, '-inf', fmt(now - lease))
end
"""

# KEYS: 1 provider, 2 round-robin, 3 in-flight, 4 replicas, 5..4+n the replica's keys (sorted by id),
#       then the m quota windows of their groups
# ARGV: 1 now ('' = TIME), 2 force, 3 trial timeout, 4 replica, 5 lease (s), 6 n, 7 tokens (the call's
#       estimate), 8 guard (s), 9 m, 10..9+n the key ids, then per key its windows ("1,3": indexes
#       into the m windows), then per window 5: limit, seconds, unit (r|t), daily (1|0), resets
# -> {'k', id, breaker before, breaker after, token charges "j=member;…"} | {'w', seconds} | {'o', seconds} | {'n'}
ACQUIRE = (
    COMMON
    + r"""
local now = clock(ARGV[1])
local p = redis.call('HMGET', KEYS[1], 'tu', 'bs', 'bu')
local tu, bs, bu = tonumber(p[1]) or 0, p[2] or 'closed', tonumber(p[3]) or 0
local trial = false
if bs ~= 'closed' and ARGV[2] ~= '1' then
  if now < bu then return {'o', fmt(bu - now)} end
  trial = true  -- the cool-off is over, or the last trial's lease ran out: this request is the trial
end
if now < tu then return {'w', fmt(tu - now)} end
local n, tokens, guard, m = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
if n == 0 then return {'n'} end
local specs = {}
for j = 1, m do
  local a = 9 + 2 * n + (j - 1) * 5
  specs[j] = {limit = tonumber(ARGV[a + 1]), seconds = tonumber(ARGV[a + 2]), unit = ARGV[a + 3],
              daily = ARGV[a + 4] == '1', resets = ARGV[a + 5]}
end
local function windows_of(i)
  local list = {}
  for w in string.gmatch(ARGV[9 + n + i], '%d+') do list[#list + 1] = tonumber(w) end
  return list
end
local function cost_of(j) if specs[j].unit == 't' then return tokens end return 1 end
local last = redis.call('GET', KEYS[2]) or ''
local start = 1
for i = 1, n do
  if ARGV[9 + i] > last then start = i break end
end
local earliest = nil
local full = nil  -- seconds until the first full window frees
for j = 0, n - 1 do
  local i = (start - 1 + j) % n + 1
  local k = KEYS[4 + i]
  local st = redis.call('HMGET', k, 's', 'u')
  local s = st[1] or 'active'
  if s == 'cooling' then
    local u = tonumber(st[2]) or 0
    if u <= now then
      redis.call('HSET', k, 's', 'active', 'u', '0', 'r', '', 'c', '')  -- rest over; the backoff stays
      s = 'active'
    elseif earliest == nil or u < earliest then
      earliest = u
    end
  end
  local charges = ''
  if s == 'active' and m > 0 then
    local wins, wait = windows_of(i), 0
    for _, j in ipairs(wins) do
      wait = math.max(wait, win_wait(KEYS[4 + n + j], specs[j], cost_of(j), now, guard))
    end
    if wait > 0 then
      if full == nil or wait < full then full = wait end
      s = 'full'
    elseif #wins > 0 then
      local seq = redis.call('HINCRBY', KEYS[1], 'cs', 1)
      for _, j in ipairs(wins) do
        local member = win_take(KEYS[4 + n + j], specs[j], cost_of(j), now, guard, seq)
        if member ~= '' then charges = charges .. j .. '=' .. member .. ';' end
      end
    end
  end
  if s == 'active' then
    local id = ARGV[9 + i]
    redis.call('SET', KEYS[2], id)
    redis.call('HINCRBY', KEYS[3], ARGV[4] .. '|' .. id, 1)
    redis.call('ZADD', KEYS[4], fmt(now), ARGV[4])
    local after = bs
    if trial then
      after = 'half-open'
      redis.call('HSET', KEYS[1], 'bs', after, 'bu', fmt(now + tonumber(ARGV[3])), 'bt', id)
    end
    return {'k', id, bs, after, charges}
  end
end
local wait = nil
if earliest then wait = math.max(earliest - now, 0) end
if full and (wait == nil or full < wait) then wait = full end
if wait then return {'w', fmt(wait)} end
return {'n'}
"""
)

# KEYS: 1 provider, 2 in-flight, 3 replicas, 4 the key, 5.. its fellows (the replica's other keys)
# ARGV: 1 now, 2 id, 3 kind, 4 retry after ('' = none), 5 reason the rules give, 6 count (1/0),
#       7 latency ms, 8 tokens in, 9 tokens out, 10 error kind ('' = success), 11 last error,
#       12 backoff start, 13 backoff cap, 14 throttle window, 15 breaker failures, 16 cool-off,
#       17 cool-off max, 18 in-flight change (-1/0), 19 replica, 20 known (1: the replica holds the key),
#       21 f (how many fellows; KEYS 5..4+f), 22 tokens to settle to ('' = keep), 23 a daily quota's
#       reset candidates ('' = not daily), 24 its fellows' reason, 25 a possible spend cap's reason
#       ('' = not one: rules.Outcome.spend_cap), 26.. the token charges to settle, one per window key
#       (KEYS 5+f..)
# A daily quota's fellows are the key's group; a rate limit's, every other key of the replica.
# -> {changed, old state, new state, reason, until, breaker before, after, failures, until, cool-off}
RELEASE = (
    COMMON
    + r"""
local now = clock(ARGV[1])
local id, kind, ra = ARGV[2], ARGV[3], tonumber(ARGV[4])
local p = redis.call('HMGET', KEYS[1], 'tu', 'bs', 'bf', 'bu', 'bc', 'bt')
local tu = tonumber(p[1]) or 0
local bs, bf, bu, bc, bt = p[2] or 'closed', tonumber(p[3]) or 0, tonumber(p[4]) or 0, tonumber(p[5]) or 0, p[6] or ''
local nbs, nbf, nbu, nbc, nbt = bs, bf, bu, bc, bt
local pf, pcool, pmax = tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17])

-- rules.breaker_record
local function record(outcome)
  if outcome == 'success' then
    nbs, nbf, nbu, nbc, nbt = 'closed', 0, 0, 0, ''
  elseif outcome == 'inconclusive' then
    if bs == 'half-open' and id == bt then nbs, nbu, nbt = 'open', now, '' end
  else
    local f = bf + 1
    if bs == 'closed' then
      if pf > 0 and f >= pf then nbs, nbf, nbu, nbc, nbt = 'open', f, now + pcool, pcool, ''
      else nbf = f end
    elseif bs == 'half-open' then
      local c = math.min(math.max(bc * 2, pcool), pmax)
      nbs, nbf, nbu, nbc, nbt = 'open', f, now + c, c, ''
    else
      nbf = f
    end
  end
end
-- rules._breaker_after
if kind == 'ok' or kind == 'answered' then record('success')
elseif kind == 'provider_fault' then record('failure')
elseif kind == 'abandoned' or bs == 'half-open' then record('inconclusive') end

local known = ARGV[20] == '1'
local ks = KEYS[4]
local nf = tonumber(ARGV[21])
-- settle the token charges made at selection (keywheel.state.windows.Window.settle): in place, if still inside
if ARGV[22] ~= '' then
  for i = 26, #ARGV do
    local wk, member = KEYS[4 + nf + (i - 25)], ARGV[i]
    local score = redis.call('ZSCORE', wk, member)
    if score then
      redis.call('ZREM', wk, member)
      redis.call('ZADD', wk, score, string.match(member, '^(%d+):') .. ':' .. ARGV[22])
    end
  end
end
if known and ARGV[18] ~= '0' then
  local field = ARGV[19] .. '|' .. id
  if redis.call('HINCRBY', KEYS[2], field, tonumber(ARGV[18])) <= 0 then redis.call('HDEL', KEYS[2], field) end
  redis.call('ZADD', KEYS[3], fmt(now), ARGV[19])
end
if known and ARGV[6] == '1' then
  redis.call('HINCRBY', ks, 'n', 1)
  redis.call('HSET', ks, 'lu', fmt(now))
  redis.call('HINCRBYFLOAT', ks, 'lat', ARGV[7])
  if ARGV[8] ~= '0' then redis.call('HINCRBY', ks, 'ti', ARGV[8]) end
  if ARGV[9] ~= '0' then redis.call('HINCRBY', ks, 'to', ARGV[9]) end
  if ARGV[10] == '' then redis.call('HINCRBY', ks, 'ok', 1)
  else
    redis.call('HINCRBY', ks, 'f:' .. ARGV[10], 1)
    redis.call('HSET', ks, 'le', ARGV[11])
  end
end

local changed = '0'
local old_s, new_s, new_r, new_u = 'active', 'active', '', 0
if known then
  local k = redis.call('HMGET', ks, 's', 'u', 'r', 'c', 'b', 'l')
  local s, u, r, c, b, l = k[1] or 'active', tonumber(k[2]) or 0, k[3] or '', k[4] or '', tonumber(k[5]) or 0, k[6]
  old_s, new_s, new_r, new_u = s, s, r, u
  local ns, nu, nr, nc, nb, nl = s, u, r, c, b, l
  -- rules.cool
  local function cool(till, reason, cause)
    if ns == 'disabled' then return end
    if ns == 'cooling' and nu >= till then return end
    ns, nu, nr, nc = 'cooling', till, reason, cause
  end
  local function disable(reason, cause) ns, nr, nu, nc = 'disabled', reason, 0, cause end
  if kind == 'ok' then
    nb = 0
  elseif kind == 'rate_limited' then  -- rules._rate_limited
    local delay
    if ra == nil then
      nb = math.min(math.max(nb * 2, tonumber(ARGV[12])), tonumber(ARGV[13]))
      delay = nb
    else
      delay = ra
    end
    nl = fmt(now)
    cool(now + delay, ARGV[5], 'rate_limited')
    local tw = tonumber(ARGV[14])
    local own = (s == 'disabled') and 0 or 1
    local own_limited = (tw >= 0) and own or 0
    local live, limited, untimed = own, own_limited, own_limited
    for i = 5, 4 + nf do
      local o = redis.call('HMGET', KEYS[i], 's', 'l', 'b')
      if (o[1] or 'active') ~= 'disabled' then
        live = live + 1
        if o[2] and now - tonumber(o[2]) <= tw then
          limited = limited + 1
          if (tonumber(o[3]) or 0) > 0 then untimed = untimed + 1 end
        end
      end
    end
    if live > 1 and limited == live and ARGV[25] ~= '' and ra == nil and untimed == limited then
      -- rules._rate_limited: every key answered 429 without timing: a spend cap; all out (quota)
      for i = 5, 4 + nf do
        if (redis.call('HGET', KEYS[i], 's') or 'active') ~= 'disabled' then
          redis.call('HSET', KEYS[i], 's', 'disabled', 'u', '0', 'r', ARGV[25], 'c', 'quota')
        end
      end
      if own == 1 then disable(ARGV[25], 'quota') end
    elseif live > 1 and limited == live then
      -- every live key limited at once: the account or IP is throttled; rest the provider instead
      tu = math.max(tu, now + delay)
      redis.call('HSET', KEYS[1], 'tu', fmt(tu))
      for i = 5, 4 + nf do
        if (redis.call('HGET', KEYS[i], 's') or 'active') ~= 'disabled' then
          redis.call('HSET', KEYS[i], 's', 'active', 'u', '0', 'r', '', 'c', '', 'b', '0')
          redis.call('HDEL', KEYS[i], 'l')
        end
      end
      if own == 1 then ns, nu, nr, nc, nb, nl = 'active', 0, '', '', 0, nil end
    end
  elseif kind == 'quota' and ARGV[23] ~= '' then
    -- a daily quota (rules.apply, group_until): the key and every live key of its group rest until the reset
    local till = next_reset(ARGV[23], now)
    cool(till, ARGV[5], 'quota')
    for i = 5, 4 + nf do
      local o = redis.call('HMGET', KEYS[i], 's', 'u')
      local os, ou = o[1] or 'active', tonumber(o[2]) or 0
      if os ~= 'disabled' and not (os == 'cooling' and ou >= till) then
        redis.call('HSET', KEYS[i], 's', 'cooling', 'u', fmt(till), 'r', ARGV[24], 'c', 'quota')
      end
    end
  elseif kind == 'quota' then
    if ra ~= nil and ra ~= 0 then cool(now + ra, ARGV[5], 'quota') else disable(ARGV[5], 'quota') end
  elseif kind == 'invalid' then
    disable(ARGV[5], 'invalid')
  end
  if ns ~= s or nu ~= u or nr ~= r or nc ~= c or nb ~= b or nl ~= l then
    redis.call('HSET', ks, 's', ns, 'u', fmt(nu), 'r', nr, 'c', nc, 'b', fmt(nb))
    if nl then redis.call('HSET', ks, 'l', nl) else redis.call('HDEL', ks, 'l') end
  end
  if ns ~= s or nu ~= u then changed = '1' end
  new_s, new_r, new_u = ns, nr, nu
end
if nbs ~= bs or nbf ~= bf or nbu ~= bu or nbc ~= bc or nbt ~= bt then
  redis.call('HSET', KEYS[1], 'bs', nbs, 'bf', nbf, 'bu', fmt(nbu), 'bc', fmt(nbc), 'bt', nbt)
end
return {changed, old_s, new_s, new_r, fmt(new_u), bs, nbs, tostring(nbf), fmt(nbu), fmt(nbc)}
"""
)

# KEYS: 1 the key.  ARGV: 1 action (disable | enable), 2 reason
# disable: rules.disable (cause operator); enable: rules.enable; -> the state before
ADMIN = r"""
local before = redis.call('HGET', KEYS[1], 's') or 'active'
if ARGV[1] == 'disable' then
  redis.call('HSET', KEYS[1], 's', 'disabled', 'r', ARGV[2], 'u', '0', 'c', 'operator')
elseif ARGV[1] == 'enable' then
  redis.call('HSET', KEYS[1], 's', 'active', 'r', '', 'u', '0', 'b', '0', 'c', '')
elseif ARGV[1] == 'recover' then
  -- rules.recover: back only when still out for the cause a probe cleared (invalid, quota)
  local cause = redis.call('HGET', KEYS[1], 'c') or ''
  if before == 'active' or cause ~= ARGV[3] or (cause ~= 'invalid' and cause ~= 'quota') then return '' end
  redis.call('HSET', KEYS[1], 's', 'active', 'r', '', 'u', '0', 'b', '0', 'c', '')
  return 'recovered'
elseif ARGV[1] == 'take_out' then
  -- rules.take_out: ARGV 2 reason, 3 cause, 4 until ('' : disabled until something clears it);
  -- an operator's disable and a removal stand
  local cause = redis.call('HGET', KEYS[1], 'c') or ''
  if before == 'disabled' and (cause == 'operator' or cause == 'removed') then return before end
  if ARGV[4] == '' then
    redis.call('HSET', KEYS[1], 's', 'disabled', 'r', ARGV[2], 'u', '0', 'c', ARGV[3])
  else
    redis.call('HSET', KEYS[1], 's', 'cooling', 'r', ARGV[2], 'u', ARGV[4], 'c', ARGV[3])
  end
end
return before
"""

# KEYS: 1 provider, 2 in-flight, 3 replicas, 4.. the replica's keys.  ARGV: 1 now, 2 lease (s)
# -> {now, provider fields (flat), replicas seen, {each key's fields (flat)}, {in-flight per key}}
SNAPSHOT = (
    COMMON
    + r"""
local now = clock(ARGV[1])
expire_replicas(KEYS[2], KEYS[3], now, tonumber(ARGV[2]))
local flights = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local id = string.match(all[i], '|(.*)$')
  if id then flights[id] = (flights[id] or 0) + tonumber(all[i + 1]) end
end
local keys, fl = {}, {}
for i = 4, #KEYS do
  keys[#keys + 1] = redis.call('HGETALL', KEYS[i])
  fl[#fl + 1] = tostring(flights[ARGV[i - 1]] or 0)
end
return {fmt(now), redis.call('HGETALL', KEYS[1]), redis.call('ZCARD', KEYS[3]), keys, fl}
"""
)

# KEYS: 1 provider, 2.. keys.  ARGV: 1 now.  Merge what one replica decided alone (during an
# outage) into the shared state: a disable wins; a rest is extended, never shortened; a provider
# rest likewise.  ARGV: 2 provider throttled until, then per key: state, until, reason, cause.
MERGE = (
    COMMON
    + r"""
local now = clock(ARGV[1])
local tu = tonumber(ARGV[2])
if tu > now and tu > (tonumber(redis.call('HGET', KEYS[1], 'tu')) or 0) then
  redis.call('HSET', KEYS[1], 'tu', fmt(tu))
end
local merged = 0
for i = 2, #KEYS do
  local a = 3 + (i - 2) * 4
  local s, u, r, c = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3]
  local k = redis.call('HMGET', KEYS[i], 's', 'u')
  local cs, cu = k[1] or 'active', tonumber(k[2]) or 0
  if s == 'disabled' and cs ~= 'disabled' then
    redis.call('HSET', KEYS[i], 's', 'disabled', 'r', r, 'u', '0', 'c', c)
    merged = merged + 1
  elseif s == 'cooling' and u > now and cs ~= 'disabled' and not (cs == 'cooling' and cu >= u) then
    redis.call('HSET', KEYS[i], 's', 'cooling', 'u', fmt(u), 'r', r, 'c', c)
    merged = merged + 1
  end
end
return merged
"""
)
