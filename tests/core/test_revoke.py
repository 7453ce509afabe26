"""cert.revoke(): reasons, compromise dates, signals, and exactly one winner under a race."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from django.utils import timezone

from pki_server.core import signals
from pki_server.core.exceptions import AlreadyRevoked
from pki_server.core.models import Certificate, CertificateAuthority
from tests.fixtures import make_csr

pytestmark = pytest.mark.django_db


@pytest.fixture
def cert(intermediate: CertificateAuthority) -> Certificate:
    return Certificate.objects.create_cert(intermediate, None, make_csr(), "/CN=r.example.com")


def test_revoke_saves(cert: Certificate) -> None:
    assert cert.status == "valid"
    cert.revoke()
    stored = Certificate.objects.get(pk=cert.pk)
    assert stored.revoked and stored.revoked_reason == "unspecified" and stored.status == "revoked"
    assert timezone.now() - stored.revoked_date < timedelta(seconds=5)


@pytest.mark.parametrize("reason", [x509.ReasonFlags.key_compromise, "key_compromise", "keyCompromise",
                                    "KEY-COMPROMISE"])
def test_reason_forms(cert: Certificate, reason) -> None:  # type: ignore[no-untyped-def]
    when = timezone.now() - timedelta(days=2)
    cert.revoke(reason, compromised=when)
    stored = Certificate.objects.get(pk=cert.pk)
    assert stored.revoked_reason == "key_compromise" and stored.compromised == when


def test_bad_reasons(cert: Certificate) -> None:
    with pytest.raises(ValueError, match="'compromised' is not a revocation reason"):
        cert.revoke("compromised")
    with pytest.raises(ValueError, match="only for delta CRLs"):
        cert.revoke(x509.ReasonFlags.remove_from_crl)
    with pytest.raises(ValueError, match="timezone-aware"):
        cert.revoke(compromised=timezone.now().replace(tzinfo=None))
    assert not Certificate.objects.get(pk=cert.pk).revoked


def test_revoke_twice(cert: Certificate) -> None:
    cert.revoke()
    with pytest.raises(AlreadyRevoked, match="revoked already"):
        cert.revoke()


def test_stale_copy_cannot_revoke_again(cert: Certificate) -> None:
    stale = Certificate.objects.get(pk=cert.pk)
    cert.revoke("superseded")
    with pytest.raises(AlreadyRevoked):
        stale.revoke("key_compromise")
    assert Certificate.objects.get(pk=cert.pk).revoked_reason == "superseded"


def test_revoke_signals(cert: Certificate) -> None:
    calls: list[dict] = []

    def record(sender, **kwargs):  # type: ignore[no-untyped-def]
        calls.append({"sender": sender, **kwargs})

    signals.pre_revoke_cert.connect(record)
    signals.post_revoke_cert.connect(record)
    try:
        cert.revoke("affiliation_changed")
    finally:
        signals.pre_revoke_cert.disconnect(record)
        signals.post_revoke_cert.disconnect(record)
    assert [c["signal"] for c in calls] == [signals.pre_revoke_cert, signals.post_revoke_cert]
    assert calls[0]["reason"] is x509.ReasonFlags.affiliation_changed and calls[0]["cert"] is cert
    assert calls[0]["compromised"] is None and calls[0]["sender"] is Certificate


def test_pre_revoke_veto_writes_nothing(cert: Certificate) -> None:
    def veto(sender, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError("not today")

    signals.pre_revoke_cert.connect(veto)
    try:
        with pytest.raises(PermissionError):
            cert.revoke()
    finally:
        signals.pre_revoke_cert.disconnect(veto)
    assert not Certificate.objects.get(pk=cert.pk).revoked


def test_revoke_intermediate(intermediate: CertificateAuthority) -> None:
    intermediate.revoke("ca_compromise")
    stored = CertificateAuthority.objects.get(pk=intermediate.pk)
    assert stored.revoked and stored.revoked_reason == "ca_compromise"
