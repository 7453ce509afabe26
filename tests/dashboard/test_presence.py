"""presence.py: events are built and sent only while a dashboard can be listening."""

from __future__ import annotations

import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from pki_server.core.models import CertificateAuthority
from pki_server.dashboard import events, presence
from tests.fixtures import make_csr
from tests.network import reachable

REDIS_DB = 14  # this test's own Redis database index


def redis_reachable() -> bool:
    return reachable("127.0.0.1", 6379)


@pytest.fixture
def redis_settings(settings: Any) -> Any:
    import redis

    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    settings.PKI_REDIS_URL = url
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": [url]}}}
    client = redis.Redis.from_url(url)
    client.flushdb()
    presence.forget()
    presence._client = None
    yield client
    client.flushdb()
    client.close()
    presence.forget()
    presence._client = None


def test_in_memory_layer_listens_when_the_group_has_members(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    layer = get_channel_layer()
    assert not presence.somebody_listens(events.GROUP)
    async_to_sync(layer.group_add)(events.GROUP, "test.presence")
    try:
        assert presence.somebody_listens(events.GROUP)
    finally:
        async_to_sync(layer.group_discard)(events.GROUP, "test.presence")


@pytest.mark.skipif(not redis_reachable(), reason="Redis is not reachable on 127.0.0.1:6379")
def test_redis_layer_listens_while_a_websocket_keeps_the_key(redis_settings: Any) -> None:
    assert not presence.somebody_listens(events.GROUP)
    async_to_sync(presence.announce)()  # what a connected websocket does
    assert 0 < redis_settings.ttl(presence.LISTENING_KEY) <= presence.KEY_TTL_SECONDS
    deadline = time.monotonic() + 3 * presence.CHECK_SECONDS
    while not presence.somebody_listens(events.GROUP) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert presence.somebody_listens(events.GROUP)
    redis_settings.delete(presence.LISTENING_KEY)  # the last dashboard went away, its key expired
    presence.forget()
    assert not presence.somebody_listens(events.GROUP)


@pytest.mark.skipif(not redis_reachable(), reason="Redis is not reachable on 127.0.0.1:6379")
@pytest.mark.django_db
def test_nobody_listening_costs_no_event(redis_settings: Any, intermediate: CertificateAuthority,
                                         django_capture_on_commit_callbacks: Any) -> None:
    from pki_server.core.models import Certificate

    with django_capture_on_commit_callbacks() as callbacks:
        Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=quiet.example.com")
    assert callbacks == []  # no event built, nothing sent
    async_to_sync(presence.announce)()
    presence.forget()
    with django_capture_on_commit_callbacks() as callbacks:
        Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=heard.example.com")
    assert len(callbacks) == 1
