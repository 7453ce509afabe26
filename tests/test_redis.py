"""The Redis nonce store (the scaled topology's default), on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pki_server.acme import nonces, problems
from tests.network import reachable

REDIS_DB = 13  # this module's own Redis database index
URL = f"redis://127.0.0.1:6379/{REDIS_DB}"

pytestmark = pytest.mark.skipif(not reachable("127.0.0.1", 6379), reason="Redis is not reachable on 127.0.0.1:6379")


@pytest.fixture
def client(settings: Any) -> Iterator[redis.Redis]:
    settings.PKI_REDIS_URL = URL
    client = redis.Redis.from_url(URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def test_a_nonce_is_spent_once_in_redis(settings: Any, client: redis.Redis) -> None:
    settings.PKI_ACME_NONCE_STORE = "redis"
    nonce = nonces.make()
    remaining = nonces.check(nonce)

    async def twice() -> str:
        await nonces.redeem_in_redis(nonce, remaining)
        try:
            await nonces.redeem_in_redis(nonce, remaining)
        except problems.AcmeProblem as problem:
            return problem.type
        return "spent twice"

    assert asyncio.run(twice()).endswith("badNonce")
    assert client.ttl(f"pki:acme:nonce:{nonce}") > remaining
