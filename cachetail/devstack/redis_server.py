"""``redis-server`` on a port of its own."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cachetail.devstack.process import Server, find_binary, wait_until


class RedisServer(Server):
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
        wait_until(self._ping, timeout_s, f"redis-server on port {self.port}", self.proc, log)

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
