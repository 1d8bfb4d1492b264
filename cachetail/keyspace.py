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


# ------------------------------------------------- the invalidator's scripts

# A batch holds one op per data key (invalidator.apply.Batch):
#   "D"                    delete the key
#   "B"                    bump a list generation (INCR, or re-create from the clock)
#   "=" <ttl> " " bytes    store the bytes for <ttl> seconds (refresh mode)
OP_DELETE = b"D"
OP_BUMP = b"B"
OP_SET = b"="
DEL_CHUNK = 1000  # keys per DEL inside the scripts (Lua's unpack has a limit near 8,000)


@dataclass(frozen=True)
class PackedOps:
    """A batch's ops as the scripts below take them: the keys grouped by what is done to
    them, so a deleted key costs its name alone and a stored value its bytes alone.

    A batch has each key once, so the order between keys does not matter inside one
    atomic script: deleted keys first, then bumped ones, then stored ones by TTL.
    ``layout`` is ``b"<deleted> <bumped>"`` followed by ``b" <ttl> <count>"`` per TTL.
    """

    keys: list[str]
    layout: bytes
    values: list[bytes]  # the stored keys' values, in key order
    deleted: int
    bumped: int

    @property
    def stored(self) -> int:
        return len(self.values)


def pack_ops(keys: list[str], ops: list[bytes]) -> PackedOps:
    """Group ``keys[i]``'s ``ops[i]`` for FENCED_APPLY / SLOT_APPLY (see :class:`PackedOps`)."""
    if ops.count(OP_DELETE) == len(ops):  # delete mode's batches, in one C-speed pass
        return PackedOps(keys, b"%d 0" % len(ops), [], len(ops), 0)
    deleted: list[str] = []
    bumped: list[str] = []
    stored: dict[bytes, tuple[list[str], list[bytes]]] = {}
    for key, op in zip(keys, ops):
        if op == OP_DELETE:
            deleted.append(key)
        elif op == OP_BUMP:
            bumped.append(key)
        elif op[:1] == OP_SET:
            space = op.index(b" ", 1)
            group = stored.get(op[1:space])
            if group is None:
                group = stored[op[1:space]] = ([], [])
            group[0].append(key)
            group[1].append(op[space + 1:])
        else:
            raise ValueError(f"unknown op {op[:1]!r} for {key}")
    keys = deleted + bumped
    values = []
    layout = [b"%d %d" % (len(deleted), len(bumped))]
    for ttl, (group_keys, group_values) in stored.items():
        keys += group_keys
        values += group_values
        layout.append(b"%s %d" % (ttl, len(group_keys)))
    return PackedOps(keys, b" ".join(layout), values, len(deleted), len(bumped))
