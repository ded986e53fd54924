"""A TCP proxy on loopback that delays every chunk it forwards: a slow Redis or a slow
Postgres, for tests that check the app degrades without losing anything."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator


class LatencyProxy:
    """Forwards 127.0.0.1:<port> to `target`, waiting `delay` seconds before each chunk."""

    def __init__(self, target_host: str, target_port: int, *, delay: float) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="latency-proxy", daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        with contextlib.suppress(Exception):
            self._loop.run_forever()
        server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, client_reader, client_writer) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))

    def start(self) -> LatencyProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@contextlib.contextmanager
def latency_proxy(host: str, port: int, *, delay: float) -> Iterator[LatencyProxy]:
    proxy = LatencyProxy(host, port, delay=delay).start()
    try:
        yield proxy
    finally:
        proxy.stop()
