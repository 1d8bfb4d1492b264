"""A TCP proxy whose backend can be switched: the stand-in for a database endpoint.

RDS, Aurora and orchestrators move one address (a DNS name, a VIP) from the old
primary to the new one; every open connection to the old one dies.  ``switch``
does both: new connections go to the new backend, open ones are cut.  ``refuse``
is the moment in between, when the address leads nowhere.  Tests and benchmarks
only; it listens on 127.0.0.1.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from contextlib import suppress

from cachetail.devstack import free_port

Backend = tuple[str, int]


class TcpProxy:
    def __init__(self, backend: Backend | None, port: int | None = None, delay_s: float = 0.0) -> None:
        """``delay_s``: what either side sends reaches the other this much later (a replica
        behind a proxy to its primary lags by it, whatever the write rate; a Redis behind it
        is that much further away each way)."""
        self.backend = backend
        self.delay_s = delay_s
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server((self.host, self.port), reuse_port=False)
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def switch(self, backend: Backend | None) -> None:
        """New connections go to ``backend`` (None: refused); every open one is cut."""
        with self._lock:
            self.backend = backend
        self.cut()

    def refuse(self) -> None:
        self.switch(None)

    def cut(self) -> None:
        with self._lock:
            victims, self._open = self._open, set()
        for sock in victims:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                sock.close()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._open) // 2

    def close(self) -> None:
        self._closed = True
        with suppress(OSError):
            self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                backend = self.backend
            try:
                if backend is None:
                    raise OSError("no backend")
                upstream = socket.create_connection(backend, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self.backend != backend:  # switched while connecting
                    client.close()
                    upstream.close()
                    continue
                self._open |= {client, upstream}
            for src, dst, delay in ((client, upstream, self.delay_s), (upstream, client, self.delay_s)):
                threading.Thread(target=self._pump, args=(src, dst, delay), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay_s: float = 0.0) -> None:
        late: queue.Queue[tuple[float, bytes]] | None = None
        if delay_s:
            late = queue.Queue()
            threading.Thread(target=self._deliver, args=(late, src, dst), daemon=True).start()
        try:
            while data := src.recv(65536):
                if late is None:
                    dst.sendall(data)
                else:
                    late.put((time.monotonic() + delay_s, data))
        except OSError:
            pass
        finally:
            if late is None:
                self._close(src, dst)
            else:
                late.put((0.0, b""))  # the deliverer closes both once the rest is out

    def _deliver(self, late: queue.Queue[tuple[float, bytes]], src: socket.socket, dst: socket.socket) -> None:
        """Send what ``src`` sent, each chunk once its delay has passed, in order."""
        try:
            while (item := late.get())[1]:
                time.sleep(max(0.0, item[0] - time.monotonic()))
                dst.sendall(item[1])
        except OSError:
            pass
        finally:
            self._close(src, dst)

    def _close(self, src: socket.socket, dst: socket.socket) -> None:
        with self._lock:
            self._open -= {src, dst}
        for sock in (src, dst):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                sock.close()
