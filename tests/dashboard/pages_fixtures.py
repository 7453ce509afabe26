"""Fixtures of the dashboard's page tests: users, certificates, and ACME rows made through pki_server.acme."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from pki_server.acme import accounts, jose, orders, problems
from pki_server.acme.models import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeOrder
from pki_server.core.models import Certificate, CertificateAuthority
from tests.fixtures import issue

PASSWORD = "correct horse battery staple"



@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_superuser("operator", "operator@example.com", PASSWORD)


@pytest.fixture
def staff_client(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def certs(intermediate: CertificateAuthority) -> dict[str, Certificate]:
    found = {
        "www": issue(intermediate, "www.example.com", sans=["www.example.com", "alt.example.net"]),
        "api": issue(intermediate, "api.example.org", sans=["api.example.org"]),
        "soon": issue(intermediate, "soon.example.com", expires_in=timedelta(days=5)),
        "later": issue(intermediate, "later.example.com", expires_in=timedelta(days=60)),
        "old": issue(intermediate, "old.example.com", expires_in=timedelta(days=-1)),
        "gone": issue(intermediate, "gone.example.com", expires_in=timedelta(days=10)),
    }
    found["gone"].revoke("superseded")
    return found


def new_account(ca: CertificateAuthority, contact: list[str] | None = None) -> AcmeAccount:
    key = ec.generate_private_key(ec.SECP256R1())
    account, created = accounts.new_account(ca, jose.jwk_from_key(key.public_key()),
                                            {"termsOfServiceAgreed": True, "contact": contact or []})
    assert created
    return account


def new_order(account: AcmeAccount, *names: str) -> tuple[AcmeOrder, list[AcmeAuthorization]]:
    return orders.new_order(account, {"identifiers": [{"type": "dns", "value": name} for name in names]})


def finish(authz: AcmeAuthorization, kind: str, problem: tuple[str, str] | None = None) -> AcmeChallenge:
    """Start the authorization's challenge of ``kind`` and record its outcome, as the worker does."""
    challenge = authz.challenges.get(type=kind)
    assert orders.start_challenge(challenge)
    error = problems.problem_json(*problem) if problem else None
    assert orders.finish_validation(challenge.pk, problem is None, [], error)
    return challenge


def issue_order(order: AcmeOrder, *names: str) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
           .sign(key, hashes.SHA256()))
    orders.finalize(order, {"csr": jose.b64encode(csr.public_bytes(serialization.Encoding.DER))})
    issued = orders.issue(order.pk)
    assert issued is not None and issued.certificate is not None, issued and issued.error
    return issued.certificate


@dataclass
class AcmeRows:
    account: AcmeAccount  # a valid order with a certificate, an invalid one, and a pending one
    other: AcmeAccount  # no orders
    valid_order: AcmeOrder
    invalid_order: AcmeOrder
    pending_order: AcmeOrder
    pending_authz: AcmeAuthorization
    certificate: Certificate


@pytest.fixture
def acme(intermediate: CertificateAuthority) -> AcmeRows:
    account = new_account(intermediate, ["mailto:ops@example.com"])
    other = new_account(intermediate)
    valid_order, (valid_authz,) = new_order(account, "good.example.com")
    finish(valid_authz, "http-01")
    certificate = issue_order(valid_order, "good.example.com")
    invalid_order, (bad_authz,) = new_order(account, "bad.example.com")
    finish(bad_authz, "dns-01", ("dns", "No TXT record found at _acme-challenge.bad.example.com"))
    _, (tls_authz,) = new_order(account, "tls.example.com")
    finish(tls_authz, "tls-alpn-01", ("connection", "Connection refused by 192.0.2.7:443"))
    _, (http_authz,) = new_order(account, "web.example.com")
    finish(http_authz, "http-01", ("connection", "Timeout connecting to 192.0.2.8:80"))
    pending_order, (pending_authz,) = new_order(account, "later.example.com")
    for order in (valid_order, invalid_order, pending_order):
        order.refresh_from_db()
    return AcmeRows(account, other, valid_order, invalid_order, pending_order, pending_authz, certificate)


def page_urls(ca: CertificateAuthority, cert: Certificate, rows: AcmeRows) -> list[str]:
    """Every GET URL of the dashboard (downloads included) but the login page."""
    return [
        reverse("dashboard:overview"),
        reverse("dashboard:ca", args=[ca.serial]),
        reverse("dashboard:ca-bundle", args=[ca.serial]),
        reverse("dashboard:certificates"),
        reverse("dashboard:certificate", args=[cert.serial]),
        reverse("dashboard:certificate-pem", args=[cert.serial]),
        reverse("dashboard:certificate-bundle", args=[cert.serial]),
        reverse("dashboard:accounts"),
        reverse("dashboard:account", args=[rows.account.slug]),
    ]
