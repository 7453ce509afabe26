"""One asyncio Redis client per event loop, from PKI_REDIS_URL."""

from __future__ import annotations

import asyncio
import weakref

import redis.asyncio as aioredis
from django.conf import settings

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def get_redis() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        if not settings.PKI_REDIS_URL:
            raise RuntimeError("PKI_REDIS_URL is not set.")
        client = aioredis.Redis.from_url(settings.PKI_REDIS_URL)
        _clients[loop] = client
    return client
