"""The op format: the one place that knows how a transaction's effect on a key is written.

A :class:`Batch` maps each key a transaction made stale to its last op::

    OP_DELETE                     delete the key
    OP_BUMP                       bump a list variant's generation
    OP_SET + b"<ttl> " + value    store the value (a row's JSON) for <ttl> seconds

Three writers fill a batch: :class:`Batch` itself (the library path and the generated
parsers, through :class:`~invalidator.rules.TableRules`), and the compiled row walk
(``_rowwalk.c``), which is handed :data:`OP_DELETE` and :func:`write_prefix` by
:mod:`invalidator.fastrows` and writes nothing it was not given.  :func:`pack_ops`
groups a batch's ops as the Redis scripts take them (``FENCED_APPLY`` / ``SLOT_APPLY``
in :mod:`cachetail.keyspace`); :mod:`invalidator.applier` sends them.
"""

from __future__ import annotations

from dataclasses import dataclass

OP_DELETE = b"D"
OP_BUMP = b"B"
OP_SET = b"="


def write_prefix(ttl_s: int) -> bytes:
    """What precedes a stored value in its op (the compiled walk is handed this)."""
    return OP_SET + b"%d " % ttl_s


class Batch:
    """The deduplicated effect of one transaction (or a group of them) on the cache: for each
    key its last operation, and the SCAN patterns a DDL statement clears."""

    __slots__ = ("clear", "ops", "refresh")

    def __init__(self, refresh: bool) -> None:
        self.refresh = refresh
        self.ops: dict[str, bytes] = {}  # key -> an op (see the module docstring)
        self.clear: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.ops) or bool(self.clear)

    def delete(self, key: str) -> None:
        self.ops[key] = OP_DELETE

    def write(self, key: str, value: bytes, ttl_s: int) -> None:
        self.ops[key] = OP_SET + b"%d " % ttl_s + value  # write_prefix(ttl_s) inlined: the hot path

    def bump(self, key: str) -> None:
        self.ops[key] = OP_BUMP

    def merged(self, later: Batch) -> Batch:
        """This batch followed by ``later``, as one: for a key in both, ``later``'s op."""
        both = Batch(later.refresh)
        both.ops = {**self.ops, **later.ops}
        both.clear = self.clear | later.clear
        return both


@dataclass(frozen=True)
class PackedOps:
    """A batch's ops as the scripts take them: the keys grouped by what is done to
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
    for key, op in zip(keys, ops, strict=True):
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
