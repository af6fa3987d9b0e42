"""A loopback TCP proxy whose connections a test can cut, to break a live stream the way a network does."""

from __future__ import annotations

import asyncio
import contextlib


class CuttableProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target``; :meth:`cut` aborts every open connection (both
    sides, no FIN: a reset), and :attr:`first_bytes` keeps what each connection sent first (its request)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.first_bytes: list[bytes] = []
        self._open: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        self._open.append((client_w, up_w))
        first = await client_r.read(65536)
        self.first_bytes.append(first)
        up_w.write(first)
        await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    def cut(self) -> None:
        for a, b in self._open:
            a.transport.abort()
            b.transport.abort()
        self._open.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
