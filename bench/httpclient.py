"""A keep-alive HTTP/1.1 client over raw asyncio streams: the load generator's connection,
also used by the benchmarks that poll one URL (freshness, targets)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass


class HttpError(RuntimeError):
    """The server closed the connection or sent something that is not HTTP/1.1."""


@dataclass
class Response:
    status: int
    cache: str  # X-Cache value, "" when absent
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection; ``get`` sends a GET and reads the whole answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
            self._writer = None

    async def get(self, path: str, headers: str = "") -> Response:
        if self._writer is None:
            await self.open()
        assert self._reader is not None and self._writer is not None
        self._writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}\r\n".encode())
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            raise HttpError(f"connection closed: {exc}") from None
        return await self._read_rest(head)

    async def _read_rest(self, head: bytes) -> Response:
        assert self._reader is not None
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP response: {lines[0][:40]!r}")
        status = int(lines[0][9:12])
        length, chunked, cache, close = 0, False, "", False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-cache":
                cache = value.strip().decode()
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        body = await (self._chunked() if chunked else self._reader.readexactly(length))
        if close:
            await self.close()
        return Response(status, cache, body)

    async def _chunked(self) -> bytes:
        assert self._reader is not None
        parts = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)
