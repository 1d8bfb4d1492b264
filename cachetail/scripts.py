"""Every Lua script cachetail runs on Redis, and the fragments they are composed of.

The API's fills (leases, compare-and-set stores) and the invalidator's fenced work and
leader lease; the keys they take are built by :class:`cachetail.keyspace.Keyspace`.
"""

from __future__ import annotations

DEL_CHUNK = 1000  # keys per DEL inside the scripts (Lua's unpack has a limit near 8,000)

# The Redis clock in microseconds, as text: where a generation or a fencing token starts
# when it is missing, so it starts above every one handed out before (never from 0 or 1).
_CLOCK_US = """
local function clock_us()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
end
"""

# The Redis clock in milliseconds, as text (watermarks are compared on it).
_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end
"""

# ------------------------------------------------------------ the API's fills

# Store a fill only while the key still holds this fill's lease token.
# KEYS[1]=key  ARGV[1]=token  ARGV[2]=value  ARGV[3]=ttl seconds
CAS_STORE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

# A list variant's generation, re-created from the clock when it is missing (KEYS[1]).
_NEW_GENERATION = _CLOCK_US + """
local function new_generation()
  local g = clock_us()
  redis.call('SET', KEYS[1], g)
  return g
end
"""

# With a lease taken, what a fill from a replica must respect: the Redis time and the
# watermarks of KEYS[first..] ('' for one that is missing), read atomically with the lease.
_FRESHNESS = _NOW_MS + """
local function freshness(out, first)
  out[#out + 1] = now_ms()
  for i = first, #KEYS do out[#out + 1] = redis.call('GET', KEYS[i]) or '' end
  return out
end
"""

# Take a lease on a list page unless it holds a current value or a
# live lease.  KEYS[1]=gen  KEYS[2]=variant  ARGV[1]=token  ARGV[2]=lease ms
# Returns {state, payload}: state 1 = lease taken (payload = generation),
# 2 = fresh value (payload = value), 0 = someone else's lease.
LIST_LEASE = _NEW_GENERATION + _FRESHNESS + """
local gen = redis.call('GET', KEYS[1]) or new_generation()
local v = redis.call('GET', KEYS[2])
if v then
  local b = string.byte(v, 1)
  if b == 0 then return {0, v} end
  if b == 2 then
    local nl = string.find(v, '\\n', 2, true)
    if nl and string.sub(v, 2, nl - 1) == gen then return {2, v} end
  end
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
if #KEYS > 2 then return freshness({1, gen}, 3) end
return {1, gen}
"""
# KEYS[3..] (optional) = the variant's watermarks; state 1 then also returns the Redis
# time and each watermark (see _FRESHNESS).

# An entity fill's lease when fills read a replica: SET NX PX, and with it the Redis time
# and the watermarks of the key's slot (and node), atomically.
# KEYS[1]=key KEYS[2..]=watermarks ARGV[1]=token ARGV[2]=lease ms
# Returns {0} when the key holds a value or someone else's lease, else {1, ms, wm...}.
ENTITY_LEASE = _FRESHNESS + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
return freshness({1}, 2)
"""

# Store a list page only while this fill's lease holds and no row of the
# variant changed since the fill read the generation.
# KEYS[1]=gen KEYS[2]=variant ARGV[1]=token ARGV[2]=generation ARGV[3]=value ARGV[4]=ttl s
LIST_CAS_STORE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
return 1
"""

# Give a lease back after a failed fill (MySQL down), so other readers stop
# waiting for it; only while the key still holds this fill's token.
# KEYS[1]=key  ARGV[1]=token
LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# ------------------------------------------------- the invalidator's scripts

# apply(k, layout, v): the data keys are KEYS[k..], laid out as PackedOps says; the
# stored values are ARGV[v..].  The same in both scripts below.
# mark(first, last, state): KEYS[first..last] are watermarks, set to the Redis time and
# the GTID state after this work (see Keyspace.slot_watermark).
_APPLY_OP = _CLOCK_US + _NOW_MS + """
local function mark(first, last, state)
  if last < first then return end
  local m = now_ms() .. ' ' .. state
  for i = first, last do redis.call('SET', KEYS[i], m) end
end

local function apply(k, layout, v)
  local n, ttls = {}, {}
  for x in string.gmatch(layout, '%d+') do
    n[#n + 1] = tonumber(x)
    ttls[#n] = x  -- passed on as text: a Lua number would be formatted again for every key
  end
  local last = k + n[1] - 1
  for i = k, last, DEL_CHUNK do
    redis.call('DEL', unpack(KEYS, i, math.min(i + DEL_CHUNK - 1, last)))
  end
  k = last + 1
  for i = k, k + n[2] - 1 do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      redis.call('INCR', KEYS[i])
    else
      redis.call('SET', KEYS[i], clock_us())
    end
  end
  k = k + n[2]
  for j = 3, #n, 2 do
    local ttl = ttls[j]
    for i = k, k + n[j + 1] - 1 do
      redis.call('SET', KEYS[i], ARGV[v], 'EX', ttl)
      v = v + 1
    end
    k = k + n[j + 1]
  end
end
""".replace("DEL_CHUNK", str(DEL_CHUNK))

# The leader's work and its position in one atomic step, fenced: nothing runs
# unless the lease still holds this leader's value, so a paused old leader that
# wakes up can neither apply old work nor move the position.  On one Redis node
# it carries a whole transaction; on a cluster only the position (the data keys
# go slot by slot through SLOT_APPLY).
# With the work go the watermarks of what it changed (its keys' slots, or the node's),
# and the applied GTID state, published for reads that wait on it (pcall: a server
# without sharded pub/sub must not fail the work).
# KEYS[1]=leader KEYS[2]=position KEYS[3]=applied KEYS[4..3+w]=watermarks KEYS[4+w..]=data keys
# ARGV[1]=leader value ARGV[2]=position JSON or '' ARGV[3]=layout ARGV[4]=GTID state or ''
# ARGV[5]=w ARGV[6]=PUBLISH or SPUBLISH ARGV[7..]=stored values
FENCED_APPLY = _APPLY_OP + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local w = tonumber(ARGV[5])
mark(4, 3 + w, ARGV[4])
apply(4 + w, ARGV[3], 7)
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[3], ARGV[4])
  redis.pcall(ARGV[6], KEYS[3], ARGV[4])
end
return 1
"""

# Redis Cluster: one slot's share of the work, fenced by the highest token that
# has written to this slot.  A leader that took over has a higher token; once it
# writes a slot, an older leader's writes there are refused.  An older leader may
# still write a slot the new one has not reached yet: the new one replays from
# the shared position, which is never past the old one's work, so it rewrites
# those keys after it.
# The slot's watermark goes with the work.
# KEYS[1]=slot fence KEYS[2]=slot watermark KEYS[3..]=data keys
# ARGV[1]=token ARGV[2]=layout ARGV[3]=GTID state or '' ARGV[4..]=stored values
SLOT_APPLY = _APPLY_OP + """
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if seen > token then return 0 end
if seen < token then redis.call('SET', KEYS[1], ARGV[1]) end
mark(2, 2, ARGV[3])
apply(3, ARGV[2], 4)
return 1
"""

# Mark watermarks without other work: before a DDL clear or a full invalidation (the mark
# must come first: a fill that leases a key after it is dropped must see it), and when a
# leader starts (NX: only those missing, so every slot has one).  One slot's keys per call
# on a cluster.  KEYS[1..]=watermarks ARGV[1]=GTID state ARGV[2]='NX' or ''
MARK = _NOW_MS + """
local m = now_ms() .. ' ' .. ARGV[1]
for i = 1, #KEYS do
  if ARGV[2] == 'NX' then redis.call('SET', KEYS[i], m, 'NX') else redis.call('SET', KEYS[i], m) end
end
return #KEYS
"""

# Take the leader lease if it is free, or held by an earlier run of this same
# invalidator (same host and server id: that process is gone, MySQL would not
# let two streams share a server id).  Every grant draws a new fencing token.
# KEYS[1]=leader KEYS[2]=fence  ARGV[1]=identity ARGV[2]=pid ARGV[3]=lease ms
# Returns {1, value} when taken, {0, holder's value} when someone else holds it.
LEADER_ACQUIRE = _CLOCK_US + """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sp = string.find(cur, ' ', 1, true)
  local owner = sp and string.sub(cur, sp + 1) or ''
  if string.sub(owner, 1, #ARGV[1] + 1) ~= ARGV[1] .. ' ' then return {0, cur} end
end
local token
if redis.call('EXISTS', KEYS[2]) == 1 then
  token = redis.call('INCR', KEYS[2])
else
  token = clock_us()
  redis.call('SET', KEYS[2], token)
end
local value = string.format('%.0f', token) .. ' ' .. ARGV[1] .. ' ' .. ARGV[2]
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return {1, value}
"""

# Extend the lease while it is still ours.  KEYS[1]=leader ARGV[1]=value ARGV[2]=ms
LEADER_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
