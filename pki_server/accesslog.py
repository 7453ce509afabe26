"""The access log of ``pki-server serve``: one line per HTTP request, on standard output.

``2026-11-29T08:48:58Z 127.0.0.1:43568 "POST /acme/ca/order/x HTTP/1.1" 200 1.4ms``: when the
response started (UTC), the client (after uvicorn's ``--forwarded-allow-ips`` handling), the
request line, the status (``-`` when the client went away before any response) and the time to
the response's start.

It replaces uvicorn's access log, which goes through the ``logging`` module: a ``LogRecord``, a
caller lookup, a formatter copying the record, a lock and a flush per line. That cost about 110 µs
per request on a 2-core machine, as much as uvicorn's own parsing and routing of a newNonce
request (docs/performance.md). Here a line is one string, and the lines of one event-loop
iteration are written and flushed together right after it, so a line is out within one iteration
of its response. Off unless ``serve`` turns it on (``--no-access-log`` or a log level above info
keep it off).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import IO, Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class AccessLog:
    """Lines waiting for the end of the event loop's iteration, and where they go."""

    def __init__(self) -> None:
        self.stream: IO[str] | None = None  # None: off
        self.pending: list[str] = []
        self._second = -1
        self._stamp = ""

    def enable(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def disable(self) -> None:
        self.flush()
        self.stream = None

    def stamp(self) -> str:
        """The current second as ``2026-11-29T08:48:58Z``, formatted once per second."""
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        return self._stamp

    def write(self, line: str) -> None:
        self.pending.append(line)
        if len(self.pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a synchronous caller): now
                self.flush()

    def flush(self) -> None:
        lines, self.pending = self.pending, []
        stream = self.stream
        if not lines or stream is None:
            return
        try:
            stream.write("".join(lines))
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stdout must not take a request down
            pass

    def line(self, scope: Scope, status: int, started: float) -> str:
        client = scope.get("client")
        where = f"{client[0]}:{client[1]}" if client else "-"
        query = scope.get("query_string")
        raw = scope.get("raw_path")  # the target as sent (percent-encoded); ASGI makes it optional
        target = raw.decode("latin-1") if raw else scope["path"]
        if query:
            target = f"{target}?{query.decode('latin-1')}"
        request = f"{scope['method']} {target} HTTP/{scope.get('http_version', '1.1')}"
        if not request.isprintable() or '"' in request:  # no terminal escapes, and one line parses as one line
            request = request.encode("unicode_escape").decode("ascii").replace('"', '\\"')
        milliseconds = (time.perf_counter() - started) * 1000
        return f'{self.stamp()} {where} "{request}" {status or "-"} {milliseconds:.1f}ms\n'


log = AccessLog()


def logged(app: App) -> App:
    """``app`` with a line in the access log for each HTTP request (nothing else when it is off)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if log.stream is None or scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                log.write(log.line(scope, status, started))
            await send(message)

        try:
            await app(scope, receive, send_logged)
        except Exception:
            if not status:  # uvicorn answers 500 for it
                log.write(log.line(scope, 500, started))
            raise
        if not status:  # the client went away before the response
            log.write(log.line(scope, 0, started))

    return wrapped
