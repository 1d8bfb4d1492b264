"""Start-up checks: the server must give the binlog the worker needs.

Each failure is one line saying what is wrong and where to fix it; the worker
prints it and exits 2 (a configuration error: restarting will not help).
"""

from __future__ import annotations

import logging
import time

import pymysql

from invalidator.settings import InvalidatorSettings

log = logging.getLogger("invalidator")
ER_ACCESS = (1044, 1142, 1227, 1045)
WHERE = "in my.cnf, or on RDS/Aurora in the DB parameter group (then reboot the instance)"


class CheckFailed(Exception):
    """A start-up check failed; ``str()`` is the one line to show."""


def binlog_variables(cur: pymysql.cursors.Cursor) -> dict[str, str]:
    cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format',"
                " 'binlog_row_image', 'binlog_row_metadata', 'server_id', 'version')")
    return {str(k).lower(): str(v) for k, v in cur.fetchall()}


def check_binlog(variables: dict[str, str]) -> None:
    version = variables.get("version", "?")
    if variables.get("log_bin", "OFF").upper() not in ("ON", "1"):
        raise CheckFailed("log_bin is OFF, expected ON: enable the binary log (--log-bin; on RDS,"
                          " turn on automated backups)")
    for name, expected in (("binlog_format", "ROW"), ("binlog_row_image", "FULL")):
        value = variables.get(name, "").upper()
        if value != expected:
            raise CheckFailed(f"{name} is {value or 'unset'}, expected {expected}: set {name}={expected} {WHERE}")
    if "binlog_row_metadata" not in variables:
        raise CheckFailed(f"binlog_row_metadata does not exist on this server ({version}): it needs"
                          " MySQL >= 8.0.14 or MariaDB >= 10.5, with binlog_row_metadata=FULL")
    value = variables["binlog_row_metadata"].upper()
    if value != "FULL":
        raise CheckFailed(f"binlog_row_metadata is {value}, expected FULL: set binlog_row_metadata=FULL {WHERE}")


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
        if exc.args[0] != 1064:  # MySQL 8.4 renamed it; the stream checks again
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
    """True/False from SHOW SLAVE HOSTS; None when the account may not run it."""
    try:
        cur.execute("SHOW SLAVE HOSTS")
    except pymysql.err.MySQLError as exc:
        if exc.args[0] in ER_ACCESS:
            return None
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
