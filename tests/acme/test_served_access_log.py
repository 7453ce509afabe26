"""`pki-server serve` writes its access log (pki_server/accesslog.py) to standard output."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.acme.server import PkiServer
from tests.test_accesslog import LINE


def test_serve_logs_each_request_once(pki_server: PkiServer) -> None:
    marker = uuid.uuid4().hex
    response = httpx.get(f"{pki_server.directory_url}?{marker}", timeout=10)
    assert response.status_code == 200
    missing = httpx.get(f"{pki_server.base_url}/acme/no-such-ca/{marker}", timeout=10)
    deadline = time.monotonic() + 5
    found: list[str] = []
    while time.monotonic() < deadline and len(found) < 2:
        found = [line for line in pki_server.log_path.read_text().splitlines() if marker in line]
        time.sleep(0.05)
    matches = [LINE.match(line) for line in found]
    assert all(matches), found
    assert [(match["request"], match["status"]) for match in matches if match] == [
        (f"GET /acme/directory?{marker} HTTP/1.1", "200"),
        (f"GET /acme/no-such-ca/{marker} HTTP/1.1", str(missing.status_code)),
    ]
    assert all(match["client"].startswith("127.0.0.1:") for match in matches if match)
    assert not [line for line in found if "INFO:" in line]  # uvicorn's own access log is off
