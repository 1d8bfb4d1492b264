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
