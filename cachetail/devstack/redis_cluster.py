"""A Redis Cluster of throwaway ``redis-server`` nodes, and the moves tests make on it
(failover, a new primary, slot migration)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from cachetail.devstack.process import DevStackError, find_binary, free_port
from cachetail.devstack.redis_server import RedisServer


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
