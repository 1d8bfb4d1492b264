"""The sending pipeline's bookkeeping (invalidator/sending.py), without a server.

The transport is a fake that records what it is asked; whether Redis carries the scripts
out is tests/test_invalidator_pipelined.py's and test_invalidator_catchup.py's business.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from invalidator.apply import Batch
from invalidator.position import Position
from invalidator.sending import Group, Sender


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
