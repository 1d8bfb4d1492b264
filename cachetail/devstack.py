"""Throwaway MariaDB and Redis servers in a folder, for tests and ``make run``.

Both are started from the installed Debian binaries on ports of their own,
listening on 127.0.0.1 only; nothing here touches a server already running on
the standard ports.  MariaDB runs with the binlog the invalidator needs (ROW
format, FULL row image, FULL row metadata, a server id).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymysql

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql"
EXAMPLES_DIR = SQL_DIR / "examples"
SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/libexec")

BINLOG_ARGS: tuple[str, ...] = (
    "--log-bin=binlog",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
)


class DevStackError(RuntimeError):
    """A local server could not be installed, started or reached."""


def find_binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or next(
            (str(Path(d) / name) for d in SEARCH_PATH if (Path(d) / name).is_file()), None
        )
        if found:
            return found
    raise DevStackError(
        f"{names[0]} not found; install the Debian packages mariadb-server and redis-server"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate: Any, timeout_s: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise DevStackError(f"{what} exited with {proc.returncode}:\n{tail}")
        if predicate():
            return
        time.sleep(0.05)
    raise DevStackError(f"{what} did not come up within {timeout_s:.0f} s (log: {log})")


def terminate(proc: subprocess.Popen[Any], timeout_s: float = 15) -> int:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL: a child never outlives its owner."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def stop_stale(pidfile: Path, timeout_s: float = 30) -> bool:
    """Stop a server a crashed earlier run left behind (its pid file names it)."""
    try:
        pid = int(Path(pidfile).read_text().split()[0])
        # Only a server of this folder: the pid may since belong to anything else.
        # (redis-server rewrites its title but works in its folder, as mariadbd does).
        folder = str(Path(pidfile).resolve().parent)
        if not os.readlink(f"/proc/{pid}/cwd").startswith(folder):
            return False
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.readlink(f"/proc/{pid}/cwd")  # gone, or a zombie: done
        except OSError:
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True


class _Server:
    proc: subprocess.Popen[bytes] | None = None
    host = "127.0.0.1"

    def __init__(self, base_dir: Path, port: int | None) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30) -> None:
        """Clean shutdown (SIGTERM), waiting for the process to end."""
        if self.proc is not None:
            terminate(self.proc, timeout_s)

    def kill(self) -> None:
        """Crash it (SIGKILL): no shutdown work at all."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def start(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(_Server):
    """``redis-server`` on 127.0.0.1:port, nothing saved to disk."""

    def __init__(self, base_dir: Path, port: int | None = None, password: str | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        super().__init__(base_dir, port)
        self.password = password
        self.extra_args = tuple(extra_args)
        self.pidfile = self.base_dir / "redis.pid"

    def start(self, timeout_s: float = 15) -> None:
        log = self.base_dir / "redis.log"
        args = [
            find_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.base_dir),
            "--logfile", str(log), "--daemonize", "no",
            "--pidfile", str(self.pidfile),
        ]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        args += self.extra_args
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        _wait(self._ping, timeout_s, f"redis-server on port {self.port}", self.proc, log)

    def _ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class RedisCluster:
    """Redis Cluster of ``masters`` primaries with ``replicas`` replicas each, on loopback.

    ``node_timeout_ms`` is short so that a killed primary's replica is promoted in
    about two seconds (production keeps the default 15 s).
    """

    def __init__(self, base_dir: Path, masters: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000) -> None:
        self.base_dir = Path(base_dir)
        self.masters, self.replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisServer] = []

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        """A seed node: what REDIS_PORT names (any node serves as a start)."""
        return self.nodes[0].port

    def _new_node(self) -> RedisServer:
        args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # the test-fast timeout must not make a briefly paused replica ineligible
                "--cluster-replica-validity-factor", "0",
                # the bus port is given: port + 10000 may be taken, or past 65535
                "--cluster-port", str(free_port()))
        node = RedisServer(self.base_dir / f"node{len(self.nodes)}", extra_args=args)
        self.nodes.append(node)
        node.start()
        return node

    def start(self, timeout_s: float = 30) -> None:
        try:
            for _ in range(self.masters * (1 + self.replicas)):
                self._new_node()
            addresses = [f"{n.host}:{n.port}" for n in self.nodes]
            done = subprocess.run([find_binary("redis-cli"), "--cluster", "create", *addresses,
                                   "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                                  capture_output=True, text=True, timeout=timeout_s)
            if done.returncode != 0:
                raise DevStackError("redis-cli --cluster create failed:\n"
                                    f"{done.stdout[-1500:]}{done.stderr[-800:]}")
            self.wait_ok(timeout_s)
        except BaseException:
            self.kill()  # no node outlives a failed start
            raise

    def wait_ok(self, timeout_s: float = 30) -> None:
        """Until every running node reports cluster_state:ok and agrees on the primaries."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            views = {self._ok_view(n) for n in self.nodes if n.running}
            agreed = views.pop() if len(views) == 1 else None
            if agreed is not None and len(agreed) >= self.masters:
                return
            time.sleep(0.1)
        raise DevStackError(f"the cluster did not become ok within {timeout_s} s")

    def _ok_view(self, node: RedisServer) -> frozenset[int] | None:
        if "cluster_state:ok" not in self.cli(node, "CLUSTER", "INFO"):
            return None
        info = self.cli(node, "INFO", "replication")
        if "role:master" in info and info.count("state=online") < self.replicas:
            return None  # a primary whose replicas are not in sync yet
        return frozenset(p.port for p in self.primaries(node))

    def cli(self, node: RedisServer, *command: str) -> str:
        done = subprocess.run([find_binary("redis-cli"), "-h", node.host, "-p", str(node.port),
                               *command], capture_output=True, text=True, timeout=10)
        return done.stdout

    def primaries(self, via: RedisServer | None = None) -> list[RedisServer]:
        """The nodes serving slots as primaries, as ``via`` (default: any running node) sees them."""
        via = via or next(n for n in self.nodes if n.running)
        by_port = {n.port: n for n in self.nodes}
        found = []
        for line in self.cli(via, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) > 8 and "master" in fields[2] and "fail" not in fields[2]:
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                found.append(by_port[port])
        return found

    def node_id(self, node: RedisServer) -> str:
        return self.cli(node, "CLUSTER", "MYID").strip()

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        by_port = {n.port: n for n in self.nodes}
        lines = self.cli(primary, "CLUSTER", "REPLICAS", self.node_id(primary)).splitlines()
        return [by_port[int(line.split()[1].split("@")[0].rsplit(":", 1)[1])] for line in lines
                if line.strip()]

    def primary_for(self, key: str) -> RedisServer:
        slot = int(self.cli(self.nodes[0], "CLUSTER", "KEYSLOT", key).strip())
        for node in self.primaries():
            if any(lo <= slot <= hi for lo, hi in self._slots_of(node)):
                return node
        raise DevStackError(f"no primary serves slot {slot}")

    def _slots_of(self, node: RedisServer) -> list[tuple[int, int]]:
        for line in self.cli(node, "CLUSTER", "NODES").splitlines():
            if "myself" in line.split()[2]:
                out = []
                for part in line.split()[8:]:
                    if part.startswith("["):
                        continue
                    lo, _, hi = part.partition("-")
                    out.append((int(lo), int(hi or lo)))
                return out
        return []

    def add_primary(self, timeout_s: float = 30) -> RedisServer:
        """A new primary that serves no slot yet, known to every node."""
        node = self._new_node()
        bus = node.extra_args[node.extra_args.index("--cluster-port") + 1]
        self.cli(self.nodes[0], "CLUSTER", "MEET", node.host, str(node.port), bus)
        node_id = self.node_id(node)
        deadline = time.monotonic() + timeout_s
        while not all(node_id in self.cli(n, "CLUSTER", "NODES")
                      and "cluster_state:ok" in self.cli(n, "CLUSTER", "INFO")
                      for n in self.nodes if n.running):
            if time.monotonic() > deadline:
                raise DevStackError(f"the new node {node.port} did not join within {timeout_s} s")
            time.sleep(0.05)
        return node

    def begin_migration(self, slot: int, source: RedisServer, target: RedisServer) -> None:
        """``slot`` starts moving (IMPORTING on the target, then MIGRATING on the source)."""
        for node, state, other in ((target, "IMPORTING", source), (source, "MIGRATING", target)):
            out = self.cli(node, "CLUSTER", "SETSLOT", str(slot), state, self.node_id(other))
            if out.strip() != "OK":
                raise DevStackError(f"SETSLOT {slot} {state} on {node.port}: {out.strip()}")

    def migrate_keys(self, source: RedisServer, target: RedisServer, *keys: str) -> None:
        out = self.cli(source, "MIGRATE", target.host, str(target.port), "", "0", "5000",
                       "KEYS", *keys)
        if out.strip() not in ("OK", "NOKEY"):
            raise DevStackError(f"MIGRATE {keys} to {target.port}: {out.strip()}")

    def end_migration(self, slot: int, target: RedisServer) -> None:
        """``slot`` belongs to ``target``: told to the target first, then to every primary."""
        target_id = self.node_id(target)
        for node in [target] + [p for p in self.primaries() if p is not target]:
            out = self.cli(node, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
            if out.strip() != "OK":
                raise DevStackError(f"SETSLOT {slot} NODE on {node.port}: {out.strip()}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


class MariaDB(_Server):
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
        _wait(self._ready, timeout_s, f"mariadbd on port {self.port}", self.proc, log)

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
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

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
