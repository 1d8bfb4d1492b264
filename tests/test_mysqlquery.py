"""cachetail.mysqlquery.run_once: one statement's rows, and the connection closed after,
whether the statement worked or not (the API hands pooled connections back this way)."""

from __future__ import annotations

import pymysql
import pytest

from cachetail.mysqlquery import run_once
from conftest import Stack


def test_the_rows_and_the_connection_closed(stack: Stack) -> None:
    conn = stack.mariadb.connect()
    assert run_once(conn, "SELECT %s + 1, 'x'", (41,)) == [(42, "x")]
    assert not conn.open


def test_a_failing_statement_still_closes_the_connection(stack: Stack) -> None:
    conn = stack.mariadb.connect()
    with pytest.raises(pymysql.err.ProgrammingError):
        run_once(conn, "SELECT * FROM mysql.no_such_table_here")
    assert not conn.open
