"""The order state machine (RFC 8555 §7.1.6) and the worker's leases, in-process on the real app."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from pki_server.acme import orders
from pki_server.acme.models import AcmeAuthorization, AcmeChallenge, AcmeOrder
from pki_server.asgi import application
from pki_server.core.models import Certificate, CertificateAuthority
from tests.acme.asgi_client import AsgiAcmeClient
from tests.acme.test_query_counts import csr_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(intermediate: CertificateAuthority, settings) -> AsgiAcmeClient:  # type: ignore[no-untyped-def]
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.PKI_REDIS_URL = None
    acme = AsgiAcmeClient(application)
    acme.new_account()
    return acme


def order_for(client: AsgiAcmeClient, *names: str) -> dict:  # type: ignore[type-arg]
    response = client.post("new-order", {"identifiers": [{"type": "dns", "value": n} for n in names]})
    assert response.status_code == 201, response.text
    return {"url": response.headers["Location"], **response.json()}


def validate_all(valid: bool = True) -> None:
    """What the worker records after validating every pending http-01 challenge."""
    for challenge in AcmeChallenge.objects.filter(type="http-01", status="pending"):
        assert orders.start_challenge(challenge)
        error = None if valid else {"type": "urn:ietf:params:acme:error:connection", "detail": "refused"}
        assert orders.finish_validation(challenge.pk, valid, [], error)


def test_pending_ready_processing_valid(client: AsgiAcmeClient) -> None:
    order = order_for(client, "a.example.com", "b.example.com")
    assert order["status"] == "pending"
    validate_all()
    assert client.post(order["url"]).json()["status"] == "ready"
    response = client.post(order["finalize"], {"csr": csr_for("a.example.com", "b.example.com")})
    assert response.json()["status"] == "processing" and response.headers["Retry-After"] == "1"
    pk = AcmeOrder.objects.get().pk
    assert orders.claim(AcmeOrder, pk, timedelta(seconds=60))
    orders.issue(pk)
    body = client.post(order["url"]).json()
    assert body["status"] == "valid" and body["certificate"].endswith(f"/cert/{order['url'].rsplit('/', 1)[1]}")
    assert Certificate.objects.get().sans == "DNS:a.example.com,DNS:b.example.com"


def test_invalid_challenge_invalidates_authorization_and_order(client: AsgiAcmeClient) -> None:
    order = order_for(client, "c.example.com")
    validate_all(valid=False)
    body = client.post(order["url"]).json()
    # The order's error is the failed challenge's problem (RFC 8555 §7.1.3), naming the identifier.
    assert body["status"] == "invalid" and body["error"]["type"] == "urn:ietf:params:acme:error:connection"
    assert body["error"]["detail"] == "The validation of c.example.com failed: refused"
    authz = client.post(order["authorizations"][0]).json()
    assert authz["status"] == "invalid"
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    assert challenge["status"] == "invalid" and challenge["error"]["detail"] == "refused"


def test_valid_authorization_is_reused(client: AsgiAcmeClient) -> None:
    first = order_for(client, "d.example.com")
    validate_all()
    second = order_for(client, "d.example.com")
    assert second["status"] == "ready" and second["authorizations"] == first["authorizations"]
    # Another account gets an authorization of its own.
    other = AsgiAcmeClient(application)
    other.new_account()
    third = order_for(other, "d.example.com")
    assert third["status"] == "pending" and third["authorizations"] != first["authorizations"]


def test_expiry(client: AsgiAcmeClient) -> None:
    order = order_for(client, "e.example.com")
    past = timezone.now() - timedelta(seconds=1)
    AcmeAuthorization.objects.update(expires=past)
    assert client.post(order["authorizations"][0]).json()["status"] == "expired"
    body = client.post(order["url"]).json()
    assert body["status"] == "invalid"
    # An expired authorization is not reused: a new order gets a new one.
    assert order_for(client, "e.example.com")["authorizations"] != order["authorizations"]

    AcmeOrder.objects.update(expires=past)
    latest = AcmeOrder.objects.order_by("-pk").first()
    assert client.post(f"{client.prefix}/order/{latest.slug}").json()["status"] == "invalid"


def test_deactivated_authorization_invalidates_order(client: AsgiAcmeClient) -> None:
    order = order_for(client, "f.example.com")
    response = client.post(order["authorizations"][0], {"status": "deactivated"})
    assert response.status_code == 200 and response.json()["status"] == "deactivated"
    assert client.post(order["url"]).json()["status"] == "invalid"
    again = client.post(order["authorizations"][0], {"status": "deactivated"})
    assert again.status_code == 400 and "deactivated" in again.json()["detail"]


def test_failed_issuance_marks_order_invalid(client: AsgiAcmeClient, intermediate: CertificateAuthority) -> None:
    order = order_for(client, "g.example.com")
    validate_all()
    assert client.post(order["finalize"], {"csr": csr_for("g.example.com")}).json()["status"] == "processing"
    CertificateAuthority.objects.filter(pk=intermediate.pk).update(enabled=False)
    pk = AcmeOrder.objects.get().pk
    assert orders.claim(AcmeOrder, pk, timedelta(seconds=60))
    assert orders.issue(pk).status == "invalid"
    stored = AcmeOrder.objects.get()
    assert stored.error["type"] == "urn:ietf:params:acme:error:serverInternal"
    assert "disabled" in stored.error["detail"]
    assert not Certificate.objects.exists()


def test_leases_and_sweeper(client: AsgiAcmeClient) -> None:
    order_for(client, "h.example.com")
    challenge = AcmeChallenge.objects.get(type="http-01")
    assert orders.start_challenge(challenge)
    assert not orders.start_challenge(AcmeChallenge.objects.get(pk=challenge.pk))  # no second dispatch

    # A wake-up that never arrived: after the grace period the sweeper sends it again.
    assert orders.stale_work(AcmeChallenge, timedelta(seconds=15)) == []
    AcmeChallenge.objects.filter(pk=challenge.pk).update(processing_since=timezone.now() - timedelta(seconds=20))
    assert orders.stale_work(AcmeChallenge, timedelta(seconds=15)) == [challenge.pk]

    # Only one worker holds the lease; a worker that died loses it when it runs out.
    assert orders.claim(AcmeChallenge, challenge.pk, timedelta(seconds=60))
    assert not orders.claim(AcmeChallenge, challenge.pk, timedelta(seconds=60))
    assert orders.stale_work(AcmeChallenge, timedelta(seconds=15)) == []
    AcmeChallenge.objects.filter(pk=challenge.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert orders.stale_work(AcmeChallenge, timedelta(seconds=15)) == [challenge.pk]
    assert orders.claim(AcmeChallenge, challenge.pk, timedelta(seconds=60))

    # The outcome is stored once; a late duplicate changes nothing.
    assert orders.finish_validation(challenge.pk, True, [], None)
    assert not orders.finish_validation(challenge.pk, False, [], {"detail": "late"})
    assert AcmeChallenge.objects.get(pk=challenge.pk).status == "valid"


def test_the_sweeper_finds_stale_work_through_an_index() -> None:
    """stale_work runs every few seconds; scanning every challenge and order ever made grew with the database
    (22 ms every 5 s with 300,000 challenges, on the event loop's thread with SQLite)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        orders.stale_work(AcmeChallenge, timedelta(seconds=15))
        orders.stale_work(AcmeOrder, timedelta(seconds=15))
    assert len(queries.captured_queries) == 2
    for query in queries.captured_queries:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + query["sql"])
            plan = " / ".join(str(row[-1]) for row in cursor.fetchall())
        assert "USING INDEX" in plan and "SCAN pki_acme" not in plan, plan


def test_release_hands_work_back(client: AsgiAcmeClient) -> None:
    order_for(client, "i.example.com")
    challenge = AcmeChallenge.objects.get(type="http-01")
    assert orders.start_challenge(challenge)
    assert orders.claim(AcmeChallenge, challenge.pk, timedelta(seconds=60))
    orders.release(AcmeChallenge, challenge.pk)
    assert orders.stale_work(AcmeChallenge, timedelta(seconds=15)) == [challenge.pk]
    assert orders.claim(AcmeChallenge, challenge.pk, timedelta(seconds=60))


async def test_stopping_worker_releases_its_validation(intermediate: CertificateAuthority, settings) -> None:  # type: ignore[no-untyped-def]
    """A worker stopped mid-validation gives the challenge back at once, not when its lease ends."""
    import asyncio

    from asgiref.sync import sync_to_async

    from pki_server.acme.validation.base import ValidationConfig
    from pki_server.acme.worker import validate

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings.ALLOWED_HOSTS = ["testserver"]

    def prepare() -> int:
        acme = AsgiAcmeClient(application)
        acme.new_account()
        order_for(acme, "127.0.0.1.nip.example")
        challenge = AcmeChallenge.objects.get(type="http-01")
        assert orders.start_challenge(challenge)
        return challenge.pk

    challenge_id = await sync_to_async(prepare, thread_sensitive=False)()
    # The identifier is an IP literal for the validator: no DNS needed.
    await sync_to_async(
        lambda: AcmeAuthorization.objects.update(identifier="127.0.0.1"), thread_sensitive=False
    )()
    config = ValidationConfig(http01_port=port, deny_networks=(), total_timeout=20)
    task = asyncio.create_task(validate(challenge_id, config))
    async with asyncio.timeout(10):
        while not await sync_to_async(
            lambda: AcmeChallenge.objects.filter(pk=challenge_id, lease_until__isnull=False).exists(),
            thread_sensitive=False,
        )():
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the validator is now waiting on the silent server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    server.close()
    stale = await sync_to_async(orders.stale_work, thread_sensitive=False)(AcmeChallenge, timedelta(seconds=15))
    assert stale == [challenge_id]
