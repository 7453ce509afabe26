"""The dashboard's live feed in the scaled topology (tests/scale/conftest.py): events cross processes through Redis.

A staff user signs in at one web process and listens at the other; an ACME order is made through the first,
its validation and issuance run in the workers (the web processes run ``--no-worker`` and hold no CA key).
Every event (new order from web1, validation and issuance from a worker) reaches the websocket held by web0.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.acme.rawclient import RawClient, make_csr, unique_name
from tests.dashboard.live_client import collect, create_staff_code, kinds, login, open_feed
from tests.scale.conftest import Topology

pytestmark = [pytest.mark.scale, pytest.mark.postgres]

PASSWORD = "correct horse battery staple"
TIMEOUT = 30.0  # seconds for the whole order's events (validation and issuance take milliseconds here)


def test_events_reach_a_websocket_of_another_process(topology: Topology) -> None:
    web0, web1 = (f"http://127.0.0.1:{port}" for port in topology.web_ports)
    topology.manage("web0", "shell", "-c", create_staff_code("ops", PASSWORD))
    session = login(web1, "ops", PASSWORD)  # the session lives in PostgreSQL: good at web0 too

    with open_feed(web0, session) as feed:
        # Every ACME request straight to web1 (not through the balancer): the order is made there.
        client = RawClient(SimpleNamespace(base_url=web1, dns=topology.dns, http01=topology.http01))  # type: ignore[arg-type]
        try:
            client.register()
            name = unique_name()
            url, order = client.new_order(name)
            client.authorize(order)
            order = client.wait_order(url, ("ready",))
            response = client.finalize(order, make_csr([name]))
            assert response.status_code == 200, response.text
            client.wait_order(url, ("valid",))
        finally:
            client.close()
        got = collect(feed, lambda e: "order.valid" in kinds(e), TIMEOUT, topology.logs)

    assert kinds(got) == ["order.created", "challenge.valid", "certificate.issued", "order.valid"], got
    assert all(name in event["summary"] for event in got), got
    # The validation and the issuance ran in a worker, another process than either web process.
    worker_logs = "".join(path.read_text(errors="replace") for path in topology.root.glob("worker*.log"))
    assert f"http-01 valid for {name}" in worker_logs
    assert f"issued {name}" in worker_logs
