"""Start-up checks: the server must give the binlog the worker needs.

Each problem is one line saying what is wrong and where to fix it (every binlog setting
at once, so one reboot of the server fixes them all); the worker prints them and exits 2
(a configuration error: restarting will not help).
"""

from __future__ import annotations

import logging
import time

import pymysql

from cachetail.codec_columns import Column

from invalidator.settings import InvalidatorSettings

log = logging.getLogger("invalidator")
ER_ACCESS = (1044, 1142, 1227, 1045)
ER_PARSE = 1064
WHERE = "in my.cnf, or on RDS/Aurora in the DB parameter group (then reboot the instance)"


class CheckFailed(Exception):
    """A start-up check failed; ``str()`` is the one line to show."""


def binlog_variables(cur: pymysql.cursors.Cursor) -> dict[str, str]:
    cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format',"
                " 'binlog_row_image', 'binlog_row_metadata', 'server_id', 'version',"
                " 'binlog_transaction_compression', 'binlog_row_value_options', 'log_bin_compress')")
    return {str(k).lower(): str(v) for k, v in cur.fetchall()}


def _on(value: str | None) -> bool:
    return (value or "").upper() in ("ON", "1")


def binlog_problems(variables: dict[str, str]) -> list[str]:
    """One line per binlog setting that keeps the worker from following this server."""
    version = variables.get("version", "?")
    if not _on(variables.get("log_bin", "OFF")):
        return ["log_bin is OFF, expected ON: enable the binary log (--log-bin; on RDS, turn on"
                " automated backups)"]
    problems = []
    for name, expected in (("binlog_format", "ROW"), ("binlog_row_image", "FULL")):
        value = variables.get(name, "").upper()
        if value != expected:
            problems.append(f"{name} is {value or 'unset'}, expected {expected}: set {name}={expected} {WHERE}")
    if "binlog_row_metadata" not in variables:
        problems.append(f"binlog_row_metadata does not exist on this server ({version}): it needs"
                        " MySQL >= 8.0.14 or MariaDB >= 10.5, with binlog_row_metadata=FULL")
    elif variables["binlog_row_metadata"].upper() != "FULL":
        problems.append(f"binlog_row_metadata is {variables['binlog_row_metadata'].upper()}, expected FULL:"
                        f" set binlog_row_metadata=FULL {WHERE}")
    # what the worker cannot read (MySQL 8, MariaDB): see invalidator/unsupported.py
    for name in ("binlog_transaction_compression", "log_bin_compress"):
        if _on(variables.get(name)):
            problems.append(f"{name} is ON, expected OFF: set {name}=OFF {WHERE}")
    if "PARTIAL_JSON" in variables.get("binlog_row_value_options", "").upper():
        problems.append(f"binlog_row_value_options is {variables['binlog_row_value_options']}, expected '':"
                        f" set binlog_row_value_options='' {WHERE}")
    return problems


def check_binlog(variables: dict[str, str]) -> None:
    """CheckFailed with a line per problem (see :func:`binlog_problems`)."""
    problems = binlog_problems(variables)
    if problems:
        raise CheckFailed("\n".join(problems))


def recheck_binlog(conn: pymysql.connections.Connection) -> None:
    """:func:`check_binlog` on the server at the other end of ``conn``."""
    with conn.cursor() as cur:
        check_binlog(binlog_variables(cur))


def json_problems(columns: dict[str, list[Column]], refresh: bool) -> list[str]:
    """MySQL's binary JSON in a followed table (``columns``: each table's columns).

    A served or key column of that type is refused with the declaration
    (:func:`cachetail.codec_columns.unsupported`).  Any other is skipped by its length in
    delete mode, but refresh mode needs each whole row image, and the worker's row walk
    does not read binary JSON: python-mysql-replication would decode it in every row."""
    if not refresh:
        return []
    return [f"{table}.{c.name} is MySQL's binary JSON ({c.column_type}): refresh mode would decode it"
            " in every row image; set INVALIDATOR_MODE=delete, or store it as LONGTEXT"
            for table, found in columns.items() for c in found if c.data_type == "json"]


def check_privileges(cur: pymysql.cursors.Cursor, database: str, tables: tuple[str, ...]) -> None:
    cur.execute("SHOW GRANTS FOR CURRENT_USER()")
    grants = " ".join(str(row[0]).upper() for row in cur.fetchall())
    if "REPLICATION SLAVE" not in grants and "ALL PRIVILEGES ON *.*" not in grants:
        raise CheckFailed("the DB account lacks REPLICATION SLAVE: GRANT REPLICATION SLAVE,"
                          " REPLICATION CLIENT ON *.* TO it (sql/grants.sql)")
    try:
        cur.execute("SHOW MASTER STATUS")
        cur.fetchall()
    except pymysql.err.MySQLError as exc:
        if exc.args[0] in ER_ACCESS:
            raise CheckFailed("the DB account lacks REPLICATION CLIENT (BINLOG MONITOR on MariaDB):"
                              " GRANT REPLICATION CLIENT ON *.* TO it (sql/grants.sql)") from None
        if exc.args[0] != ER_PARSE:  # MySQL 8.4 renamed it; the stream checks again
            raise
    for table in tables:
        try:
            cur.execute(f"SELECT 1 FROM `{database}`.`{table}` LIMIT 0")
            cur.fetchall()
        except pymysql.err.MySQLError as exc:
            if exc.args[0] in ER_ACCESS or exc.args[0] == 1146:
                raise CheckFailed(f"the DB account cannot SELECT from {database}.{table}:"
                                  f" GRANT SELECT ON {database}.* TO it ({exc.args[1]})") from None
            raise


def server_id_in_use(cur: pymysql.cursors.Cursor, server_id: int) -> bool | None:
    """True/False from SHOW SLAVE HOSTS (SHOW REPLICAS on MySQL 8.4, which removed the old
    name; both list Server_id first); None when the account may not run it."""
    for statement in ("SHOW SLAVE HOSTS", "SHOW REPLICAS"):
        try:
            cur.execute(statement)
            break
        except pymysql.err.MySQLError as exc:
            if exc.args[0] in ER_ACCESS:
                return None
            if exc.args[0] != ER_PARSE or statement == "SHOW REPLICAS":
                raise
    return any(int(row[0]) == server_id for row in cur.fetchall())


def check_server_id(cur: pymysql.cursors.Cursor, variables: dict[str, str], server_id: int,
                    wait_s: float) -> None:
    if int(variables.get("server_id", 0)) == server_id:
        raise CheckFailed(f"INVALIDATOR_SERVER_ID {server_id} is the server's own @@server_id:"
                          " choose a number no server or replica uses")
    deadline = time.monotonic() + wait_s
    while True:
        in_use = server_id_in_use(cur, server_id)
        if in_use is None:
            log.warning("cannot verify that INVALIDATOR_SERVER_ID %d is unused: SHOW SLAVE HOSTS needs"
                        " REPLICATION MASTER ADMIN on MariaDB (REPLICATION SLAVE on MySQL)", server_id)
            return
        if not in_use:
            return
        if time.monotonic() >= deadline:  # a crashed predecessor is dropped within heartbeats
            raise CheckFailed(f"INVALIDATOR_SERVER_ID {server_id} is in use by another replica"
                              " (SHOW SLAVE HOSTS): give each replica and invalidator its own")
        time.sleep(0.5)


def run_checks(conn: pymysql.connections.Connection, settings: InvalidatorSettings,
               tables: tuple[str, ...]) -> None:
    """``tables``: the tables the declaration follows, each needing SELECT."""
    with conn.cursor() as cur:
        variables = binlog_variables(cur)
        check_binlog(variables)
        check_privileges(cur, settings.mysql.database, tables)
        check_server_id(cur, variables, settings.server_id, wait_s=3 * settings.heartbeat_s)
