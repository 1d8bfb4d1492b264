"""The sending pipeline's bookkeeping (invalidator/sending.py), without a server.

The transport is a fake that records what it is asked; whether Redis carries the scripts
out is tests/test_invalidator_pipelined.py's and test_invalidator_catchup.py's business.
"""

from __future__ import annotations

import threading
import types
from typing import Any

import pytest
import redis

from invalidator.apply import Batch, write_prefix
from invalidator.leader import LostLeadership
from invalidator.position import Position
from invalidator.sending import Group, Sender, Sent, Writer


class Written:
    def __init__(self, batch: Batch, position: Position | None) -> None:
        self.batch, self.position = batch, position
        self.reply_ready = False

    def replied(self) -> bool:
        return self.reply_ready


class FakeTransport:
    """Writes each script behind the one before, as Applier.send_behind does: ``send_behind``
    acknowledges ``earlier`` and leaves its own batch written; ``receive`` acknowledges it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.acknowledged: list[Position | None] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail: Exception | None = None

    def apply(self, batch: Batch, position: Position | None) -> None:
        self.calls.append(("apply", position))
        self.acknowledged.append(position)

    def send_behind(self, batch: Batch, position: Position | None, earlier: Written | None) -> Written:
        self.gate.wait(10)
        self.calls.append(("send_behind", (position, earlier.position if earlier else None)))
        if self.fail is not None:
            raise self.fail
        if earlier is not None:
            self.acknowledged.append(earlier.position)
        return Written(batch, position)

    def receive(self, sent: Written) -> None:
        self.calls.append(("receive", sent.position))
        self.acknowledged.append(sent.position)

    def drop(self, sent: Written) -> None:
        self.calls.append(("drop", sent.position))


class Stream:
    def __init__(self) -> None:
        self.behind = True

    def pending(self) -> bool:
        return self.behind


def at(pos: int) -> Position:
    return Position("binlog.000001", pos)


def batch_of(*keys: str) -> Batch:
    batch = Batch(False)
    for key in keys:
        batch.delete(key)
    return batch


@pytest.fixture
def pipeline() -> Any:
    transport = FakeTransport()
    applied: list[tuple[Position, int]] = []
    advanced: list[Position] = []
    sender = Sender(transport, lambda batch, position, count, ts, received: applied.append((position, count)),
                    advanced.append)
    stream = Stream()
    sender.follow(stream)
    yield sender, transport, applied, advanced, stream
    sender.close()


def commit(sender: Sender, batch: Batch, position: Position) -> bool:
    """As Follower.commit: True when the batch went out (a new one is started)."""
    if sender.defer(batch, position, 0.0, 0.0):
        return False
    return sender.flush(batch)


def test_caught_up_every_transaction_is_applied_at_once(pipeline: Any) -> None:
    sender, transport, applied, advanced, stream = pipeline
    stream.behind = False
    assert commit(sender, batch_of("a"), at(10))
    assert commit(sender, batch_of("b"), at(20))
    assert transport.calls == [("apply", at(10)), ("apply", at(20))]
    assert applied == [(at(10), 1), (at(20), 1)]


def test_behind_two_scripts_are_in_flight_and_acknowledged_in_order(pipeline: Any) -> None:
    sender, transport, applied, advanced, stream = pipeline
    for pos in (10, 20, 30):  # each one a full group: sent at its commit
        batch = batch_of(*(f"k{pos}-{i}" for i in range(Group.MAX_KEYS)))
        assert commit(sender, batch, at(pos))
    assert applied == [(at(10), 1)]  # accounted for when the third was handed over
    sender.finish()
    assert [c for c in transport.calls if c[0] == "send_behind"] == [
        ("send_behind", (at(10), None)), ("send_behind", (at(20), at(10))), ("send_behind", (at(30), at(20)))]
    assert transport.calls[-1] == ("receive", at(30))
    assert applied == [(at(10), 1), (at(20), 1), (at(30), 1)]
    assert transport.acknowledged == [at(10), at(20), at(30)]


def test_a_group_collects_transactions_until_the_stream_is_caught_up(pipeline: Any) -> None:
    sender, transport, applied, advanced, stream = pipeline
    batch = batch_of("a")
    assert not commit(sender, batch, at(10))  # behind: deferred
    batch.delete("b")
    assert not commit(sender, batch, at(20))
    stream.behind = False
    batch.delete("c")
    assert commit(sender, batch, at(30))  # caught up: one script with the last position
    assert transport.calls == [("apply", at(30))]
    assert applied == [(at(30), 3)]


def test_a_position_passed_while_a_send_is_in_flight_waits_for_its_reply(pipeline: Any) -> None:
    sender, transport, applied, advanced, stream = pipeline
    transport.gate.clear()  # the sender's task is held before it writes
    assert commit(sender, batch_of(*(f"k{i}" for i in range(Group.MAX_KEYS))), at(10))
    assert sender.holds(at(15))  # a transaction that touched nothing cached
    assert sender.holds(at(17))
    assert advanced == [] and applied == []
    transport.gate.set()
    sender.finish()
    assert applied == [(at(10), 1)]
    assert advanced == [at(17)]  # after the group's acknowledgement, never before


def test_a_deferred_group_carries_a_later_position_on(pipeline: Any) -> None:
    sender, transport, applied, advanced, stream = pipeline
    batch = batch_of("a")
    assert not commit(sender, batch, at(10))
    assert sender.holds(at(12))
    stream.behind = False
    assert sender.flush(batch)
    assert applied == [(at(12), 1)] and advanced == []


def test_nothing_in_flight_the_caller_takes_the_position(pipeline: Any) -> None:
    sender, transport, applied, advanced, stream = pipeline
    assert not sender.holds(at(5))
    assert sender.idle() and transport.calls == []


def test_the_senders_failure_is_raised_when_its_work_is_collected(pipeline: Any) -> None:
    sender, transport, applied, advanced, stream = pipeline
    transport.fail = ConnectionError("cut")
    assert commit(sender, batch_of(*(f"k{i}" for i in range(Group.MAX_KEYS))), at(10))
    with pytest.raises(ConnectionError, match="cut"):
        sender.finish()
    assert applied == []


def test_leading_ends_the_unread_reply_is_dropped_and_nothing_is_accounted(pipeline: Any) -> None:
    sender, transport, applied, advanced, stream = pipeline
    assert commit(sender, batch_of(*(f"k{i}" for i in range(Group.MAX_KEYS))), at(10))
    assert sender.holds(at(11))
    sender.abandon()
    assert transport.calls[-1] == ("drop", at(10))
    assert applied == [] and advanced == []
    sender.finish()  # nothing left: the position passed is forgotten too
    assert advanced == []


# ------------------------------------------- the writer: two scripts on one connection

class FakeConnection:
    """Answers each script written with ``reply`` (an exception is raised on reading)."""

    def __init__(self) -> None:
        self.is_connected = True
        self.written: list[Any] = []
        self.replies: list[Any] = []
        self.reply: Any = 1

    def send_command(self, *args: Any, check_health: bool = True) -> None:
        assert not check_health, "a health check's PING would be answered before the script in flight"
        self.written.append(args)
        self.replies.append(self.reply)

    def read_response(self) -> Any:
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def can_read(self, timeout: float = 0) -> bool:
        return bool(self.replies)


class FakeApplier:
    """The parts of Applier the writer uses; ``apply`` records what its retries would send."""

    def __init__(self) -> None:
        self.conn = FakeConnection()
        self.pool = self
        self.leadership = types.SimpleNamespace(value="7 me", lost=threading.Event())
        self.fenced = types.SimpleNamespace(sha="sha1")
        self.applied: list[tuple[dict[str, bytes], Position | None]] = []
        self.store = types.SimpleNamespace(committed=CommitLog())
        self.released: list[bool] = []

    def get_connection(self) -> FakeConnection:
        return self.conn

    def saved_json(self, position: Position | None) -> bytes:
        return b"" if position is None else position.to_json()

    def fenced_call(self, value: str, packed: Any, saved: bytes, state: bytes,
                    marks: Any) -> tuple[list[str], list[Any]]:
        return list(packed.keys), [value, saved, packed.layout]

    def marks(self, keys: list[str]) -> list[str]:
        return []

    def before_send(self, batch: Batch) -> None:
        pass

    def apply(self, batch: Batch, position: Position | None) -> None:
        self.applied.append((dict(batch.ops), position))

    def release(self, conn: FakeConnection, broken: bool = False) -> None:
        self.released.append(broken)

    def fenced_off(self, done: Any) -> None:
        if not done:
            self.leadership.lost.set()
            raise LostLeadership("fenced off")


class CommitLog(list[Position]):
    """The position store's ``committed``: the positions acknowledged, in order."""

    def __call__(self, position: Position) -> None:
        self.append(position)


def two_groups() -> tuple[Batch, Batch]:
    first, later = Batch(True), Batch(True)
    first.write("both", b"1", 60)
    first.delete("first")
    later.write("both", b"2", 60)
    later.delete("later")
    return first, later


@pytest.fixture
def writer() -> Any:
    applier = FakeApplier()
    return Writer(applier), applier  # type: ignore[arg-type]  # the parts of Applier it uses


def test_the_later_script_is_written_before_the_earlier_reply_is_read(writer: Any) -> None:
    w, applier = writer
    first, later = two_groups()
    sent = w.send_behind(first, at(100), None)
    assert isinstance(sent, Sent) and len(applier.conn.written) == 1 and applier.store.committed == []
    behind = w.send_behind(later, at(200), sent)
    assert isinstance(behind, Sent) and behind.conn is sent.conn
    assert len(applier.conn.written) == 2 and applier.store.committed == [at(100)]  # in order
    w.receive(behind)
    assert applier.store.committed == [at(100), at(200)] and applier.applied == []


@pytest.mark.parametrize("fault", [redis.ConnectionError("cut"), redis.ResponseError("NOSCRIPT No matching script")],
                         ids=["cut", "noscript"])
def test_after_a_fault_both_groups_are_applied_as_one_with_the_later_position(writer: Any, fault: Exception) -> None:
    w, applier = writer
    first, later = two_groups()
    sent = w.send_behind(first, at(100), None)
    applier.conn.replies[0] = fault  # the first script's reply never comes
    assert w.send_behind(later, at(200), sent) is None
    assert applier.applied == [({"both": write_prefix(60) + b"2", "first": b"D", "later": b"D"}, at(200))]
    assert applier.released == [True] and applier.store.committed == []


def test_a_fenced_off_script_stands_the_leader_down(writer: Any) -> None:
    w, applier = writer
    first, later = two_groups()
    applier.conn.reply = 0  # another leader's lease: the script changed nothing
    sent = w.send_behind(first, at(100), None)
    with pytest.raises(LostLeadership):
        w.send_behind(later, at(200), sent)
    assert applier.leadership.lost.is_set()
    assert applier.applied == [] and applier.store.committed == [] and applier.released == [True]


def test_a_reply_not_wanted_is_dropped_with_its_connection(writer: Any) -> None:
    w, applier = writer
    first, _ = two_groups()
    sent = w.send_behind(first, at(100), None)
    w.drop(sent)
    assert applier.released == [True] and applier.store.committed == []
