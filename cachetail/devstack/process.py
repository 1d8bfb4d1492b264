"""What every throwaway server shares: finding its binary, a free port, waiting for it to
come up, and stopping it (or what a crashed earlier run left behind)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/libexec")


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


def wait_until(predicate: Any, timeout_s: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
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


class Server:
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

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
