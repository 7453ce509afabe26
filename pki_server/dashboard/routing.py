"""Websocket routing of the dashboard (channels' URLRouter; pki_server/asgi.py mounts it)."""

from __future__ import annotations

from typing import Any

from django.urls import path, re_path

from pki_server.dashboard.consumers import LiveEventsConsumer


async def no_such_websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Refuse the handshake of any other path (the server answers 403), instead of URLRouter's exception."""
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 1000})


websocket_urlpatterns = [
    path("dashboard/ws/events/", LiveEventsConsumer.as_asgi()),
    re_path(r"", no_such_websocket),  # type: ignore[arg-type]
]
