"""A Redis Cluster's topology as the API reads it: its primaries and the slots each serves.

Read from ``CLUSTER SHARDS`` (Redis 7), which also names primaries that serve
no slot yet (a node just added, about to receive slots); servers without it
answer ``CLUSTER SLOTS``, which names only primaries that serve slots.  Replies
may be RESP2 (flat lists) or RESP3 (maps): the hot-read connections speak the
first, the tracking connections the second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SLOTS = 16384
_UNKNOWN_ENDPOINTS = (b"", b"?")


@dataclass(frozen=True)
class Primary:
    node_id: str
    host: str
    port: int
    slots: tuple[tuple[int, int], ...]  # inclusive ranges, ascending


@dataclass(frozen=True)
class Topology:
    primaries: tuple[Primary, ...]  # by node id

    def shape(self) -> frozenset[tuple[str, tuple[tuple[int, int], ...]]]:
        """What must not change under the near-cache: which node serves which slots.
        Addresses are left out: each node reports its own as it sees it."""
        return frozenset((p.node_id, p.slots) for p in self.primaries)

    def owners(self) -> list[Primary | None]:
        """The primary serving each slot (None: no one, the cluster is down there)."""
        found: list[Primary | None] = [None] * SLOTS
        for primary in self.primaries:
            for lo, hi in primary.slots:
                found[lo:hi + 1] = [primary] * (hi - lo + 1)
        return found

    @property
    def covered(self) -> bool:
        return sum(hi - lo + 1 for p in self.primaries for lo, hi in p.slots) == SLOTS


def _map(reply: Any) -> Mapping[bytes, Any]:
    if isinstance(reply, Mapping):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=False))


def _host(endpoint: bytes | None, ip: bytes | None, seed_host: str) -> str:
    for candidate in (endpoint, ip):
        if candidate is not None and candidate not in _UNKNOWN_ENDPOINTS:
            return candidate.decode()
    return seed_host  # the node we asked does not know its own address: the one we dialled


def parse_shards(reply: Sequence[Any], seed_host: str, tls: bool = False) -> Topology:
    """``CLUSTER SHARDS``: every primary serving slots, and every healthy one serving none
    (a failed primary without slots was replaced; it holds nothing we read)."""
    primaries = []
    for shard in map(_map, reply):
        flat = [int(s) for s in shard[b"slots"]]
        slots = tuple(zip(flat[::2], flat[1::2], strict=False))
        for node in map(_map, shard[b"nodes"]):
            if node[b"role"] != b"master" or (not slots and node.get(b"health") == b"fail"):
                continue
            port = node[b"tls-port"] if tls and node.get(b"tls-port") else node[b"port"]
            primaries.append(Primary(node[b"id"].decode(),
                                     _host(node.get(b"endpoint"), node.get(b"ip"), seed_host),
                                     int(port), tuple(sorted(slots))))
    return Topology(tuple(sorted(primaries, key=lambda p: p.node_id)))


def parse_slots(reply: Sequence[Any], seed_host: str) -> Topology:
    """``CLUSTER SLOTS`` (before Redis 7): ranges, each with its primary first."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    addresses: dict[str, tuple[str, int]] = {}
    for entry in reply:
        lo, hi, primary = int(entry[0]), int(entry[1]), entry[2]
        node_id = primary[2].decode()
        ranges.setdefault(node_id, []).append((lo, hi))
        addresses[node_id] = (_host(primary[0], None, seed_host), int(primary[1]))
    return Topology(tuple(Primary(node_id, *addresses[node_id], tuple(sorted(found)))
                          for node_id, found in sorted(ranges.items())))
