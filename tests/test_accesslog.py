"""The access log (pki_server/accesslog.py): one line per HTTP request, written after the loop's iteration."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import pytest

from pki_server import accesslog

LINE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (?P<client>\S+) "(?P<request>(?:[^"\\]|\\.)*)" '
                  r"(?P<status>\d{3}|-) \d+\.\dms$")


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


@pytest.fixture
def stream() -> Any:
    stream = CountingStream()
    accesslog.log.enable(stream)
    yield stream
    accesslog.log.disable()


def scope(path: str = "/acme/ca/order/abc", **extra: Any) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
            "http_version": "1.1", "client": ("192.0.2.7", 40001), **extra}


def respond(status: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
    return app


async def call(app: Any, request_scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await accesslog.logged(app)(request_scope, receive, send)
    return sent


def lines(stream: CountingStream) -> list[re.Match[str]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    matches = [LINE.match(line) for line in text.splitlines()]
    assert all(matches), text
    return matches  # type: ignore[return-value]


async def test_a_line_per_request_with_client_request_line_and_status(stream: CountingStream) -> None:
    sent = await call(respond(201), scope(query_string=b"x=1"))
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]  # passed on as is
    assert stream.getvalue() == ""  # written once the loop's iteration is over
    await asyncio.sleep(0)
    [line] = lines(stream)
    assert line["client"] == "192.0.2.7:40001"
    assert line["request"] == "POST /acme/ca/order/abc?x=1 HTTP/1.1"
    assert line["status"] == "201"


async def test_the_lines_of_one_iteration_are_written_together(stream: CountingStream) -> None:
    app = respond(200)
    await asyncio.gather(*(call(app, scope(f"/acme/ca/authz/{index}")) for index in range(5)))
    await asyncio.sleep(0)
    expected = [f"POST /acme/ca/authz/{index} HTTP/1.1" for index in range(5)]
    assert [line["request"] for line in lines(stream)] == expected
    assert (stream.writes, stream.flushes) == (1, 1)
    await call(app, scope())
    await asyncio.sleep(0)
    assert (stream.writes, stream.flushes) == (2, 2)


async def test_an_exception_is_logged_as_500_and_raised(stream: CountingStream) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await call(broken, scope())
    await asyncio.sleep(0)
    assert lines(stream)[0]["status"] == "500"


async def test_no_response_is_a_dash(stream: CountingStream) -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    await call(silent, scope(client=None))
    await asyncio.sleep(0)
    [line] = lines(stream)
    assert (line["client"], line["status"]) == ("-", "-")


async def test_quotes_and_control_characters_are_escaped(stream: CountingStream) -> None:
    await call(respond(404), scope('/a"b\x1b[31mc'))
    await asyncio.sleep(0)
    [line] = lines(stream)
    assert line["request"] == 'POST /a\\"b\\x1b[31mc HTTP/1.1'
    assert "\x1b" not in stream.getvalue()


async def test_without_raw_path_the_decoded_path_is_logged(stream: CountingStream) -> None:
    request_scope = scope("/acme/ca/authz/é")
    del request_scope["raw_path"]
    await call(respond(200), request_scope)
    await asyncio.sleep(0)
    [line] = lines(stream)
    assert line["request"] == "POST /acme/ca/authz/é HTTP/1.1"


async def test_off_writes_nothing_and_leaves_the_app_alone() -> None:
    accesslog.log.disable()
    calls: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(send)

    async def send(message: dict[str, Any]) -> None:
        pass

    await accesslog.logged(app)(scope(), send, send)
    assert calls == [send]  # not wrapped


async def test_websockets_are_not_logged(stream: CountingStream) -> None:
    await call(respond(200), {"type": "websocket", "path": "/ws/events"})
    await asyncio.sleep(0)
    assert stream.getvalue() == ""


def test_without_a_running_loop_a_line_is_written_at_once(stream: CountingStream) -> None:
    accesslog.log.write("a line\n")
    assert stream.getvalue() == "a line\n"
