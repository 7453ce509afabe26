"""acme/cas.py: the CA of an ACME URL is kept per process for PKI_ACME_CA_CACHE_SECONDS."""

from __future__ import annotations

import time

import pytest

from pki_server.acme import cas
from pki_server.core.models import CertificateAuthority
from tests.acme.asgi_client import AsgiAcmeClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(asgi_client: AsgiAcmeClient) -> AsgiAcmeClient:
    return asgi_client


def directory(client: AsgiAcmeClient) -> int:
    return client.request("GET", f"{client.prefix}/directory").status_code


def test_a_change_saved_in_this_process_applies_at_once(client: AsgiAcmeClient,
                                                         intermediate: CertificateAuthority) -> None:
    assert directory(client) == 200
    intermediate.acme_enabled = False
    intermediate.save()
    assert directory(client) == 404
    intermediate.acme_enabled = True
    intermediate.save()
    assert directory(client) == 200


def test_a_change_made_elsewhere_applies_within_the_cache_time(client: AsgiAcmeClient, settings,  # type: ignore[no-untyped-def]
                                                               intermediate: CertificateAuthority) -> None:
    settings.PKI_ACME_CA_CACHE_SECONDS = 1
    assert directory(client) == 200
    # An UPDATE sends no signal: as when `pki-server edit_ca` runs in another process.
    CertificateAuthority.objects.filter(pk=intermediate.pk).update(enabled=False)
    assert directory(client) == 200  # still the kept copy
    deadline = time.monotonic() + 5
    while directory(client) == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert directory(client) == 503  # "CA 'intermediate' is disabled."


def test_no_cache_when_set_to_zero(client: AsgiAcmeClient, settings,  # type: ignore[no-untyped-def]
                                   intermediate: CertificateAuthority) -> None:
    settings.PKI_ACME_CA_CACHE_SECONDS = 0
    cas.clear()
    assert directory(client) == 200
    CertificateAuthority.objects.filter(pk=intermediate.pk).update(acme_enabled=False)
    assert directory(client) == 404
