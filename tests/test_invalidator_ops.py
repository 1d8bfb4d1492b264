"""The op format (invalidator/apply.py): ops, their packing, the scripts that carry them out,
and the compiled walk's contract with it."""

from __future__ import annotations

import redis

from cachetail import keyspace, scripts
from cachetail.keyspace import Keyspace
from invalidator import fastrows
from invalidator.apply import OP_BUMP, OP_DELETE, OP_SET, Batch, PackedOps, pack_ops, write_prefix

KEYS = Keyspace()


def test_a_stored_value_is_its_write_prefix_and_the_bytes() -> None:
    batch = Batch(True)
    batch.write("k", b'{"v": 1}', 3600)
    batch.delete("d")
    batch.bump("g")
    assert batch.ops == {"k": write_prefix(3600) + b'{"v": 1}', "d": OP_DELETE, "g": OP_BUMP}
    assert write_prefix(3600) == OP_SET + b"3600 "
    assert pack_ops(list(batch.ops), list(batch.ops.values())).layout == b"1 1 3600 1"


def test_the_compiled_walk_writes_the_op_format_apply_owns() -> None:
    """Its operation codes are the ones fastrows hands it; the ops it records are the ones
    apply.py's Batch records: OP_DELETE, and write_prefix(ttl) + the JSON object."""
    from invalidator import _rowwalk as rw
    assert fastrows.OPERATIONS == {"insert": rw.INSERT, "update": rw.UPDATE, "delete": rw.DELETE}
    plan = rw.Plan(((4, 0, rw.INT, 0, False), (4, 0, rw.INT, 0, False)), 0, "ct:{t:", "}", OP_DELETE,
                   ((1, b'"n":'),), write_prefix(90))
    row = bytes([0]) + (7).to_bytes(4, "little") + (5).to_bytes(4, "little")
    ops: dict[str, bytes] = {}
    assert plan.apply(row, 0, len(row), rw.INSERT, ops) is True
    expected = Batch(True)
    expected.write("ct:{t:7}", b'{"n":5}', 90)
    assert ops == expected.ops
    ops = {}
    assert plan.apply(row, 0, len(row), rw.DELETE, ops) is True
    assert ops == {"ct:{t:7}": OP_DELETE}


def test_pack_ops_groups_keys_by_what_is_done_to_them() -> None:
    D, B, S = OP_DELETE, OP_BUMP, OP_SET
    keys = ["a", "g1", "b", "c", "d", "e", "g2"]
    ops = [D, B, S + b"3600 {\"x\": 1}", S + b"300 {\"y\": 2}", D, S + b"3600 [ ]", B]
    packed = pack_ops(keys, ops)
    assert packed.keys == ["a", "d", "g1", "g2", "b", "e", "c"]
    assert packed.layout == b"2 2 3600 2 300 1"
    assert packed.values == [b"{\"x\": 1}", b"[ ]", b"{\"y\": 2}"]
    assert (packed.deleted, packed.bumped, packed.stored) == (2, 2, 3)
    only_deletes = pack_ops(["a", "b"], [D, b"D"])  # equal bytes, not the same object
    assert (only_deletes.keys, only_deletes.layout, only_deletes.values) == (["a", "b"], b"2 0", [])
    assert pack_ops([], []).layout == b"0 0"


def test_fenced_apply_carries_out_every_op_of_a_packed_batch(redis_client: redis.Redis) -> None:
    """Deletes across several DEL chunks, bumps of a kept and a lost generation, stores under
    two TTLs, and the position, in one fenced script; a stale leader's call changes nothing."""
    fenced = redis_client.register_script(scripts.FENCED_APPLY)
    leader, position = KEYS.invalidator_leader(), KEYS.invalidator_position()
    redis_client.set(leader, "7 me")
    deleted = [KEYS.user(i) for i in range(2 * scripts.DEL_CHUNK + 345)]
    redis_client.mset({k: b"{}" for k in deleted})
    kept_gen, lost_gen = KEYS.list_generation("p"), KEYS.list_generation("p:c=x")
    redis_client.set(kept_gen, 41)
    stored = {KEYS.user(100_000 + i): (b'{"id": %d}' % i, 3600 if i % 3 else 300) for i in range(50)}
    keys = deleted + [kept_gen, lost_gen] + list(stored)
    ops = ([OP_DELETE] * len(deleted) + [OP_BUMP] * 2
           + [OP_SET + b"%d " % ttl + value for value, ttl in stored.values()])
    packed = pack_ops(keys, ops)
    applied = KEYS.invalidator_applied()
    marks = [KEYS.slot_watermark(3), KEYS.slot_watermark(9)]
    listener = redis_client.pubsub()
    listener.subscribe(applied)
    assert listener.get_message(timeout=5)["type"] == "subscribe"

    def call(value: str, saved: bytes, state: bytes) -> int:
        return int(fenced(keys=[leader, position, applied, *marks, *packed.keys],
                          args=[value, saved, packed.layout, state, len(marks), "PUBLISH", *packed.values]))

    assert call("6 old", b'{"log_pos": 1}', b"0-1-5") == 0  # fenced off: nothing below happened
    assert redis_client.exists(*deleted) == len(deleted) and redis_client.get(position) is None
    assert redis_client.get(kept_gen) == b"41" and not redis_client.exists(*stored)
    assert redis_client.exists(applied, *marks) == 0

    before_ms = int(redis_client.time()[0]) * 1000
    assert call("7 me", b'{"log_pos": 2}', b"0-1-6") == 1
    assert redis_client.exists(*deleted) == 0
    assert redis_client.get(kept_gen) == b"42" and int(redis_client.get(lost_gen) or 0) > 10**15
    for key, (value, ttl) in stored.items():
        assert redis_client.get(key) == value
        assert ttl - 5 <= redis_client.ttl(key) <= ttl
    assert redis_client.get(position) == b'{"log_pos": 2}'
    # the watermarks and the applied state went with the work, and the state was published
    for mark in marks:
        ms, state = keyspace.watermark(redis_client.get(mark))
        assert state == "0-1-6" and before_ms <= ms <= before_ms + 5000
    assert redis_client.get(applied) == b"0-1-6"
    message = listener.get_message(timeout=5)
    assert (message["type"], message["data"]) == ("message", b"0-1-6")
    listener.close()


def test_slot_apply_refuses_an_older_token_and_raises_the_fence(redis_client: redis.Redis) -> None:
    slot_apply = redis_client.register_script(scripts.SLOT_APPLY)
    fence, key, gone = KEYS.slot_fence(keyspace.key_slot(KEYS.user(1))), KEYS.user(1), KEYS.user(1) + "x"
    packed = pack_ops([key], [OP_SET + b"60 {\"v\": 5}"])

    mark = KEYS.slot_watermark(keyspace.key_slot(KEYS.user(1)))

    def call(token: int, packed: PackedOps, state: bytes) -> int:
        return int(slot_apply(keys=[fence, mark, *packed.keys], args=[token, packed.layout, state, *packed.values]))

    assert call(5, packed, b"0-1-5") == 1 and redis_client.get(fence) == b"5"
    assert redis_client.get(key) == b'{"v": 5}' and keyspace.watermark(redis_client.get(mark))[1] == "0-1-5"
    redis_client.set(gone, b"{}")
    assert call(4, pack_ops([key, gone], [OP_DELETE] * 2), b"0-1-9") == 0  # an older leader
    assert redis_client.exists(key, gone) == 2 and keyspace.watermark(redis_client.get(mark))[1] == "0-1-5"
    assert call(6, pack_ops([key, gone], [OP_DELETE] * 2), b"0-1-7") == 1
    assert redis_client.exists(key, gone) == 0 and redis_client.get(fence) == b"6"
    assert keyspace.watermark(redis_client.get(mark))[1] == "0-1-7"
