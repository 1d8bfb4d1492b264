"""The invalidator benchmark's servers and binlog ranges: what is written, and where it lies.

A range is written by a stored procedure (so the client's round trips do not set the
pace) in transactions of ``ROWS_PER_TX`` rows each, shaped one of two ways:

- ``single``: 100 single-row ``UPDATE`` statements per transaction (a rows event per row);
- ``multi``: one ``UPDATE ... WHERE id BETWEEN a AND a + 99`` per transaction (the server
  packs the 100 row images into as few rows events as ``binlog_row_event_max_size``
  allows: 8 KiB by default, ~35 rows of ``users``).

``users`` is mapped by the default cachetail.toml; ``bench_other`` is a copy of it that
cachetail does not map, so the two ranges carry the same bytes per row.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachetail.devstack import MariaDB, RedisServer, load_schema

ROOT = Path(__file__).resolve().parent.parent
FAST_DB = ("--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0", "--max-binlog-size=1G",
           "--innodb-buffer-pool-size=256M")
INV_PW = "bench-inv-pw"
ROWS_PER_TX = 100
TABLE_ROWS = 10_000  # users has 10,000 rows (sql/init_db.sql)
SHAPES = ("single", "multi")
TABLES = ("users", "bench_other")

PROC = """
CREATE PROCEDURE bench_writes(IN txs INT, IN tbl VARCHAR(20), IN shape VARCHAR(10), IN seed INT)
BEGIN
  DECLARE t INT DEFAULT 0;
  DECLARE r INT;
  DECLARE base INT;
  WHILE t < txs DO
    SET base = ((seed + t) * 100) MOD 10000;
    START TRANSACTION;
    IF shape = 'multi' THEN
      IF tbl = 'users' THEN
        UPDATE users SET full_name = CONCAT('Bench ', seed + t, ' ', id) WHERE id BETWEEN base + 1 AND base + 100;
      ELSE
        UPDATE bench_other SET full_name = CONCAT('Bench ', seed + t, ' ', id) WHERE id BETWEEN base + 1 AND base + 100;
      END IF;
    ELSE
      SET r = 1;
      WHILE r <= 100 DO
        IF tbl = 'users' THEN
          UPDATE users SET full_name = CONCAT('Bench ', seed + t, ' ', r) WHERE id = base + r;
        ELSE
          UPDATE bench_other SET full_name = CONCAT('Bench ', seed + t, ' ', r) WHERE id = base + r;
        END IF;
        SET r = r + 1;
      END WHILE;
    END IF;
    COMMIT;
    SET t = t + 1;
  END WHILE;
END
"""


@dataclass(frozen=True)
class Range:
    """A binlog range [begin, end) and what it holds."""

    table: str
    shape: str
    rows: int
    begin: tuple[str, int]
    end: tuple[str, int]
    write_s: float  # wall-clock time the writes took

    @property
    def label(self) -> str:
        return f"{self.table}/{self.shape}"


def master(conn: Any) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
    return str(row[0]), int(row[1])


class Stack:
    """A throwaway MariaDB (binlog as the invalidator needs it, flushed lazily) and Redis."""

    def __init__(self, base: Path) -> None:
        self.db = MariaDB(base / "mariadb", server_id=1, extra_args=FAST_DB)
        self.redis = RedisServer(base / "redis")
        self.base = base
        self._seed = 0

    def __enter__(self) -> Stack:
        self.db.start()
        load_schema(self.db, "bench-api-pw", INV_PW)
        self.redis.start()
        conn = self.db.connect(database="cachelab")
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS bench_other LIKE users")
            cur.execute("INSERT IGNORE INTO bench_other SELECT * FROM users")
            cur.execute("DROP PROCEDURE IF EXISTS bench_writes")
            cur.execute(PROC)
        conn.close()
        return self

    def __exit__(self, *exc: object) -> None:
        self.redis.stop()
        self.db.stop()

    def env(self, prefix: str, **extra: str) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", ""), "DB_HOST": "127.0.0.1", "DB_PORT": str(self.db.port),
                "DB_USER": "cachetail_invalidator", "DB_PASSWORD": INV_PW, "DB_NAME": "cachelab",
                "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(self.redis.port), "CACHE_KEY_PREFIX": prefix,
                "INVALIDATOR_SERVER_ID": str(5000 + len(prefix) + int(time.time()) % 1000),
                "INVALIDATOR_STATE_DIR": str(self.base / "state"), "INVALIDATOR_HEARTBEAT_S": "1",
                # the consistency auditor would repair the stale values the latency part plants
                # (and spend its share of the CPU measured here): the invalidator alone is measured
                "AUDIT": "false", "PYTHONUNBUFFERED": "1", **extra}

    def conn_settings(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.db.port, "user": "cachetail_invalidator",
                "password": INV_PW}

    def server_id(self) -> int:
        return int(self.db.query("SELECT @@server_id")[0][0])

    def write(self, table: str, shape: str, rows: int) -> Range:
        """``rows`` changed rows of ``table`` in transactions of ROWS_PER_TX, as ``shape``."""
        txs = max(1, rows // ROWS_PER_TX)
        conn = self.db.connect(database="cachelab")
        try:
            begin = master(conn)
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("CALL bench_writes(%s, %s, %s, %s)", (txs, table, shape, self._seed))
            took = time.perf_counter() - started
            end = master(conn)
        finally:
            conn.close()
        self._seed += txs
        return Range(table, shape, txs * ROWS_PER_TX, begin, end, took)

    def worker(self, env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.base / log_name, "wb")
        return subprocess.Popen([sys.executable, "-m", "invalidator", "--env-file", "/nonexistent"],
                                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
