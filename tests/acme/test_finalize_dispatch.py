"""Finalize where the web process runs no worker (`serve --no-worker`, the scaled topology): the
order answers "processing" with Retry-After, a worker signs, and the next poll says "valid"."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki_server.acme import orders, worker
from pki_server.acme.jose import b64encode
from pki_server.acme.models import AcmeChallenge, AcmeOrder
from pki_server.asgi import application
from pki_server.core.models import CertificateAuthority
from tests.acme.asgi_client import AsgiAcmeClient

pytestmark = pytest.mark.django_db(transaction=True)


def test_processing_with_retry_after_then_the_worker_signs(intermediate: CertificateAuthority, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.PKI_REDIS_URL = None
    assert not worker.runs_here()
    client = AsgiAcmeClient(application)
    client.new_nonce()
    client.new_account()
    response = client.post("new-order", {"identifiers": [{"type": "dns", "value": "d.example.com"}]})
    order_url = response.headers["Location"]
    for challenge in AcmeChallenge.objects.filter(type="http-01"):  # validated, as the worker records it
        AcmeChallenge.objects.filter(pk=challenge.pk).update(status="processing")
        assert orders.finish_validation(challenge.pk, True, [], None)

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("d.example.com")]), False)
           .sign(key, hashes.SHA256()))
    response = client.post(f"{order_url}/finalize", {"csr": b64encode(csr.public_bytes(serialization.Encoding.DER))})
    body = response.json()
    assert body["status"] == "processing" and "certificate" not in body
    assert int(response.headers["Retry-After"]) >= 1  # RFC 8555 §7.4: the client polls after it
    order = AcmeOrder.objects.get()
    assert order.certificate_id is None

    # What the worker does with the "issue" message the finalize dispatched.
    assert orders.claim(AcmeOrder, order.pk, timedelta(seconds=60))
    assert orders.issue(order.pk).status == "valid"
    polled = client.post(order_url)
    assert polled.json()["status"] == "valid" and "Retry-After" not in polled.headers
    assert client.post(polled.json()["certificate"]).status_code == 200


def test_a_web_process_validator_validates_here_and_issues_nothing() -> None:
    """`serve --no-worker` runs Worker(receive=False): challenges started here are claimed for it, orders are not."""
    async def check() -> None:
        assert worker.local_validation_lease() is None
        validator = asyncio.create_task(worker.Worker(receive=False, sweep=False).run())
        await asyncio.sleep(0)
        try:
            assert worker.local_validation_lease() is not None  # the challenge handler claims with this lease
            assert not worker.runs_here()  # finalize still hands the order to a worker: no CA key here
        finally:
            validator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await validator
        assert worker.local_validation_lease() is None

    asyncio.run(check())
