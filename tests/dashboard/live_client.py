"""An operator's side of the dashboard's live feed against a real server: a staff user made with the
server's own management commands, a sign-in over HTTP, and a websocket (the `websockets` library)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

WS_PATH = "/dashboard/ws/events/"


# What the overview page, and so its live feed, needs (pki_server/dashboard/views/access.py).
VIEW_PERMISSIONS = ["view_certificateauthority", "view_certificate", "view_acmeaccount"]


def create_staff_code(username: str, password: str) -> str:
    """Python for ``pki-server shell -c``: a staff user who may see the dashboard's overview."""
    return ("from django.contrib.auth.models import Permission, User; "
            f"user = User.objects.create_user({username!r}, password={password!r}, is_staff=True); "
            f"user.user_permissions.set(Permission.objects.filter(codename__in={VIEW_PERMISSIONS!r}))")


def login(base_url: str, username: str, password: str) -> str:
    """Sign in through the dashboard's login form; returns the session cookie's value."""
    with httpx.Client(base_url=base_url, timeout=15) as http:
        page = http.get("/dashboard/login/")
        assert page.status_code == 200, page.text
        response = http.post("/dashboard/login/", data={
            "username": username, "password": password, "csrfmiddlewaretoken": http.cookies["csrftoken"],
        }, headers={"Origin": base_url, "Referer": f"{base_url}/dashboard/login/"})
        assert response.status_code == 302, response.text
        return str(http.cookies["sessionid"])


def open_feed(base_url: str, session: str | None, *, origin: str | None = None) -> ClientConnection:
    """The live feed's websocket, as a browser showing ``base_url`` opens it."""
    headers = {"Origin": origin or base_url}
    if session is not None:
        headers["Cookie"] = f"sessionid={session}"
    url = "ws" + base_url.removeprefix("http") + WS_PATH
    return connect(url, additional_headers=headers, open_timeout=10, close_timeout=5)


def collect(feed: ClientConnection, until: Callable[[list[dict[str, Any]]], bool], timeout: float,
            context: Callable[[], str] = str) -> list[dict[str, Any]]:
    """Events of ``feed`` until ``until(events)`` holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    while not until(events):
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            events.append(json.loads(feed.recv(timeout=remaining)))
        except TimeoutError:
            raise AssertionError(f"not within {timeout} s; the events so far: {events}\n{context()}") from None
    return events


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["kind"] for event in events]
