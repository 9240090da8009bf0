"""A TCP relay in front of a node's API: the node's address as the engine sees it, which a test can
take down (refuse and drop connections), bring back, or point at another server.

Why: outages and dead nodes must be tested on the wire, as the engine meets them: a refused
connection, a connection cut under a request. The relay passes bytes through untouched (TLS is
end to end between the engine and fakepve), so certificate checks stay real.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class _Link:
    """One client connection and its upstream."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter):
        self.client = client
        self.upstream = upstream

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class Relay:
    """A node's address: a TCP relay to ``target`` that can die (refuse new connections, drop open
    ones), come back, or be switched to another server (a machine in the middle)."""

    def __init__(self, host: str, target: tuple[str, int]):
        self.host = host
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = 0
        self.cut = 0  # connections cut by outages so far
        self._server: asyncio.AbstractServer | None = None
        self._links: set[_Link] = set()
        self._run(self._listen())

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links.discard(link)

    async def _drop(self) -> None:
        for link in list(self._links):
            self._links.discard(link)
            self.cut += 1
            link.abort()

    def down(self) -> None:
        """The node's API dies: new connections are refused and open ones are cut (reset)."""

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            await self._drop()

        self._run(stop())

    def up(self) -> None:
        if self._server is None:
            self._run(self._listen())

    def switch(self, target: tuple[str, int]) -> None:
        """From now on connections go to ``target``; open ones are cut."""
        self.target = target
        self._run(self._drop())

    def close(self) -> None:
        self.down()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
