"""The overview's grouped queries (dates truncated, JSON keys read in the database) on PostgreSQL.

The rest of the dashboard's tests run on SQLite; this runs a real ``pki-server`` process against a
fresh PostgreSQL database, makes rows through pki_server.core and pki_server.acme, and renders the
overview. Skipped when PostgreSQL is not reachable on 127.0.0.1:5432.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_database import PG_HOST, PG_PORT, postgres_reachable, scratch_postgres_database
from tests.test_settings import pki_env, run_pki

SCRIPT = """
import json
from datetime import timedelta
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from pki_server.acme import accounts, jose, orders, problems
from pki_server.core.key_backends import key_backends
from pki_server.core.key_backends.storages import CreatePrivateKeyOptions
from pki_server.core.models import Certificate, CertificateAuthority
from pki_server.dashboard import stats

ca = CertificateAuthority.objects.init(
    "pg", key_backends["default"], CreatePrivateKeyOptions(path="ca", elliptic_curve="P-256"), "/CN=PG CA",
    acme_enabled=True)
for name in ("a.example.com", "b.example.com"):
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    cert = Certificate.objects.create_cert(ca, None, csr, subject="/CN=" + name, not_after=timedelta(days=10))
account, _ = accounts.new_account(ca, jose.jwk_from_key(ec.generate_private_key(ec.SECP256R1()).public_key()), {})
for name, kind, problem in (("x.example.com", "dns-01", "dns"), ("y.example.com", "dns-01", "dns"),
                            ("z.example.com", "http-01", "connection")):
    _, (authz,) = orders.new_order(account, {"identifiers": [{"type": "dns", "value": name}]})
    challenge = authz.challenges.get(type=kind)
    orders.start_challenge(challenge)
    orders.finish_validation(challenge.pk, False, [], problems.problem_json(problem, "failed: " + name))
orders.new_order(account, {"identifiers": [{"type": "dns", "value": "p.example.com"}]})

user = User.objects.create_superuser("operator", "op@example.com", "pw")
client = Client(HTTP_HOST="localhost")
client.force_login(user)
with CaptureQueriesContext(connection) as queries:
    response = client.get("/dashboard/")
overview_queries = len(queries)  # now: every request clears the query log
# Every admin list (searched too) and change form, and the dashboard's pages: their queries, bound on the server.
from django.contrib import admin
pages = ["/dashboard/certificates/?q=example&status=valid&expiring=30", f"/dashboard/certificates/{cert.serial}/",
         f"/dashboard/cas/{ca.serial}/", "/dashboard/accounts/", f"/dashboard/accounts/{account.slug}/"]
for model in admin.site._registry:
    changelist = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    pages += [changelist, changelist + "?q=example"]
    first = model.objects.order_by("pk").first()
    if first is not None:
        pages.append(f"{changelist}{first.pk}/change/")
statuses = {page: client.get(page).status_code for page in pages}
print(json.dumps({
    "pages": {page: status for page, status in statuses.items() if status != 200},
    "pages_seen": len(statuses),
    "vendor": connection.vendor,
    "failures": sorted([g.challenge_type, g.problem_type, g.count] for g in stats.validation_failures()),
    "orders": dict(stats.orders_by_status()),
    "issued_today": stats.issued_per_day()[-1][1],
    "expiring": sorted(c.cn for c in stats.expiring_soon()),
    "overview": response.status_code,
    "queries": overview_queries,
    "live": 'id="live-event-list"' in response.content.decode(),
}))
"""


@pytest.mark.postgres
@pytest.mark.skipif(not postgres_reachable(), reason=f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
def test_overview_on_postgres(tmp_path: Path) -> None:
    with scratch_postgres_database("pki_dash") as name:
        environ = pki_env(tmp_path / "var", PKI_DATABASE_URL=f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}")
        migrate = run_pki(["migrate", "--no-input", "-v", "0"], environ, tmp_path)
        assert migrate.returncode == 0, migrate.stderr
        result = run_pki(["shell", "--no-imports", "-c", SCRIPT], environ, tmp_path)
        assert result.returncode == 0, result.stderr
        found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["vendor"] == "postgresql"
    assert found["failures"] == [
        ["dns-01", "urn:ietf:params:acme:error:dns", 2],
        ["http-01", "urn:ietf:params:acme:error:connection", 1],
    ]
    assert found["orders"] == {"pending": 1, "ready": 0, "processing": 0, "valid": 0, "invalid": 3}
    assert found["issued_today"] == 2
    assert found["expiring"] == ["a.example.com", "b.example.com"]
    assert (found["overview"], found["live"]) == (200, True)
    assert found["pages"] == {} and found["pages_seen"] >= 15
    assert found["queries"] == 2 + 5  # as on SQLite (test_query_counts.py)
