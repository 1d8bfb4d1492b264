"""Several invalidators: one leads by a lease with a fencing token, the others stand by."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from cachetail.devstack import ROOT
from cachetail.keyspace import Keyspace
from invalidator.apply import Batch
from invalidator.settings import InvalidatorSettings
from invalidator.worker import Worker
from support.invalidator import master_position, unique_prefix
from support.stack import Stack
from support.waiting import wait_for

pytestmark = pytest.mark.redis_kinds("single", "cluster")
STALE = b'{"stale":true}'


def leader_of(w) -> float:
    return w.metric("cachetail_invalidator_leader", -1)


def check(w) -> tuple[int, dict[str, object]]:
    done = subprocess.run([sys.executable, "-m", "invalidator", "--check", "--env-file", "/nonexistent"],
                          env=w.env, cwd=ROOT, capture_output=True, text=True, timeout=20)
    return done.returncode, json.loads(done.stdout)


def test_a_standby_takes_over_after_sigkill_and_nothing_is_lost(stack: Stack, db, redis_client,
                                                               workers) -> None:
    first = workers(stack.invalidator_env(), INVALIDATOR_LEASE_S="1")
    second = workers(stack.invalidator_env(), wait_streaming=False, INVALIDATOR_LEASE_S="1",
                     CACHE_KEY_PREFIX=first.prefix)
    wait_for(lambda: leader_of(second) == 0, 20, "the second invalidator standing by")
    assert leader_of(first) == 1
    code, state = check(second)
    assert (code, state["role"], state["healthy"]) == (0, "standby", True)
    assert str(state["leader"]).endswith(f"/{first.env['INVALIDATOR_SERVER_ID']} (pid {first.proc.pid},"
                                         f" token {str(state['leader']).rsplit(' ', 1)[1]}")
    code, state = check(first)
    assert (code, state["role"]) == (0, "leader")

    ks = first.keyspace
    ids = range(601, 611)
    for i in ids:
        redis_client.set(ks.user(i), STALE)
    first.kill()
    killed = time.monotonic()
    with db.cursor() as cur:  # changes while nobody leads
        for i in ids:
            cur.execute("UPDATE users SET full_name = CONCAT('K', full_name) WHERE id = %s", (i,))
    wait_for(lambda: leader_of(second) == 1, 10, "the standby taking over", interval=0.02)
    took = time.monotonic() - killed
    assert took < 1 + 0.5 + 2, f"takeover took {took:.2f} s with a 1 s lease"
    wait_for(lambda: all(redis_client.get(ks.user(i)) is None for i in ids), 10,
             "every change made while nobody led")
    assert second.metric("cachetail_invalidator_takeovers_total") == 1
    assert "leader now" in second.log()


def test_sigterm_hands_the_lease_over_at_once(stack: Stack, redis_client, workers) -> None:
    first = workers(stack.invalidator_env(), INVALIDATOR_LEASE_S="30")
    second = workers(stack.invalidator_env(), wait_streaming=False, INVALIDATOR_LEASE_S="30",
                     CACHE_KEY_PREFIX=first.prefix)
    wait_for(lambda: leader_of(second) == 0, 20, "the second invalidator standing by")
    assert first.stop() == 0
    # a 30 s lease: only a released lease explains a takeover this quick
    wait_for(lambda: leader_of(second) == 1, 5, "the standby taking the released lease")
    assert "leader lease released" in first.log()


def test_a_paused_old_leader_cannot_apply_old_work_or_move_the_position(
        stack: Stack, db, redis_client, workers) -> None:
    """Forced interleaving: the leader is paused (no progress, no renewals) holding a
    transaction's refreshed row; a standby takes over and applies that row and a newer
    one; the old leader wakes up and tries to write its old row and position."""
    prefix = unique_prefix()
    env = {**stack.invalidator_env(), "CACHE_KEY_PREFIX": prefix, "INVALIDATOR_MODE": "refresh",
           "INVALIDATOR_LEASE_S": "1", "INVALIDATOR_HEARTBEAT_S": "1",
           "INVALIDATOR_RETRY_MAX_S": "0.5"}
    old = Worker(InvalidatorSettings.from_env(env), serve_http=False)
    paused, wake = threading.Event(), threading.Event()

    def pause_holding_rows(batch: Batch) -> None:
        if any(b"{u:" in key.encode() for key in batch.ops) and not paused.is_set():
            old.leadership._done.set()  # a paused process renews nothing either
            paused.set()
            wake.wait(60)

    thread = threading.Thread(target=old.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: old.streaming, 20, "the first leader streaming")
        old.applier.before_send = pause_holding_rows
        ks = Keyspace(prefix=prefix)
        with db.cursor() as cur:
            cur.execute("UPDATE users SET full_name = 'Old Image' WHERE id = 640")
        wait_for(lambda: paused.is_set(), 10, "the old leader holding the row")

        new = workers(stack.invalidator_env(), wait_streaming=False, CACHE_KEY_PREFIX=prefix,
                      INVALIDATOR_MODE="refresh", INVALIDATOR_LEASE_S="1")
        wait_for(lambda: b"Old Image" in (redis_client.get(ks.user(640)) or b""), 15,
                 "the new leader replaying the held transaction")
        with db.cursor() as cur:
            cur.execute("UPDATE users SET full_name = 'New Image' WHERE id = 640")
        wait_for(lambda: b"New Image" in (redis_client.get(ks.user(640)) or b""), 10,
                 "the new leader applying a newer row")
        # on a cluster the position follows the keys in a second step: wait until it is saved
        head = master_position(db)
        wait_for(lambda: (json.loads(redis_client.get(ks.invalidator_position()))["log_pos"]
                          == head[1]), 10, "the new leader's position saved")
        position = redis_client.get(ks.invalidator_position())
        assert leader_of(new) == 1

        wake.set()
        wait_for(lambda: not old.leadership.leading and old.leadership.value is None, 10,
                 "the old leader stepping down")
        time.sleep(0.3)  # the subject: the stepped-down leader writes nothing more
        assert b"New Image" in redis_client.get(ks.user(640)), "an old row overwrote a newer one"
        assert redis_client.get(ks.invalidator_position()) == position, "the old leader moved it"
        assert old.leadership.state()["role"] == "standby"
        assert leader_of(new) == 1
    finally:
        wake.set()
        old.stop.set()
        thread.join(15)
    assert not thread.is_alive()
