"""The keyspace: key names, value framing and the generation scripts."""

from __future__ import annotations

import redis

from cachetail import keyspace, scripts
from cachetail.keyspace import Keyspace

KEYS = Keyspace()


def test_keys_share_a_hash_slot_where_scripts_need_it() -> None:
    assert KEYS.user(42) == KEYS.row("u", "42") == "ct:{u:42}"
    variant = Keyspace.variant("p", (("category", "home%20%26%20garden%2Fx"), ("stock", "3")))
    assert variant == "p:category=home%20%26%20garden%2Fx&stock=3"
    gen, first, after = KEYS.list_generation(variant), KEYS.list_page(variant), KEYS.list_page(variant, "42")
    assert (gen, first, after) == ("ct:{" + variant + "}:gen", "ct:{" + variant + "}:v",
                                   "ct:{" + variant + "}:a:42")
    assert len({keyspace.key_slot(k) for k in (gen, first, after)}) == 1  # one MGET, one script
    assert KEYS.list_page(Keyspace.variant("p")) == "ct:{p}:v"
    # variants spread: the unfiltered list and two categories land in different slots
    slots = {keyspace.key_slot(KEYS.list_page(Keyspace.variant("p", (("category", c),)))) for c in ("a", "b")}
    assert len(slots | {keyspace.key_slot(KEYS.list_page(Keyspace.variant("p")))}) == 3
    assert KEYS.list_patterns("p") == ("ct:{p}*", "ct:{p:*")
    assert KEYS.row_prefix("u") == "ct:{u:"


def test_invalidator_state_shares_one_slot_and_slot_fences_land_in_their_slot() -> None:
    state = [KEYS.invalidator_position(), KEYS.invalidator_leader(), KEYS.invalidator_fence(),
             KEYS.invalidator_applied(), KEYS.node_watermark()]
    assert len({keyspace.key_slot(k) for k in state}) == 1  # one script checks the lease and saves
    for slot in (0, 1, 5461, 12182, 16383):
        assert keyspace.key_slot(KEYS.slot_fence(slot)) == slot
        assert keyspace.key_slot(KEYS.slot_watermark(slot)) == slot
    assert keyspace.key_slot(KEYS.user(42)) == keyspace.key_slot("{u:42}")
    # a fill's lease reads its key's watermarks in one script: its slot's, and on one node the node's
    user = KEYS.user(42)
    assert KEYS.watermarks(user, cluster=True) == [KEYS.slot_watermark(keyspace.key_slot(user))]
    assert KEYS.watermarks(user, cluster=False) == [KEYS.slot_watermark(keyspace.key_slot(user)),
                                                   KEYS.node_watermark()]
    gen = KEYS.list_generation(Keyspace.variant("p"))
    assert all(KEYS.is_state(k.encode()) for k in state + [gen, KEYS.slot_fence(9), KEYS.slot_watermark(9)])
    assert all(KEYS.parse(k).kind == "state" for k in state + [KEYS.slot_watermark(9)])
    assert not KEYS.is_state(KEYS.user(42).encode())
    assert not KEYS.is_state(KEYS.list_page(Keyspace.variant("p", (("c", "fence"),))).encode())


def test_control_records_differ_from_values_at_the_first_byte() -> None:
    assert keyspace.is_lease(keyspace.LEASE + b"abc") and not keyspace.is_lease(b'{"id":1}')
    assert keyspace.is_negative(keyspace.NEGATIVE) and not keyspace.is_negative(b"[]")
    stamped = keyspace.stamp(12, b"[]")
    assert keyspace.unstamp(stamped, b"12") == b"[]"
    assert keyspace.unstamp(stamped, b"13") is None
    assert keyspace.unstamp(stamped, None) is None  # generation gone: never a hit


def test_a_lost_generation_never_revives_an_old_stamp(redis_client: redis.Redis) -> None:
    lease = redis_client.register_script(scripts.LIST_LEASE)
    gen_key, variant = KEYS.list_generation("p"), KEYS.list_page("p")
    state, first = lease(keys=[gen_key, variant], args=[keyspace.LEASE + b"t1", 1000])
    assert state == 1 and int(first) > 10**15  # from the server clock, not 0
    redis_client.set(variant, keyspace.stamp(int(first), b"[old]"))
    redis_client.incr(gen_key)  # a row of the variant changed (the invalidator's bump)
    redis_client.delete(gen_key)  # evicted or cleared
    # A new lease re-creates the generation above every earlier one: the old page is no hit.
    state, again = lease(keys=[gen_key, variant], args=[keyspace.LEASE + b"t2", 1000])
    assert state == 1 and int(again) > int(first) + 1


def test_pack_ops_groups_keys_by_what_is_done_to_them() -> None:
    D, B, S = keyspace.OP_DELETE, keyspace.OP_BUMP, keyspace.OP_SET
    keys = ["a", "g1", "b", "c", "d", "e", "g2"]
    ops = [D, B, S + b"3600 {\"x\": 1}", S + b"300 {\"y\": 2}", D, S + b"3600 [ ]", B]
    packed = keyspace.pack_ops(keys, ops)
    assert packed.keys == ["a", "d", "g1", "g2", "b", "e", "c"]
    assert packed.layout == b"2 2 3600 2 300 1"
    assert packed.values == [b"{\"x\": 1}", b"[ ]", b"{\"y\": 2}"]
    assert (packed.deleted, packed.bumped, packed.stored) == (2, 2, 3)
    only_deletes = keyspace.pack_ops(["a", "b"], [D, b"D"])  # equal bytes, not the same object
    assert (only_deletes.keys, only_deletes.layout, only_deletes.values) == (["a", "b"], b"2 0", [])
    assert keyspace.pack_ops([], []).layout == b"0 0"


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
    ops = ([keyspace.OP_DELETE] * len(deleted) + [keyspace.OP_BUMP] * 2
           + [keyspace.OP_SET + b"%d " % ttl + value for value, ttl in stored.values()])
    packed = keyspace.pack_ops(keys, ops)
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
    packed = keyspace.pack_ops([key], [keyspace.OP_SET + b"60 {\"v\": 5}"])

    mark = KEYS.slot_watermark(keyspace.key_slot(KEYS.user(1)))

    def call(token: int, packed: keyspace.PackedOps, state: bytes) -> int:
        return int(slot_apply(keys=[fence, mark, *packed.keys], args=[token, packed.layout, state, *packed.values]))

    assert call(5, packed, b"0-1-5") == 1 and redis_client.get(fence) == b"5"
    assert redis_client.get(key) == b'{"v": 5}' and keyspace.watermark(redis_client.get(mark))[1] == "0-1-5"
    redis_client.set(gone, b"{}")
    assert call(4, keyspace.pack_ops([key, gone], [keyspace.OP_DELETE] * 2), b"0-1-9") == 0  # an older leader
    assert redis_client.exists(key, gone) == 2 and keyspace.watermark(redis_client.get(mark))[1] == "0-1-5"
    assert call(6, keyspace.pack_ops([key, gone], [keyspace.OP_DELETE] * 2), b"0-1-7") == 1
    assert redis_client.exists(key, gone) == 0 and redis_client.get(fence) == b"6"
    assert keyspace.watermark(redis_client.get(mark))[1] == "0-1-7"
