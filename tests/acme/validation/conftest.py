from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.acme.dnsserver import DNSServer


@pytest.fixture
async def dns_server() -> AsyncIterator[DNSServer]:
    """The DNS responder every lookup of a validation test goes to (modules add their records)."""
    async with DNSServer() as server:
        yield server
