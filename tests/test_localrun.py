"""make run's runner: its .env, and clean-up of servers a crashed run left behind."""

from __future__ import annotations

import stat
import subprocess
import time
from pathlib import Path

from cachetail.devstack import RedisServer, stop_stale
from cachetail.localrun import write_env
from cachetail.settings import load_environment


def test_written_env_is_private_and_complete(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    write_env(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    env = load_environment(path)
    for name in ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "REDIS_PORT", "ADMIN_TOKEN",
                 "INVALIDATOR_DB_USER", "INVALIDATOR_DB_PASSWORD", "INVALIDATOR_SERVER_ID"):
        assert env[name], name
    assert env["DB_PORT"] != "3306" and env["REDIS_PORT"] != "6379"  # never the standard ports
    other = tmp_path / "other.env"
    write_env(other)
    assert load_environment(other)["ADMIN_TOKEN"] != env["ADMIN_TOKEN"]  # fresh secrets


def test_a_left_over_server_is_stopped_but_a_stranger_is_not(tmp_path: Path) -> None:
    orphan = RedisServer(tmp_path / "redis")
    orphan.start()
    try:
        assert stop_stale(orphan.pidfile)
        assert orphan.proc is not None and orphan.proc.wait(10) == 0  # stopped cleanly
    finally:
        orphan.kill()  # a failed assertion must not leave a server behind
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        fake = tmp_path / "elsewhere" / "redis.pid"
        fake.parent.mkdir()
        fake.write_text(f"{stranger.pid}\n")  # a reused pid: not ours to stop
        assert not stop_stale(fake)
        time.sleep(0.1)  # the subject: a while later it still runs (no state marks "not signalled")
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
    assert not stop_stale(tmp_path / "missing.pid")
