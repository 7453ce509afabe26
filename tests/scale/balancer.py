"""A tiny round-robin TCP load balancer on 127.0.0.1, for the scaled-topology tests.

Each accepted connection goes to the next backend in turn and is piped both ways until either side closes.
``counts[i]`` is the number of connections backend ``i`` received and ``sequence`` their order, so a test can
see that requests really landed on every web process.

HTTP clients keep connections alive (certbot's ``requests`` session sends everything over one), which would pin
a client to one backend. With ``one_request_per_connection`` (the default) the balancer adds
``Connection: close`` to the head of the first request of each connection: the web process answers it and
closes, the client opens a new connection for its next request, and that goes to the other backend — so the
requests of one client alternate. Only the request head is touched (up to its blank line); the body and the
response are passed through byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence

_MAX_HEAD = 64 * 1024


def _with_connection_close(head: bytes) -> bytes:
    """The request head (ending in CRLF CRLF) with any Connection header replaced by ``Connection: close``."""
    lines = head[:-4].split(b"\r\n")
    kept = [lines[0]] + [line for line in lines[1:] if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n"


class Balancer:
    """Round-robin over ``backends`` ((host, port) pairs); runs its event loop in a thread of its own."""

    def __init__(self, backends: Sequence[tuple[str, int]], *, one_request_per_connection: bool = True) -> None:
        self.backends = list(backends)
        self.one_request_per_connection = one_request_per_connection
        self.counts = [0] * len(self.backends)
        self.sequence: list[int] = []
        self.port = 0
        self._next = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="balancer")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Balancer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def reset_counts(self) -> None:
        with self._lock:
            self.counts = [0] * len(self.backends)
            self.sequence = []

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def _pick(self) -> int:
        with self._lock:
            index = self._next
            self._next = (self._next + 1) % len(self.backends)
            self.counts[index] += 1
            self.sequence.append(index)
            return index

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        backend_writer: asyncio.StreamWriter | None = None
        try:
            first = b""
            if self.one_request_per_connection:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                if len(head) > _MAX_HEAD:
                    return
                first = _with_connection_close(head)
            host, port = self.backends[self._pick()]
            try:
                backend_reader, backend_writer = await asyncio.open_connection(host, port)
            except OSError:
                return  # the backend is down: the client sees the connection close, as behind a real balancer
            if first:
                backend_writer.write(first)
            await asyncio.gather(self._pipe(reader, backend_writer), self._pipe(backend_reader, writer))
        finally:
            for stream in (writer, backend_writer):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if sink.can_write_eof():
                    sink.write_eof()
