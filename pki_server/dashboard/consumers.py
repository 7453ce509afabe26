"""The websocket of the dashboard's live feed (``/dashboard/ws/events/``).

Only an authenticated, active staff user (the Django session of the dashboard's login, resolved by
channels' ``AuthMiddlewareStack``) with the permissions of the overview page, where the feed is shown
(views/access.py), is let in; anyone else's connection is accepted only to be closed
at once with code 4403, so that the page can tell "not allowed" from a network failure and stop
retrying. An admitted connection joins the channel-layer group ``dashboard`` and gets every event of
events.py as one JSON text message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from pki_server.dashboard import presence
from pki_server.dashboard.events import GROUP
from pki_server.dashboard.views.access import VIEW_ACCOUNT, VIEW_CA, VIEW_CERTIFICATE

FORBIDDEN = 4403  # the application close code of a refused connection (4000-4999 are the application's)
# channels_redis forgets a group membership after a day (its group_expiry); re-joining every hour keeps
# a dashboard that stays open for days listening.
REJOIN_INTERVAL = 3600.0
PERMISSIONS = (VIEW_CA, VIEW_CERTIFICATE, VIEW_ACCOUNT)  # the overview page's: events name CAs, certificates, accounts


@database_sync_to_async
def may_listen(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff
                and user.has_perms(PERMISSIONS))


class LiveEventsConsumer(AsyncJsonWebsocketConsumer):
    joined = False
    rejoin: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        if not await may_listen(self.scope.get("user")):
            await self.accept()
            await self.close(code=FORBIDDEN)
            return
        # Joined before the handshake completes: an event sent once the browser sees "open" reaches it.
        await self.channel_layer.group_add(GROUP, self.channel_name)
        self.joined = True
        with contextlib.suppress(Exception):  # without it events still flow, only from up to 0.5 s later
            await presence.announce()
        self.rejoin = asyncio.create_task(self.keep_joined())
        await self.accept()

    async def keep_joined(self) -> None:
        """Re-join the group hourly, and tell publishers every REFRESH_SECONDS that a dashboard listens."""
        last_join = time.monotonic()
        while True:
            await asyncio.sleep(presence.REFRESH_SECONDS)
            with contextlib.suppress(Exception):
                await presence.announce()
            if time.monotonic() - last_join >= REJOIN_INTERVAL:
                last_join = time.monotonic()
                with contextlib.suppress(Exception):
                    await self.channel_layer.group_add(GROUP, self.channel_name)

    async def disconnect(self, code: int) -> None:
        if self.rejoin is not None:
            self.rejoin.cancel()
        if self.joined:
            self.joined = False
            await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        """The feed is one-way: whatever the browser sends is ignored (not even decoded)."""

    async def dashboard_event(self, message: dict[str, Any]) -> None:
        """A ``dashboard.event`` of the group: forward its event to the browser."""
        await self.send_json(message["event"])
