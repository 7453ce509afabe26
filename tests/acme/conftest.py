from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.acme.server import PkiServer, running_server


@pytest.fixture(scope="session")
def pki_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PkiServer]:
    """One real server for the ACME tests of a run (each test uses its own accounts and names)."""
    with running_server(tmp_path_factory.mktemp("acme-server")) as server:
        yield server
