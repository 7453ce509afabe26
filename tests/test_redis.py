"""The Redis nonce store (the scaled topology's default), on a real Redis."""

from __future__ import annotations

import asyncio
import time
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


def test_worker_wake_ups_go_through_a_bounded_redis_list(client: redis.Redis,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Scaled: dispatch() LPUSHes, the worker BRPOPs the oldest first; a list nobody empties stays bounded."""
    from pki_server.acme import worker

    monkeypatch.setattr(worker, "WORK_KEY_MAX", 3)

    async def main() -> list[Any]:
        for pk in range(5):
            await worker.dispatch("validate", pk)
        assert client.llen(worker.WORK_KEY) == 3  # the two oldest were dropped: the sweeper sends them again
        received = [await worker._receive_from_redis() for _ in range(3)]
        client.lpush(worker.WORK_KEY, b"not json", b"[1]")
        received += [await worker._receive_from_redis() for _ in range(2)]
        received.append(await worker._receive_from_redis())  # empty: None after RECEIVE_WAIT
        return received

    received = asyncio.run(main())
    assert received[:3] == [{"type": "acme.validate", "id": pk} for pk in (2, 3, 4)]
    assert received[3:] == [{"malformed": b"not json"}, {"malformed": [1]}, None]


def test_the_worker_takes_its_work_from_the_redis_list(client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    from pki_server.acme import worker

    handled: list[dict[str, Any]] = []

    async def handle(self: worker.Worker, message: dict[str, Any]) -> None:
        handled.append(message)

    monkeypatch.setattr(worker.Worker, "handle", handle)

    async def main() -> None:
        running = asyncio.ensure_future(worker.Worker(sweep=False).run())
        try:
            await worker.dispatch("issue", 7)
            for _ in range(100):  # bounded: 5 s
                if handled:
                    break
                await asyncio.sleep(0.05)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    asyncio.run(main())
    assert handled == [{"type": "acme.issue", "id": 7}]
    assert client.llen(worker.WORK_KEY) == 0


def test_a_stop_stops_the_worker_even_if_redis_py_swallows_the_cancellation(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py can end a command normally when a cancellation lands mid-command (seen with BRPOP):
    the worker must notice the pending cancellation and stop, not receive forever."""
    from pki_server.acme import worker

    swallow_until = time.monotonic() + 5  # then let go: a regression fails the test, not hangs it

    async def swallowing_receive() -> None:
        if time.monotonic() > swallow_until:
            raise asyncio.CancelledError
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            return None  # what redis-py did: the command returned, the cancellation gone
        return None

    monkeypatch.setattr(worker, "_receive_from_redis", swallowing_receive)

    async def main() -> bool:
        running = asyncio.ensure_future(worker.Worker(sweep=False).run())
        await asyncio.sleep(0.2)
        running.cancel()
        done, _ = await asyncio.wait([running], timeout=3)
        return bool(done) and running.cancelled()

    assert asyncio.run(main())


def test_a_finalize_waits_for_the_worker_that_issues_its_order(client: redis.Redis,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Scaled: notify_issued's word reaches wait_issued whether it comes before or during the wait, it is
    kept only ISSUED_TTL, and a wait without it ends after FINALIZE_WAIT."""
    from pki_server.acme import worker

    monkeypatch.setattr(worker, "FINALIZE_WAIT", 0.3)

    async def main() -> tuple[bool, bool, bool, float]:
        await worker.notify_issued(1)  # the worker was quicker than the finalize's wait
        before = await worker.wait_issued(1)
        waiting = asyncio.ensure_future(worker.wait_issued(2))
        await asyncio.sleep(0.1)
        await worker.notify_issued(2)
        during = await waiting
        started = time.monotonic()
        never = await worker.wait_issued(3)
        return before, during, never, time.monotonic() - started

    before, during, never, waited = asyncio.run(main())
    assert (before, during, never) == (True, True, False)
    assert 0.25 <= waited < 2
    assert client.exists("pki:acme:issued:1", "pki:acme:issued:2") == 0  # each word taken by its waiter
    asyncio.run(worker.notify_issued(4))  # nobody waits: the word expires
    assert 0 < client.ttl("pki:acme:issued:4") <= worker.ISSUED_TTL


def test_a_finalize_does_not_wait_when_too_many_do(client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each wait holds a Redis connection: past MAX_WAITING a finalize answers "processing" at once."""
    from pki_server.acme import worker

    monkeypatch.setattr(worker, "MAX_WAITING", 2)

    async def main() -> list[bool]:
        waits = [asyncio.ensure_future(worker.wait_issued(pk)) for pk in (1, 2)]
        await asyncio.sleep(0.1)
        third = await asyncio.wait_for(worker.wait_issued(3), 0.5)  # refused at once, though issued below
        for pk in (1, 2, 3):
            await worker.notify_issued(pk)
        return [*await asyncio.gather(*waits), third, await worker.wait_issued(3)]

    assert asyncio.run(main()) == [True, True, False, True]
    assert worker._waiting == 0


def test_a_redis_that_stops_answering_does_not_hold_a_finalize(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that takes the connection and never answers: the wait ends about a second after FINALIZE_WAIT."""
    from pki_server.acme import worker

    monkeypatch.setattr(worker, "FINALIZE_WAIT", 0.2)

    async def main() -> tuple[bool, float]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)  # the command arrives; no answer ever goes back
            await asyncio.sleep(30)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings.PKI_REDIS_URL = f"redis://127.0.0.1:{port}/0"
        try:
            started = time.monotonic()
            return await worker.wait_issued(1), time.monotonic() - started
        finally:
            server.close()

    answered, waited = asyncio.run(main())
    assert answered is False
    assert 1.0 <= waited < 5
