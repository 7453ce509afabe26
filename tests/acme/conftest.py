from __future__ import annotations

from collections.abc import Iterator

import pytest

from pki_server.core.models import CertificateAuthority
from tests.acme.asgi_client import AsgiAcmeClient
from tests.acme.server import PkiServer, running_server


@pytest.fixture(scope="session")
def pki_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PkiServer]:
    """One real server for the ACME tests of a run (each test uses its own accounts and names)."""
    with running_server(tmp_path_factory.mktemp("acme-server")) as server:
        yield server


@pytest.fixture
def asgi_client(intermediate: CertificateAuthority, settings) -> AsgiAcmeClient:  # type: ignore[no-untyped-def]
    """An ACME client of the ASGI application in this process (no server, no worker; embedded settings)."""
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.PKI_REDIS_URL = None
    from pki_server.asgi import application

    return AsgiAcmeClient(application)
