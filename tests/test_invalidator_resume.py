"""Where the worker resumes, and what it does with each binlog error, on real servers.

Positions a server cannot serve are written into Redis as the worker would have saved
them; the server's own 1236 answers must lead to a GTID resume or a full invalidation,
never to a loop on the same position.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pymysql
import pytest
from pymysqlreplication import BinLogStreamReader

from invalidator.errors import FULL, RESUME_BY_GTID, RETRY, classify
from invalidator.gtid import MariaDBTracker, MySQLTracker, covers, missing_domains
from invalidator.source import current_position
from support.stack import Stack
from support.waiting import wait_for

STALE = b'{"stale":1}'


def update(db: pymysql.connections.Connection, user_id: int) -> None:
    with db.cursor() as cur:
        cur.execute("UPDATE users SET full_name = CONCAT(full_name, '+') WHERE id = %s", (user_id,))


@pytest.mark.parametrize(("where", "kinds"), [
    ("a file the server never had", {"file_missing"}),
    # what the server reads there depends on the bytes: "bogus data", or garbage read as a length
    ("inside an event", {"bad_position", "event_too_big"}),
    ("past the end of the file", {"bad_position"}),
])
def test_an_offset_the_server_refuses_resumes_from_the_gtid_state(
        stack: Stack, db, redis_client, workers, where: str, kinds: set[str]) -> None:
    w = workers(stack.invalidator_env(), start=False)
    ks = w.keyspace
    now = current_position(db)
    assert now.gtid
    log_file, log_pos = {"a file the server never had": ("binlog.999999", 4),
                         "inside an event": (now.log_file, now.log_pos - 7),
                         "past the end of the file": (now.log_file, now.log_pos + 1_000_000)}[where]
    redis_client.set(ks.invalidator_position(), json.dumps(
        {"log_file": log_file, "log_pos": log_pos, "source_id": now.source_id, "gtid": now.gtid}))
    redis_client.set(ks.user(77), STALE)
    update(db, 77)  # after the GTID state: must be applied
    w.start()
    wait_for(lambda: not redis_client.exists(ks.user(77)), what="the change after the GTID state applied")
    errors = {k: v for k, v in w.metrics().items() if k.startswith("cachetail_invalidator_stream_errors_total")}
    assert sum(errors.values()) == 1 and all(any(f'kind="{k}"' in e for k in kinds) for e in errors), errors
    # one attempt at the refused offset, never a second: then the GTID state
    assert w.metric('cachetail_invalidator_resumes_total{how="position"}') == 1
    assert w.metric('cachetail_invalidator_resumes_total{how="gtid"}') == 1
    assert not {k for k, v in w.metrics().items() if "full_invalidations" in k and v}
    assert w.metric("cachetail_invalidator_consecutive_failures") == 0


def test_a_refused_offset_without_a_gtid_state_means_a_full_invalidation(
        stack: Stack, db, redis_client, workers) -> None:
    w = workers(stack.invalidator_env(), start=False)
    ks = w.keyspace
    now = current_position(db)
    # a position saved before GTIDs were kept, and inside an event: BINLOG_GTID_POS cannot
    # name the point either
    redis_client.set(ks.invalidator_position(), json.dumps(
        {"log_file": now.log_file, "log_pos": now.log_pos - 7, "source_id": now.source_id}))
    redis_client.set(ks.user(78), STALE)
    w.start()
    assert w.metric('cachetail_invalidator_full_invalidations_total{reason="bad_position"}') == 1
    assert not redis_client.exists(ks.user(78))


def test_a_position_saved_without_gtid_gets_one_from_the_server(stack: Stack, db, redis_client, workers) -> None:
    """An upgrade: positions saved by an earlier version carry no GTID state; on their own
    server BINLOG_GTID_POS names it, so the next failover can still resume by GTID."""
    w = workers(stack.invalidator_env(), start=False)
    ks = w.keyspace
    now = current_position(db)
    redis_client.set(ks.invalidator_position(), json.dumps(
        {"log_file": now.log_file, "log_pos": now.log_pos, "source_id": now.source_id}))
    w.start()
    update(db, 79)
    wait_for(lambda: json.loads(redis_client.get(ks.invalidator_position()))["log_pos"] > now.log_pos)
    saved = json.loads(redis_client.get(ks.invalidator_position()))
    assert saved["gtid"] == current_position(db).gtid


def test_cannot_follow_is_visible_while_reconnecting_and_clears(stack: Stack, mariadb_factory, redis_client,
                                                                workers) -> None:
    """The account loses REPLICATION SLAVE while writes go on: every attempt fails, the failures
    count up, the lag behind the server's own binlog end grows and --check fails; the grant
    back and it recovers by itself."""
    server = mariadb_factory()
    env = {**stack.invalidator_env(), "DB_HOST": server.host, "DB_PORT": str(server.port)}
    w = workers(env)
    server.query("REVOKE REPLICATION SLAVE ON *.* FROM 'cachetail_invalidator'@'%'")
    for (thread_id,) in server.query("SELECT id FROM information_schema.processlist"
                                     " WHERE command LIKE 'Binlog Dump%%'"):
        server.query(f"KILL {int(thread_id)}")
    conn = server.connect(database="cachelab")
    update(conn, 5)
    wait_for(lambda: w.metric("cachetail_invalidator_consecutive_failures") >= 3, 15,
             what="failed attempts counted")
    wait_for(lambda: w.metric("cachetail_invalidator_follow_lag_seconds") >= 2, 15,
             what="the follow lag growing while the server moves on")
    assert w.metric("cachetail_invalidator_streaming") == 0
    assert w.metric('cachetail_invalidator_stream_errors_total{kind="access_denied"}') >= 3
    check = subprocess.run([sys.executable, "-m", "invalidator", "--check", "--env-file", "/nonexistent"],
                           env={"INVALIDATOR_METRICS_PORT": str(w.port)}, capture_output=True, text=True)
    assert check.returncode == 1, check.stdout
    health = json.loads(check.stdout)
    assert health["consecutive_failures"] >= 3 and health["follow_lag_s"] >= 2
    # no traceback per attempt: one line each
    assert "Traceback" not in w.log()

    server.query("GRANT REPLICATION SLAVE ON *.* TO 'cachetail_invalidator'@'%'")
    redis_client.set(w.keyspace.user(6), STALE)
    update(conn, 6)
    wait_for(lambda: not redis_client.exists(w.keyspace.user(6)), 20, what="following again")
    wait_for(lambda: w.metric("cachetail_invalidator_follow_lag_seconds") < 2, 10, what="the lag gone")
    assert w.metric("cachetail_invalidator_consecutive_failures") == 0
    conn.close()


def test_upstream_mariadb_gtid_dump_request_is_still_malformed(stack: Stack) -> None:
    """cachetail sends MariaDB GTID requests through the file+position request (see
    invalidator/stream.py) because python-mysql-replication 1.0.17's own is malformed: its
    length field says 14 bytes and it writes 15.  When this fails, upstream has changed:
    its ``is_mariadb=True, auto_position=...`` may be usable now."""
    sent: list[bytes] = []

    def recording_connect(**kwargs: object) -> pymysql.connections.Connection:
        conn = pymysql.connect(**kwargs)
        if "cursorclass" not in kwargs:
            write = conn._write_bytes

            def record(data: bytes) -> None:
                sent.append(bytes(data))
                write(data)

            conn._write_bytes = record
        return conn

    stream = BinLogStreamReader(
        connection_settings={"host": stack.mariadb.host, "port": stack.mariadb.port, "user": "root",
                             "password": ""},
        server_id=4_000_000_001, blocking=False, is_mariadb=True,
        auto_position=stack.mariadb.gtid_pos(), pymysql_wrapper=recording_connect)
    try:
        stream.fetchone()
    except pymysql.err.MySQLError:
        pass  # what the server makes of it does not matter here
    finally:
        stream.close()
    dumps = [p for p in sent if len(p) > 4 and p[4] == 0x12]  # COM_BINLOG_DUMP
    assert dumps, f"no COM_BINLOG_DUMP among {len(sent)} packets"
    declared = int.from_bytes(dumps[0][:3], "little")
    assert declared != len(dumps[0]) - 4, "upstream fixed its MariaDB GTID request: reconsider stream.py"
    assert (declared, len(dumps[0]) - 4) == (14, 15)


# ------------------------------------------------------------ no server needed

@pytest.mark.parametrize(("code", "text", "action", "kind"), [
    # MariaDB 10.11, as seen from real servers in the tests above and in test_db_failover.py
    (1236, "Could not find first log file name in binary log index file", RESUME_BY_GTID, "file_missing"),
    (1236, "bogus data in log event; the first event 'binlog.000001' at 728437", RESUME_BY_GTID, "bad_position"),
    (1236, "binlog truncated in the middle of event; consider out of disk space on master", RESUME_BY_GTID,
     "bad_position"),
    (1236, "Client requested master to start replication from impossible position", RESUME_BY_GTID,
     "bad_position"),
    (1236, "Could not find GTID state requested by slave in any binlog files. Probably the slave state is"
           " too old and required binlog files have been purged.", FULL, "gtid_purged"),
    (1236, "Error: connecting slave requested to start from GTID 0-1-16, which is not in the master's"
           " binlog", FULL, "diverged"),
    (1236, "The binlog on the master is missing the GTID 0-1-5 requested by the slave (even though a"
           " subsequent sequence number does exist), and GTID strict mode is enabled", FULL, "diverged"),
    (1236, "A slave with the same server_uuid/server_id as this slave has connected to the master",
     RETRY, "server_id_in_use"),
    # MySQL 5.7 / 8.0 wordings (no MySQL server can be installed here)
    (1236, "The slave is connecting using CHANGE MASTER TO MASTER_AUTO_POSITION = 1, but the master has"
           " purged binary logs containing GTIDs that the slave requires.", FULL, "gtid_purged"),
    (1236, "Cannot replicate because the source purged required binary logs. Replicate the missing"
           " transactions from elsewhere, or provision a new replica from backup. Consider increasing the"
           " source's binary log expiration period. The GTID set sent by the replica is '...', and the"
           " missing transactions are '...'", FULL, "gtid_purged"),
    (1236, "Slave has more GTIDs than the master has, using the master's SERVER_UUID. This may indicate"
           " that the end of the binary log was truncated or that the last binary log file was lost",
     FULL, "diverged"),
    (1236, "an error text no server has written yet", RESUME_BY_GTID, "unknown_1236"),
    (1236, "The replication receiver thread cannot start because the source has GTID_MODE = OFF",
     FULL, "gtid_unavailable"),
    (1236, "log event entry exceeded max_allowed_packet; Increase max_allowed_packet on master",
     RESUME_BY_GTID, "event_too_big"),
    (1227, "Access denied; you need (at least one of) the REPLICATION SLAVE privilege(s)", RETRY,
     "access_denied"),
    (2013, "Lost connection to MySQL server during query", RETRY, "connection"),
    (2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)", RETRY,
     "connection"),
])
def test_every_binlog_error_is_classified(code: int, text: str, action: str, kind: str) -> None:
    failure = classify(pymysql.err.OperationalError(code, text))
    assert (failure.action, failure.kind) == (action, kind)


def test_purged_source_wording_is_not_mistaken_for_the_gtid_state() -> None:
    # "source purged required binary logs" (8.0.26+) must read as purged, not as unknown
    failure = classify(pymysql.err.OperationalError(
        1236, "Cannot replicate because the source purged required binary logs."))
    assert failure.kind == "gtid_purged"


def test_gtid_trackers_keep_the_state_after_each_commit() -> None:
    maria = MariaDBTracker("0-1-10")
    assert maria.commit() == "0-1-10"  # no transaction: unchanged
    maria.add("0-2-11")
    assert maria.state == "0-1-10"  # counts only once committed
    assert maria.commit() == "0-2-11"
    maria.add("1-2-1")
    assert maria.commit() == "0-2-11,1-2-1"
    assert covers("mariadb", "0-2-11,1-2-1", "0-1-11") and not covers("mariadb", "0-2-11", "0-1-12")
    assert missing_domains("0-2-11,1-2-1", "0-3-12") == ["1-2-1"]
    assert missing_domains("0-2-11", "0-3-10") == ["0-2-11"]
    uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
    mysql = MySQLTracker(f"{uuid}:1-5")
    mysql.add(f"{uuid}:6")
    assert mysql.commit() == f"{uuid}:1-6"
    mysql.add(f"{uuid}:3")  # re-read after a replay: no error, no change
    assert mysql.commit() == f"{uuid}:1-6"
    assert covers("mysql", mysql.state, f"{uuid}:2-4") and not covers("mysql", mysql.state, f"{uuid}:2-7")
