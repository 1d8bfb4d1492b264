"""Two scripts in flight: the sender writes a group's script behind the one before and only
then reads that one's reply (Applier.send_behind).

Each interleaving is forced on a real Redis: a write pause shows the sender does not wait
for Redis, a connection killed after Redis ran the first script forces the retry of both,
a flushed script cache forces NOSCRIPT, a stolen lease forces the fence.  What must hold:
a key touched by both groups ends as the later one left it, and the position saved is
never past work Redis has not run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import redis

from cachetail.keyspace import Keyspace
from cachetail.scripts import FENCED_APPLY
from conftest import Stack
from invalidator.apply import REDIS_ERRORS, Applier, Batch, Sent
from invalidator.leader import Leadership, LostLeadership
from invalidator.position import Position, RedisPositionStore
from invalidator_support import unique_prefix, wait_for


@pytest.fixture
def applier(stack: Stack) -> Iterator[Applier]:
    keyspace = Keyspace(prefix=unique_prefix())
    client = stack.redis_client()
    lease_client = stack.redis_client()
    leadership = Leadership(lease_client, keyspace, "pipelined-test", 30.0, REDIS_ERRORS)
    assert leadership.try_acquire()
    applier = Applier(client, keyspace, RedisPositionStore(client, keyspace), threading.Event(), 0.2, leadership)
    client.script_load(FENCED_APPLY)  # as once the first script has gone out (else NOSCRIPT, the test below)
    yield applier
    leadership.step_down(release=True)
    lease_client.close()
    client.close()


def groups(applier: Applier) -> tuple[Batch, Batch, dict[str, str]]:
    """Two groups, both touching ``both``: the later one's value must win."""
    ks = applier.keyspace
    keys = {"both": ks.user(1), "first": ks.user(2), "later": ks.user(3), "gone": ks.user(4)}
    first, later = Batch(True), Batch(True)
    first.write(keys["both"], b'{"v": 1}', 60)
    first.write(keys["first"], b'{"v": 1}', 60)
    first.delete(keys["gone"])
    later.write(keys["both"], b'{"v": 2}', 60)
    later.write(keys["later"], b'{"v": 2}', 60)
    applier.client.set(keys["gone"], b"{}")
    return first, later, keys


def saved(applier: Applier) -> int | None:
    position = applier.store.load()
    return None if position is None else position.log_pos


def settled_state(applier: Applier, keys: dict[str, str]) -> None:
    get = applier.client.get
    assert get(keys["both"]) == b'{"v": 2}' and get(keys["later"]) == b'{"v": 2}'
    assert get(keys["first"]) == b'{"v": 1}' and not applier.client.exists(keys["gone"])
    assert saved(applier) == 200


def test_the_sender_writes_the_next_script_before_reading_the_reply(applier: Applier) -> None:
    first, later, keys = groups(applier)
    control = applier.client
    control.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")  # Redis runs no write until unpaused
    try:
        sent = applier.send_behind(first, Position("binlog.000001", 100), None)
        assert isinstance(sent, Sent)  # returned without a reply: none can exist yet
        assert control.get(keys["first"]) is None and saved(applier) is None
    finally:
        control.execute_command("CLIENT", "UNPAUSE")
    behind = applier.send_behind(later, Position("binlog.000001", 200), sent)
    assert isinstance(behind, Sent) and behind.conn is sent.conn  # one connection: Redis keeps the order
    assert saved(applier) in (100, 200)  # the first is acknowledged; the second may have run too
    applier.receive(behind)
    settled_state(applier, keys)


def written_then_cut(applier: Applier, batch: Batch, log_pos: int) -> Sent:
    """``batch``'s script written while Redis runs no write, then its connection killed: the
    script waiting in Redis goes with it, never run."""
    control = applier.client
    control.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
    try:
        sent = applier.send_behind(batch, Position("binlog.000001", log_pos), None)
        assert isinstance(sent, Sent)
        local = "%s:%d" % sent.conn._sock.getsockname()[:2]  # the sender's end, as Redis names it
        assert control.client_kill_filter(addr=local) == 1
    finally:
        control.execute_command("CLIENT", "UNPAUSE")
    return sent


def test_a_connection_lost_before_redis_ran_either_applies_both_in_order(applier: Applier) -> None:
    first, later, keys = groups(applier)
    sent = written_then_cut(applier, first, 100)
    assert applier.client.get(keys["first"]) is None and saved(applier) is None
    assert applier.send_behind(later, Position("binlog.000001", 200), sent) is None  # both, acknowledged
    settled_state(applier, keys)


def test_replies_lost_after_redis_ran_both_apply_both_again_in_order(
        applier: Applier, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis ran the first script, then the second, and the connection broke before the
    first reply was read: the retry must not leave the first group's value on a key the
    second one changed."""
    first, later, keys = groups(applier)
    sent = applier.send_behind(first, Position("binlog.000001", 100), None)
    assert isinstance(sent, Sent)
    wait_for(lambda: saved(applier) == 100, 10, "Redis ran the first script")
    reads = []

    def broken_read(*args: object, **kwargs: object) -> object:  # the reset comes as the reply is read
        monkeypatch.undo()  # once: the connection is reused after it reconnects
        wait_for(lambda: saved(applier) == 200, 10, "Redis ran the second script")
        reads.append(applier.client.get(keys["both"]))
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(sent.conn, "read_response", broken_read)
    assert applier.send_behind(later, Position("binlog.000001", 200), sent) is None
    assert reads == [b'{"v": 2}']  # both had run when the connection broke
    settled_state(applier, keys)


def test_a_flushed_script_cache_is_retried_through_the_loading_path(applier: Applier) -> None:
    first, later, keys = groups(applier)
    applier.client.script_flush()  # as after a restart or a failover: the EVALSHA meets NOSCRIPT
    sent = applier.send_behind(first, Position("binlog.000001", 100), None)
    assert isinstance(sent, Sent)
    assert applier.send_behind(later, Position("binlog.000001", 200), sent) is None
    settled_state(applier, keys)


def test_a_lease_lost_with_two_in_flight_writes_nothing(applier: Applier) -> None:
    first, later, keys = groups(applier)
    leader = applier.keyspace.invalidator_leader()
    applier.client.set(leader, "999 another-host %d" % os.getpid())  # a newer leader took over
    sent = applier.send_behind(first, Position("binlog.000001", 100), None)
    assert isinstance(sent, Sent)
    with pytest.raises(LostLeadership):
        applier.send_behind(later, Position("binlog.000001", 200), sent)
    assert applier.leadership.lost.is_set()
    assert applier.client.exists(keys["both"], keys["first"], keys["later"]) == 0
    assert applier.client.exists(keys["gone"]) == 1 and saved(applier) is None


def test_a_reply_read_after_a_cut_is_applied_again(applier: Applier) -> None:
    first, _, keys = groups(applier)
    sent = written_then_cut(applier, first, 100)
    assert applier.client.get(keys["first"]) is None
    applier.receive(sent)
    assert applier.client.get(keys["first"]) == b'{"v": 1}' and saved(applier) == 100


def test_merged_batches_keep_the_later_op() -> None:
    first, later = Batch(True), Batch(False)
    first.write("k", b"{}", 5)
    first.delete("only-first")
    first.clear.add("p*")
    later.delete("k")
    both = first.merged(later)
    assert both.ops == {"k": b"D", "only-first": b"D"} and both.clear == {"p*"} and not both.refresh
    assert list(both.ops) == ["k", "only-first"]
