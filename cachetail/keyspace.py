"""The keyspace: every key cachetail owns, its TTL, and the bytes stored in it.

The API and the invalidator both build keys and values here and nowhere else,
so a refresh by the invalidator stores exactly the bytes a cold read would.

Keys (``ct`` is ``CACHE_KEY_PREFIX``; ``{...}`` is a Redis Cluster hash tag so
every multi-key script touches one slot)::

    ct:{u:42}            one user: its JSON object, a negative entry or a lease
    ct:{p}:gen           generation of the product lists (an integer, bumped)
    ct:{p}:all           the list of every product
    ct:{p}:c:<category>  the list of one category (category percent-encoded)
    ct:invalidator:position  the invalidator's binlog position (JSON)

Value framing — the first byte tells a value from a control record:

    ``{`` / ``[``        a JSON value (a user)
    ``\\x00`` + token    a fill's lease
    ``\\x01``            a negative entry: the row does not exist
    ``\\x02<gen>\\n``     a product list stamped with the generation it was read
                         under, followed by its JSON array

Product lists are invalidated by bumping ``gen``: O(1) for any number of
variants, no SCAN or KEYS.  A reader fetches the generation and the variant in
one MGET (same slot) and treats a stamp that differs from the generation, or a
missing generation, as a miss.  A missing generation (evicted, cleared) is
re-created from the server clock in microseconds, never from 0 or 1, so it
starts above every generation handed out before and an old stamp can never
match again.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

LEASE = b"\x00"
NEGATIVE = b"\x01"
STAMPED = b"\x02"

USER_COLUMNS: tuple[str, ...] = ("id", "username", "email", "full_name", "created_at", "updated_at")
PRODUCT_COLUMNS: tuple[str, ...] = (
    "id", "name", "description", "price", "stock", "category", "created_at", "updated_at",
)
USERS_TABLE = "users"
PRODUCTS_TABLE = "products"

MAX_ID = 4_294_967_295  # INT UNSIGNED
MAX_CATEGORY_LEN = 50  # products.category VARCHAR(50)


@dataclass(frozen=True)
class Keyspace:
    """Key names and TTLs for one deployment (its prefix and settings)."""

    prefix: str = "ct"
    ttl_user_s: int = 3600
    ttl_products_s: int = 300
    ttl_negative_s: int = 30

    def user(self, user_id: int) -> str:
        return f"{self.prefix}:{{u:{user_id}}}"

    def products_generation(self) -> str:
        return f"{self.prefix}:{{p}}:gen"

    def products(self, category: str | None = None) -> str:
        if category is None:
            return f"{self.prefix}:{{p}}:all"
        return f"{self.prefix}:{{p}}:c:{quote(category, safe='')}"

    def owned_pattern(self) -> str:
        """SCAN pattern matching every key this deployment owns (admin paths only)."""
        return f"{self.prefix}:*"

    def users_pattern(self) -> str:
        """SCAN pattern matching every user key (the invalidator, after DDL on users)."""
        return f"{self.prefix}:{{u:*"

    def users_prefix(self) -> str:
        """What every user key starts with: the near-cache's client-tracking prefix."""
        return f"{self.prefix}:{{u:"

    def invalidator_position(self) -> str:
        """The invalidator's saved binlog position (JSON), written with its work."""
        return f"{self.prefix}:invalidator:position"

    @classmethod
    def from_cache_settings(cls, cache: Any) -> Keyspace:
        return cls(
            prefix=cache.key_prefix,
            ttl_user_s=cache.ttl_user_s,
            ttl_products_s=cache.ttl_products_s,
            ttl_negative_s=cache.ttl_negative_s,
        )


# ---------------------------------------------------------------- serializer


def _utc_iso(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text + "Z"


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dt.datetime):
        return _utc_iso(value)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")  # a decimal string, never a float
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, float):
        return value
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _object(row: Mapping[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    return {name: _json_value(row[name]) for name in columns}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def serialize_user(row: Mapping[str, Any]) -> bytes:
    """A users row (from a SELECT or a binlog row image) as the JSON bytes served."""
    return _dumps(_object(row, USER_COLUMNS))


def serialize_products(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """Product rows, already ordered by id, as the JSON array served."""
    return _dumps([_object(row, PRODUCT_COLUMNS) for row in rows])


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

# Take a lease on a product list variant unless it holds a current value or a
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

PRODUCTS_LEASE = _NEW_GENERATION + """
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
return {1, gen}
"""

# Store a product list only while this fill's lease holds and no product
# changed since the fill read the generation.
# KEYS[1]=gen KEYS[2]=variant ARGV[1]=token ARGV[2]=generation ARGV[3]=value ARGV[4]=ttl s
PRODUCTS_CAS_STORE = """
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

# Invalidate every product list variant at once.  KEYS[1]=gen.  Returns the new
# generation.  INCR alone would restart a deleted generation at 1, where an old
# stamp could match again.
PRODUCTS_BUMP = _NEW_GENERATION + """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCR', KEYS[1]) end
return tonumber(new_generation())
"""
