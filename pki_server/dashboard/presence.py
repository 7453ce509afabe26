"""Whether any dashboard is listening, so that nobody pays for events nobody sees.

With the in-memory channel layer (the embedded server) the group itself tells. With a shared
(Redis) layer it cannot cheaply, and publishing an event costs a query and two Redis round trips —
a quarter of the scaled topology's CPU per ACME order when measured (docs/performance.md). So a
connected websocket keeps a Redis key alive (``LISTENING_KEY``, set on connect and every
``REFRESH_SECONDS``, expiring after ``KEY_TTL_SECONDS``), and publishers look at it at most every
``CHECK_SECONDS`` while nobody listens (every ``LISTENING_CHECK_SECONDS`` once somebody does).
A browser that connects therefore sees events from at most half a second later on.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

log = logging.getLogger(__name__)

LISTENING_KEY = "pki:dashboard:listening"
KEY_TTL_SECONDS = 60
REFRESH_SECONDS = 20.0
CHECK_SECONDS = 0.5  # while nobody listens
LISTENING_CHECK_SECONDS = 5.0  # while somebody does

_state: dict[str, Any] = {"checked": -1e9, "listening": True}
_lock = threading.Lock()
_client: Any = None


def _sync_redis() -> Any:
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(str(settings.PKI_REDIS_URL), socket_timeout=1, socket_connect_timeout=1)
    return _client


def somebody_listens(group: str) -> bool:
    """False only when no dashboard can be listening (a wrong True merely costs a publish)."""
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        return bool(layer.groups.get(group))
    if not settings.PKI_REDIS_URL:
        return True
    now = time.monotonic()
    with _lock:
        wait = LISTENING_CHECK_SECONDS if _state["listening"] else CHECK_SECONDS
        if now - _state["checked"] < wait:
            return bool(_state["listening"])
        _state["checked"] = now
    try:
        listening = bool(_sync_redis().exists(LISTENING_KEY))
    except Exception:
        log.warning("Could not ask Redis whether a dashboard listens; publishing anyway.", exc_info=True)
        listening = True
    with _lock:
        _state["listening"] = listening
    return listening


async def announce() -> None:
    """A dashboard listens in this process: keep the key alive (from the websocket's event loop)."""
    if not settings.PKI_REDIS_URL:
        return
    from pki_server.redis import get_redis

    await get_redis().set(LISTENING_KEY, b"1", ex=KEY_TTL_SECONDS)


def forget() -> None:
    """For tests: look again at the next event."""
    with _lock:
        _state.update(checked=-1e9, listening=True)
