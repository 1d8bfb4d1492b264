"""``mariadbd`` with the binlog the invalidator needs (ROW format, FULL row image, FULL row
metadata, a server id), replication between such servers, and the schemas tests load."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymysql

from cachetail.devstack.process import ROOT, DevStackError, Server, find_binary, wait_until
from cachetail.mysqlquery import run_once

SQL_DIR = ROOT / "sql"
EXAMPLES_DIR = SQL_DIR / "examples"

BINLOG_ARGS: tuple[str, ...] = (
    "--log-bin=binlog",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
)


class MariaDB(Server):
    """``mariadbd`` with its own datadir, binlog on, root without a password on 127.0.0.1."""

    def __init__(self, base_dir: Path, port: int | None = None, server_id: int = 1,
                 extra_args: Sequence[str] = ()) -> None:
        super().__init__(base_dir, port)
        self.server_id = server_id
        self.extra_args = tuple(extra_args)
        self.datadir = self.base_dir / "data"
        self.socket = self.base_dir / "mysqld.sock"
        self.pidfile = self.base_dir / "mariadb.pid"

    def _common_args(self) -> list[str]:
        # a tmpdir of its own: servers bootstrapping side by side in a shared /tmp were seen
        # failing on each other's temporary tables
        tmpdir = self.base_dir / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        args = ["--no-defaults", f"--datadir={self.datadir}", f"--tmpdir={tmpdir}",
                "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M"]
        if os.geteuid() == 0:
            args.append("--user=root")
        return args

    def install(self) -> None:
        if (self.datadir / "mysql").is_dir():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        cmd = [find_binary("mariadb-install-db", "mysql_install_db"), *self._common_args(),
               "--auth-root-authentication-method=normal", "--skip-test-db",
               "--skip-name-resolve"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise DevStackError(f"mariadb-install-db failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")

    def start(self, timeout_s: float = 60) -> None:
        self.install()
        log = self.base_dir / "mariadb.err"
        args = [
            find_binary("mariadbd", "mysqld"), *self._common_args(),
            f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.socket}",
            f"--pid-file={self.pidfile}", f"--log-error={log}",
            f"--server-id={self.server_id}", "--skip-name-resolve",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
            *BINLOG_ARGS, *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, cwd=self.datadir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_until(self._ready, timeout_s, f"mariadbd on port {self.port}", self.proc, log)

    def _ready(self) -> bool:
        try:
            self.connect(connect_timeout=1).close()
            return True
        except pymysql.MySQLError:
            return False

    def connect(self, user: str = "root", password: str = "", database: str | None = None,
                **kwargs: Any) -> pymysql.connections.Connection:
        params: dict[str, Any] = {"host": self.host, "port": self.port, "user": user,
                                  "password": password, "autocommit": True,
                                  "charset": "utf8mb4", "connect_timeout": 5}
        params.update(kwargs)
        if database:
            params["database"] = database
        return pymysql.connect(**params)

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """One statement as root; its rows."""
        return run_once(self.connect(), sql, args)

    def gtid_pos(self) -> str:
        return str(self.query("SELECT @@global.gtid_binlog_pos")[0][0])

    def replicate_from(self, primary: MariaDB, rejoin: bool = False) -> None:
        """Become a GTID replica of ``primary`` (start with ``--log-slave-updates`` to chain).
        ``rejoin``: a former primary, which starts from its own binlog's GTID state."""
        use = "current_pos" if rejoin else "slave_pos"
        self.query(f"CHANGE MASTER TO MASTER_HOST='{primary.host}', MASTER_PORT={int(primary.port)},"
                   f" MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID={use},"
                   " MASTER_CONNECT_RETRY=1")
        self.query("START SLAVE")

    def wait_replicated(self, gtid_pos: str, timeout_s: float = 30) -> None:
        """Until this replica has applied ``gtid_pos`` (MASTER_GTID_WAIT)."""
        if self.query("SELECT MASTER_GTID_WAIT(%s, %s)", (gtid_pos, timeout_s))[0][0] != 0:
            raise DevStackError(f"replica on port {self.port} did not reach {gtid_pos} in {timeout_s} s")

    def stop_replication(self) -> None:
        self.query("STOP SLAVE")

    def promote(self) -> None:
        """Stop replicating and take writes: what a failover does to the chosen replica."""
        self.query("STOP SLAVE")
        self.query("RESET SLAVE ALL")
        self.query("SET GLOBAL read_only = 0")

    def run_sql_file(self, path: Path, replacements: dict[str, str] | None = None) -> None:
        """Run a script of ``;``-terminated statements as root (as ``mysql < file`` would)."""
        text = Path(path).read_text()
        for old, new in (replacements or {}).items():
            text = text.replace(old, new)
        conn = self.connect(client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
        try:
            with conn.cursor() as cur:
                cur.execute(text)
                while cur.nextset():
                    pass
        finally:
            conn.close()


def _passwords(api_password: str, invalidator_password: str) -> dict[str, str]:
    return {"CHANGE_ME_API_PASSWORD": api_password, "CHANGE_ME_INVALIDATOR_PASSWORD": invalidator_password}


def load_schema(db: MariaDB, api_password: str, invalidator_password: str) -> None:
    """init_db.sql, then grants.sql with the placeholders replaced."""
    db.run_sql_file(SQL_DIR / "init_db.sql")
    db.run_sql_file(SQL_DIR / "grants.sql", _passwords(api_password, invalidator_password))


def load_example(db: MariaDB, name: str, api_password: str, invalidator_password: str) -> None:
    """sql/examples/<name>.sql, then <name>_grants.sql with the placeholders replaced
    (``load_example(db, "shop", ...)``: the schema examples/shop.toml declares)."""
    schema = EXAMPLES_DIR / f"{name}.sql"
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or not schema.is_file():
        known = ", ".join(sorted(p.stem for p in EXAMPLES_DIR.glob("*.sql") if not p.stem.endswith("_grants")))
        raise DevStackError(f"no example schema {name!r} in {EXAMPLES_DIR} (known: {known})")
    db.run_sql_file(schema)
    db.run_sql_file(EXAMPLES_DIR / f"{name}_grants.sql", _passwords(api_password, invalidator_password))
