"""One leader among several invalidators: a lease in Redis with a fencing token.

Every invalidator runs the same loop.  The one holding ``<prefix>:{inv}:leader``
follows the binlog; the others are standbys that try to take the lease every
``poll_s``.  The lease is renewed by a thread every third of its length; a
leader killed with SIGKILL stops renewing and a standby takes over at most
``lease_s + poll_s`` later, resuming from the shared saved position.

The lease's value is ``"<token> <identity> <pid>"``.  The token grows with
every grant.  Every write of the leader is fenced by it inside the script that
performs the write (``FENCED_APPLY`` checks the lease itself, ``SLOT_APPLY``
the highest token seen by the slot), so a leader that was paused past its
lease and wakes up cannot move the position or apply work out of order, even
before it notices that it lost the lease.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis

from cachetail.keyspace import Keyspace
from cachetail.scripts import LEADER_ACQUIRE, LEADER_RENEW, LEASE_RELEASE
from metrics import invalidator as m

log = logging.getLogger("invalidator")


class LostLeadership(Exception):
    """The lease is gone or belongs to another invalidator: stop applying, become a standby."""


class Leadership:
    def __init__(self, client: redis.Redis | redis.RedisCluster, keyspace: Keyspace,
                 identity: str, lease_s: float, errors: tuple[type[BaseException], ...]) -> None:
        self.client = client
        self.identity = identity
        self.lease_ms = int(lease_s * 1000)
        self.lease_s = lease_s
        self.errors = errors
        self.keys = [keyspace.invalidator_leader(), keyspace.invalidator_fence()]
        self._acquire = client.register_script(LEADER_ACQUIRE)
        self._renew = client.register_script(LEADER_RENEW)
        self._release = client.register_script(LEASE_RELEASE)
        self.value: str | None = None  # our lease value while we lead
        self.holder: str | None = None  # the leader's value, as a standby last saw it
        self.lost = threading.Event()
        self.redis_ok = True  # the last attempt to take the lease reached Redis
        self._valid_until = 0.0  # monotonic: past this, unrenewed, the lease may be another's
        self._renewer: threading.Thread | None = None
        self._done = threading.Event()

    @property
    def poll_s(self) -> float:
        return min(0.5, self.lease_s / 10)

    @property
    def token(self) -> int:
        assert self.value is not None
        return int(self.value.split(" ", 1)[0])

    @property
    def leading(self) -> bool:
        return self.value is not None and not self.lost.is_set()

    def try_acquire(self) -> bool:
        """One attempt; True when this invalidator now leads (a Redis error: False)."""
        started = time.monotonic()
        try:
            taken, value = self._acquire(keys=self.keys, args=[self.identity, os.getpid(),
                                                              self.lease_ms])
        except self.errors as exc:
            if self.redis_ok:
                log.warning("cannot reach Redis to take the leader lease (%s)", exc)
            self.redis_ok = False
            return False
        self.redis_ok = True
        value = value.decode() if isinstance(value, bytes) else str(value)
        if not taken:
            if value != self.holder:
                log.info("standby: %s leads", _who(value))
            self.holder = value
            return False
        self.value, self.holder = value, value
        self._valid_until = started + self.lease_s
        self.lost.clear()
        self._done.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="leader-lease", daemon=True)
        self._renewer.start()
        m.LEADER.set(1)
        m.TAKEOVERS.inc()
        log.warning("leader now (token %d); taking over from the saved position", self.token)
        return True

    def wait(self, stop: threading.Event, on_poll: Any = lambda: None) -> None:
        """Block as a standby until this invalidator leads; return early only when ``stop`` is set."""
        while not stop.is_set():
            if self.try_acquire():
                return
            on_poll()
            stop.wait(self.poll_s)

    def check(self) -> None:
        """Raise :class:`LostLeadership` once the lease is known lost or may have expired."""
        if self.lost.is_set() or time.monotonic() > self._valid_until:
            self.lost.set()
            raise LostLeadership("the leader lease was lost")

    def _renew_loop(self) -> None:
        value = self.value
        while not self._done.wait(self.lease_s / 3):
            started = time.monotonic()
            try:
                kept = self._renew(keys=self.keys[:1], args=[value, self.lease_ms])
            except self.errors as exc:
                if time.monotonic() > self._valid_until:
                    log.error("leader lease not renewed in time (%s); stepping down", exc)
                    self.lost.set()
                    return
                continue
            if not kept:
                log.error("leader lease lost: another invalidator holds it now; stepping down")
                self.lost.set()
                return
            self._valid_until = started + self.lease_s

    def step_down(self, release: bool) -> None:
        """Stop renewing; with ``release`` give the lease back so a standby takes over at once."""
        was_leading = self.value is not None
        self._done.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        if was_leading and self.lost.is_set():
            m.LEADERSHIP_LOST.inc()
        if release and self.value is not None and not self.lost.is_set():
            try:
                self._release(keys=self.keys[:1], args=[self.value])
                log.info("leader lease released")
            except self.errors as exc:
                log.warning("could not release the leader lease (%s); it expires by itself", exc)
        self.value = None
        m.LEADER.set(0)

    def state(self) -> dict[str, Any]:
        role = "leader" if self.leading else "standby"
        holder = self.value if role == "leader" else self.holder
        return {"role": role, "leader": None if holder is None else _who(holder)}


def _who(value: str) -> str:
    """'<identity> pid <pid> token <t>' for logs: the lease value names no secret."""
    token, _, rest = value.partition(" ")
    identity, _, pid = rest.partition(" ")
    return f"{identity} (pid {pid}, token {token})"
