"""The keyspace: every key cachetail owns, and the framing of the values stored in it.

The API and the invalidator both build keys here and nowhere else, from the
declaration (cachetail.toml): an entity's row key from its key text, a list
variant's keys from the variant's filter assignment.

Keys (``ct`` is ``CACHE_KEY_PREFIX``; ``{...}`` is a Redis Cluster hash tag so
every multi-key script touches one slot)::

    ct:{<tag>:<key>}       one entity row: its JSON object, a negative entry or a lease
                           (the lab's users: ct:{u:42}); <key> is the key columns'
                           exact texts joined by ':' (see cachetail/codec_keys.py)
    ct:{<variant>}:gen     a list variant's generation (an integer, bumped)
    ct:{<variant>}:v       its first page;  ct:{<variant>}:a:<cursor>  a page after a cursor
                           <variant> is <tag> or <tag>:<param>=<text>&... (the lab's
                           products: ct:{p}:v, ct:{p:category=~<weight>}:v)
    ct:{inv}:position      the invalidator's binlog position (JSON)
    ct:{inv}:applied       the GTID state whose invalidations are all in Redis (also the
                           channel the invalidator publishes it on)
    ct:{f<n>}:gtid         slot n's watermark, "<ms> <GTID state>": the Redis time and the
                           state after the last transaction that changed a key of the slot
    ct:{inv}:gtid          one Redis node's watermark for batches too large to mark slot by
                           slot, DDL and full invalidations (never on a cluster)
    ct:{inv}:leader        the invalidator leader's lease: "<token> <owner>"
    ct:{inv}:fence         the last fencing token handed out (an integer)
    ct:{f<tag>}:fence      on Redis Cluster, the highest token that wrote to the
                           slot of ``<tag>`` (one such key per slot written)

Value framing — the first byte tells a value from a control record:

    ``{`` / ``[``        a JSON value (a row)
    ``\\x00`` + token    a fill's lease
    ``\\x01``            a negative entry: the row does not exist
    ``\\x02<gen>\\n``     a list page stamped with the generation it was read
                         under, followed by its JSON array

A row change bumps the generation of each variant it belongs to: O(1) per variant
for any number of pages, no SCAN or KEYS.  A reader fetches the generation and the
page in one MGET (same slot) and treats a stamp that differs from the generation,
or a missing generation, as a miss.  A missing generation (evicted, cleared) is
re-created from the server clock in microseconds, never from 0 or 1, so it starts
above every generation handed out before and an old stamp can never match again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

LEASE = b"\x00"
NEGATIVE = b"\x01"
STAMPED = b"\x02"



@dataclass(frozen=True)
class KeyParts:
    """An owned key, taken apart (see :meth:`Keyspace.parse`)."""

    kind: str  # "row", "page", "generation", "state" or "foreign"
    tag: str = ""
    text: str = ""  # a row's key text
    assignment: tuple[tuple[str, str], ...] = ()  # a list variant's (param, text) pairs
    cursor: str | None = None  # a page after a cursor

    @property
    def variant(self) -> str:
        return Keyspace.variant(self.tag, self.assignment)


@dataclass(frozen=True)
class Keyspace:
    """Key names for one deployment (its prefix); the TTLs are in the declaration."""

    prefix: str = "ct"

    # ---- declared entities and lists (cachetail.toml); every key below is built here

    def row(self, tag: str, text: str) -> str:
        """One entity row: ``ct:{<tag>:<key text>}`` (the lab's users: ``ct:{u:42}``)."""
        return f"{self.prefix}:{{{tag}:{text}}}"

    def row_prefix(self, tag: str) -> str:
        """What every row key of an entity starts with (client tracking, DDL clears)."""
        return f"{self.prefix}:{{{tag}:"

    @staticmethod
    def variant(tag: str, assignment: tuple[tuple[str, str], ...] = ()) -> str:
        """A list variant's hash tag: ``<tag>`` or ``<tag>:<param>=<text>&...``.  Texts are
        percent-encoded values or ``~<weight>``, so ``&``, ``=`` and ``}`` never appear raw."""
        if not assignment:
            return tag
        return tag + ":" + "&".join(f"{param}={text}" for param, text in assignment)

    def list_generation(self, variant: str) -> str:
        """The variant's generation: pages stamped with another one are stale."""
        return f"{self.prefix}:{{{variant}}}:gen"

    def list_page(self, variant: str, cursor: str | None = None) -> str:
        """The first page (``:v``), or the page after a cursor (``:a:<cursor>``); same slot as
        the generation."""
        if cursor is None:
            return f"{self.prefix}:{{{variant}}}:v"
        return f"{self.prefix}:{{{variant}}}:a:{cursor}"

    def list_patterns(self, tag: str) -> tuple[str, str]:
        """SCAN patterns of every key of one list (DDL on its table; never a hot path)."""
        return f"{self.prefix}:{{{tag}}}*", f"{self.prefix}:{{{tag}:*"

    def parse(self, key: str | bytes) -> KeyParts:
        """What an owned key holds, from its name (the inverse of the builders above)."""
        name = key.decode(errors="replace") if isinstance(key, bytes) else key
        start = self.prefix + ":{"
        end = name.find("}", len(start))
        if not name.startswith(start) or end < 0:
            return KeyParts("foreign")
        content, rest = name[len(start):end], name[end + 1:]
        if rest == "":
            tag, sep, text = content.partition(":")
            return KeyParts("row", tag, text) if sep else KeyParts("foreign")
        if rest in (":inv", ":fence", ":position", ":leader", ":gtid", ":applied") or content == "inv":
            return KeyParts("state")
        tag, _, variant = content.partition(":")
        assignment = tuple(tuple(part.split("=", 1)) for part in variant.split("&")) if variant else ()
        if any(len(pair) != 2 for pair in assignment):
            return KeyParts("foreign")
        pairs = tuple((p, t) for p, t in assignment)
        if rest == ":gen":
            return KeyParts("generation", tag, assignment=pairs)
        if rest == ":v":
            return KeyParts("page", tag, assignment=pairs)
        if rest.startswith(":a:"):
            return KeyParts("page", tag, assignment=pairs, cursor=rest[3:])
        return KeyParts("foreign")

    def user(self, user_id: int) -> str:
        """The lab's users (cachetail.toml: ``key_tag = "u"``), for tools and tests; the
        API and the invalidator build every key from the declaration."""
        return self.row("u", str(user_id))

    def owned_pattern(self) -> str:
        """SCAN pattern matching every key this deployment owns (admin paths only)."""
        return f"{self.prefix}:*"

    def invalidator_position(self) -> str:
        """The invalidator's saved binlog position (JSON), written with its work."""
        return f"{self.prefix}:{{inv}}:position"

    def invalidator_leader(self) -> str:
        """The leader's lease; same slot as the position, so one script checks both."""
        return f"{self.prefix}:{{inv}}:leader"

    def invalidator_fence(self) -> str:
        """The counter fencing tokens are drawn from."""
        return f"{self.prefix}:{{inv}}:fence"

    def slot_fence(self, slot: int) -> str:
        """On Redis Cluster: the highest fencing token that wrote to hash slot ``slot``."""
        return f"{self.prefix}:{{{slot_tag(slot)}}}:fence"

    def invalidator_applied(self) -> str:
        """The GTID state whose every invalidation is in Redis; also the channel it is
        published on as it moves (reads that carry a Cachetail-Min-GTID wait on it)."""
        return f"{self.prefix}:{{inv}}:applied"

    def slot_watermark(self, slot: int) -> str:
        """Hash slot ``slot``'s watermark: ``<ms> <GTID state>`` of the last transaction that
        changed one of its keys (see :func:`watermark`); in the slot itself, so a fill's lease
        reads it atomically, on one node and on a cluster."""
        return f"{self.prefix}:{{{slot_tag(slot)}}}:gtid"

    def node_watermark(self) -> str:
        """One Redis node's watermark, for what is not marked slot by slot (never on a cluster)."""
        return f"{self.prefix}:{{inv}}:gtid"

    def watermarks(self, key: str, cluster: bool) -> list[str]:
        """The watermarks a fill of ``key`` must respect: its slot's, and on one node the node's."""
        slot = self.slot_watermark(key_slot(key))
        return [slot] if cluster else [slot, self.node_watermark()]

    def state_keys(self) -> tuple[str, ...]:
        """Keys under the prefix that are state, not cached data: never counted or cleared
        (nor the list generations, slot fences and watermarks, see is_state)."""
        return (self.invalidator_position(), self.invalidator_leader(), self.invalidator_fence(),
                self.invalidator_applied())

    def is_state(self, key: bytes) -> bool:
        """Generations stay, so they only ever grow; fences, watermarks and the leader's state stay."""
        return key in self._state_bytes or key.endswith((b"}:fence", b"}:gen", b"}:gtid"))

    @property
    def _state_bytes(self) -> frozenset[bytes]:
        return frozenset(k.encode() for k in self.state_keys())

    @classmethod
    def from_cache_settings(cls, cache: Any) -> Keyspace:
        return cls(prefix=cache.key_prefix)


# ------------------------------------------------------------ cluster slots

SLOTS = 16384


def key_slot(key: str | bytes) -> int:
    """The Redis Cluster hash slot of ``key`` (CRC16 of its hash tag, as the server computes)."""
    from redis.crc import key_slot as _key_slot

    return int(_key_slot(key.encode() if isinstance(key, str) else key))


@functools.lru_cache(maxsize=1)
def _slot_tags() -> tuple[str, ...]:
    """A short hash tag for every slot: 'f' + the first integer whose tag lands there.
    (About 0.1 s: both processes build it at start, see :func:`prepare_slot_tags`.)"""
    from binascii import crc_hqx  # what redis.crc.key_slot computes, for a key without braces

    tags: list[str | None] = [None] * SLOTS
    left, i = SLOTS, 0
    while left:
        tag = b"f%d" % i
        slot = crc_hqx(tag, 0) % SLOTS
        if tags[slot] is None:
            tags[slot] = tag.decode()
            left -= 1
        i += 1
    return tuple(t for t in tags if t is not None)


def prepare_slot_tags() -> None:
    """Build the slot tags now, not inside the first request or batch that needs one."""
    _slot_tags()


def slot_tag(slot: int) -> str:
    return _slot_tags()[slot]


# ------------------------------------------------------------- value framing


def stamp(generation: int, body: bytes) -> bytes:
    return STAMPED + str(generation).encode() + b"\n" + body


def unstamp(value: bytes, generation: bytes | None) -> bytes | None:
    """The body of a stamped list if its stamp matches ``generation``, else None."""
    if not value.startswith(STAMPED):
        return None
    end = value.find(b"\n")
    if generation is None or value[1:end] != generation:
        return None
    return value[end + 1:]


def is_lease(value: bytes) -> bool:
    return value[:1] == LEASE


def is_negative(value: bytes) -> bool:
    return value[:1] == NEGATIVE


def watermark(value: bytes | None) -> tuple[int, str] | None:
    """A watermark's Redis time (ms since the epoch) and GTID state ('' when the invalidator
    did not know it); None for no watermark, or one that does not parse."""
    if not value:
        return None
    ms, _, state = value.partition(b" ")
    if not ms.isdigit():
        return None
    return int(ms), state.decode("ascii", "replace")


# ---------------------------------------------------------------- Lua scripts

# Store a fill only while the key still holds this fill's lease token.
# KEYS[1]=key  ARGV[1]=token  ARGV[2]=value  ARGV[3]=ttl seconds
CAS_STORE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

# Take a lease on a list page unless it holds a current value or a
# live lease.  KEYS[1]=gen  KEYS[2]=variant  ARGV[1]=token  ARGV[2]=lease ms
# Returns {state, payload}: state 1 = lease taken (payload = generation),
# 2 = fresh value (payload = value), 0 = someone else's lease.
_NEW_GENERATION = """
local function new_generation()
  local t = redis.call('TIME')
  local g = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('SET', KEYS[1], g)
  return g
end
"""

# The Redis clock in milliseconds, as text (watermarks are compared on it).
_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
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

# Invalidate every page of a list variant at once.  KEYS[1]=gen.  Returns the new
# generation.  INCR alone would restart a deleted generation at 1, where an old
# stamp could match again.
LIST_BUMP = _NEW_GENERATION + """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCR', KEYS[1]) end
return tonumber(new_generation())
"""


# ------------------------------------------------- the invalidator's scripts

DEL_CHUNK = 1000  # keys per DEL inside the scripts (Lua's unpack has a limit near 8,000)


# apply(k, layout, v): the data keys are KEYS[k..], laid out as PackedOps says; the
# stored values are ARGV[v..].  The same in both scripts below.
# mark(first, last, state): KEYS[first..last] are watermarks, set to the Redis time and
# the GTID state after this work (see Keyspace.slot_watermark).
_APPLY_OP = _NOW_MS + """
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
      local t = redis.call('TIME')
      redis.call('SET', KEYS[i], string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2])))
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
LEADER_ACQUIRE = """
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
  local t = redis.call('TIME')
  token = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[2], string.format('%.0f', token))
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
