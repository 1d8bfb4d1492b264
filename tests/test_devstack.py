"""The throwaway servers themselves: binlog settings, sample data, accounts."""

from __future__ import annotations

from cachetail.devstack import RedisCluster

import pymysql
import pytest
from support.stack import API_PASSWORD, INVALIDATOR_PASSWORD, Stack


def test_binlog_is_configured_for_the_invalidator(db: pymysql.connections.Connection) -> None:
    with db.cursor() as cur:
        cur.execute("SHOW VARIABLES WHERE Variable_name IN "
                    "('log_bin','binlog_format','binlog_row_image','binlog_row_metadata')")
        assert dict(cur.fetchall()) == {"log_bin": "ON", "binlog_format": "ROW",
                                        "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}


def test_sample_data_is_deterministic_and_complete(db: pymysql.connections.Connection) -> None:
    with db.cursor() as cur:
        cur.execute("SELECT COUNT(*), MIN(id), MAX(id), COUNT(DISTINCT username) FROM users")
        assert cur.fetchone() == (10000, 1, 10000, 10000)
        cur.execute("SELECT COUNT(*), COUNT(DISTINCT category) FROM products")
        count, categories = cur.fetchone()
        assert count == 1000 and categories >= 8
        cur.execute("SELECT username, email, full_name, created_at FROM users WHERE id = 42")
        username, email, full_name, created = cur.fetchone()
        assert (username, email) == ("user00042", "user00042@example.com")
        assert full_name and str(created) == "2024-01-01 00:42:00"


def test_init_db_runs_twice_without_harm(stack: Stack, db: pymysql.connections.Connection) -> None:
    from cachetail.devstack import SQL_DIR

    with db.cursor() as cur:
        cur.execute("CHECKSUM TABLE users, products")
        before = cur.fetchall()
    stack.mariadb.run_sql_file(SQL_DIR / "init_db.sql")
    with db.cursor() as cur:
        cur.execute("CHECKSUM TABLE users, products")
        assert cur.fetchall() == before


def test_api_account_can_only_read(stack: Stack) -> None:
    conn = stack.mariadb.connect(user="cachetail_api", password=API_PASSWORD, database="cachelab")
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM users")
        assert cur.fetchone() == (10000,)
        with pytest.raises(pymysql.err.OperationalError) as denied:
            cur.execute("UPDATE users SET email = 'x' WHERE id = 1")
        assert denied.value.args[0] == 1142  # command denied
    conn.close()


def test_invalidator_account_reads_the_binlog_position(stack: Stack) -> None:
    conn = stack.mariadb.connect(user="cachetail_invalidator", password=INVALIDATOR_PASSWORD)
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        assert cur.fetchone()[0].startswith("binlog.")
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("DELETE FROM cachelab.users WHERE id = 1")
    conn.close()


def test_the_cluster_has_three_primaries_with_a_replica_each_on_loopback(cluster_stack: Stack) -> None:
    cluster = cluster_stack.redis
    assert isinstance(cluster, RedisCluster)
    primaries = cluster.primaries()
    assert len(primaries) == 3 and len(cluster.nodes) == 6
    for primary in primaries:
        (replica,) = cluster.replicas_of(primary)
        assert replica not in primaries
        info = cluster.cli(primary, "INFO", "replication")
        assert "connected_slaves:1" in info and "state=online" in info
    assert {n.host for n in cluster.nodes} == {"127.0.0.1"}
    # every node listens on loopback only, its bus port too
    for node in cluster.nodes:
        assert cluster.cli(node, "CONFIG", "GET", "bind").split()[1] == "127.0.0.1"
    key = "ct:{u:42}"
    assert cluster.primary_for(key) in primaries
