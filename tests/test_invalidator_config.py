"""Settings and start-up checks: a wrong value stops the worker with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cachetail.devstack import ROOT
from cachetail.settings import SettingsError
from invalidator.checks import CheckFailed, check_binlog, check_server_id
from invalidator.position import FilePositionStore, Position
from invalidator.settings import InvalidatorSettings
from support.stack import Stack
from support.waiting import wait_for

BASE = {"DB_USER": "cachetail_invalidator", "INVALIDATOR_SERVER_ID": "4242"}


def run_worker(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invalidator", "--env-file", "/nonexistent"],
                          env={"PATH": "/usr/bin:/bin", **env}, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_defaults_and_overrides() -> None:
    s = InvalidatorSettings.from_env(BASE)
    assert (s.server_id, s.mode, s.metrics_host, s.metrics_port, s.position_store) == (
        4242, "delete", "127.0.0.1", 9101, "redis")
    assert s.state_dir == Path(".state/invalidator") and s.heartbeat_s == 2.0
    assert (s.lease_s, s.replay_window_s, s.redis.cluster) == (5.0, 300.0, False)
    assert s.identity.endswith("/4242") and " " not in s.identity  # the lease value's owner field
    s = InvalidatorSettings.from_env({**BASE, "INVALIDATOR_DB_USER": "inv", "INVALIDATOR_DB_PASSWORD": "pw",
                                      "DB_PASSWORD": "api-pw", "INVALIDATOR_MODE": "Refresh"})
    assert (s.mysql.user, s.mysql.password.reveal(), s.mode) == ("inv", "pw", "refresh")
    assert "pw" not in repr(s)


@pytest.mark.parametrize(("env", "name"), [
    ({"DB_USER": "x"}, "INVALIDATOR_SERVER_ID"),
    ({**BASE, "INVALIDATOR_SERVER_ID": "0"}, "INVALIDATOR_SERVER_ID"),
    ({**BASE, "INVALIDATOR_SERVER_ID": "4294967296"}, "INVALIDATOR_SERVER_ID"),
    ({**BASE, "INVALIDATOR_MODE": "purge"}, "INVALIDATOR_MODE"),
    ({**BASE, "INVALIDATOR_METRICS_PORT": "http"}, "INVALIDATOR_METRICS_PORT"),
    ({**BASE, "INVALIDATOR_POSITION_STORE": "s3"}, "INVALIDATOR_POSITION_STORE"),
    ({**BASE, "INVALIDATOR_HEARTBEAT_S": "0"}, "INVALIDATOR_HEARTBEAT_S"),
    ({**BASE, "INVALIDATOR_LEASE_S": "0.1"}, "INVALIDATOR_LEASE_S"),
    ({**BASE, "INVALIDATOR_REPLAY_WINDOW_S": "soon"}, "INVALIDATOR_REPLAY_WINDOW_S"),
    ({**BASE, "REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER"),
    ({**BASE, "REDIS_CLUSTER": "1", "REDIS_DB": "3"}, "REDIS_DB"),
])
def test_bad_settings_name_their_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError) as err:
        InvalidatorSettings.from_env(env)
    assert err.value.name == name


def test_a_settings_error_is_one_line_and_exit_2() -> None:
    done = run_worker({"DB_USER": "x", "INVALIDATOR_SERVER_ID": "nope"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "invalidator: configuration error: INVALIDATOR_SERVER_ID: expected an integer from 1 to"
        " 4294967295 (got 'nope')"]


@pytest.mark.parametrize(("variables", "expected"), [
    ({"log_bin": "OFF"}, "log_bin is OFF, expected ON"),
    ({"log_bin": "ON", "binlog_format": "MIXED", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"},
     "binlog_format is MIXED, expected ROW"),
    ({"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "MINIMAL", "binlog_row_metadata": "FULL"},
     "binlog_row_image is MINIMAL"),
    ({"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL", "version": "10.4.3"},
     "binlog_row_metadata does not exist on this server (10.4.3): it needs MySQL >= 8.0.14 or MariaDB >= 10.5"),
    ({"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "MINIMAL"},
     "binlog_row_metadata is MINIMAL, expected FULL: set binlog_row_metadata=FULL in my.cnf, or on RDS"),
])
def test_binlog_variable_messages(variables: dict[str, str], expected: str) -> None:
    with pytest.raises(CheckFailed) as err:
        check_binlog(variables)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_statement_format_server_is_refused_with_one_line(stack: Stack, mariadb_factory) -> None:
    server = mariadb_factory(["--binlog-format=STATEMENT"])
    done = run_worker({**stack.invalidator_env(), "DB_PORT": str(server.port)})
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("invalidator:")]
    assert lines == ["invalidator: start-up check failed: binlog_format is STATEMENT, expected ROW:"
                     " set binlog_format=ROW in my.cnf, or on RDS/Aurora in the DB parameter group"
                     " (then reboot the instance)"]


def test_missing_privileges_and_wrong_password(stack: Stack, db) -> None:
    with db.cursor() as cur:
        cur.execute("CREATE USER IF NOT EXISTS 'inv_noslave'@'%' IDENTIFIED BY 'pw'")
        cur.execute("GRANT SELECT ON cachelab.* TO 'inv_noslave'@'%'")
    done = run_worker({**stack.invalidator_env(), "DB_USER": "inv_noslave", "DB_PASSWORD": "pw"})
    assert done.returncode == 2 and "lacks REPLICATION SLAVE" in done.stderr
    done = run_worker({**stack.invalidator_env(), "DB_PASSWORD": "wrong"})
    assert done.returncode == 2 and "MySQL rejected DB_USER 'cachetail_invalidator'" in done.stderr
    assert "wrong" not in done.stderr


def test_server_id_must_differ_from_the_servers_and_be_unused(stack: Stack, db, redis_client, workers) -> None:
    done = run_worker({**stack.invalidator_env(), "INVALIDATOR_SERVER_ID": str(stack.mariadb.server_id)})
    assert done.returncode == 2 and "is the server's own @@server_id" in done.stderr
    # A running worker registers itself: root (who may SHOW SLAVE HOSTS) sees its id taken.
    w = workers(stack.invalidator_env())
    server_id = int(w.env["INVALIDATOR_SERVER_ID"])
    with db.cursor() as cur:
        cur.execute("SELECT @@server_id")
        variables = {"server_id": str(cur.fetchone()[0])}
        wait_for(lambda: cur.execute("SHOW SLAVE HOSTS") is not None and
                 any(row[0] == server_id for row in cur.fetchall()), what="registered replica")
        with pytest.raises(CheckFailed, match=f"INVALIDATOR_SERVER_ID {server_id} is in use"):
            check_server_id(cur, variables, server_id, wait_s=0)
        check_server_id(cur, variables, server_id + 1, wait_s=0)


def test_file_position_store_is_atomic_and_round_trips(tmp_path: Path) -> None:
    store = FilePositionStore(tmp_path / "state")
    assert store.load() is None
    store.committed(Position("binlog.000007", 1234, 9))
    assert store.load() == Position("binlog.000007", 1234, 9)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["position.json"]
    assert (tmp_path / "state" / "position.json").stat().st_mode & 0o777 == 0o600


def test_file_store_worker_resumes(stack: Stack, db, redis_client, workers) -> None:
    w = workers(stack.invalidator_env(), INVALIDATOR_POSITION_STORE="file")
    assert w.stop() == 0
    state = Path(w.env["INVALIDATOR_STATE_DIR"]) / "position.json"
    assert state.is_file()
    redis_client.set(w.keyspace.user(12), b"{}")
    with db.cursor() as cur:
        cur.execute("UPDATE users SET full_name = CONCAT(full_name, '+') WHERE id = 12")
    w.start()
    wait_for(lambda: not redis_client.exists(w.keyspace.user(12)), what="change made while down applied")
    assert "resuming from" in w.log()
