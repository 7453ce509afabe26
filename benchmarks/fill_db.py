"""Fill an initialised pki-server database with finished ACME orders, for benchmarks/compare.py's ``--big-db``.

Run with the server's environment (PKI_DATA_DIR, PKI_DATABASE_URL...), after ``pki-server init`` and before
``serve``::

    PKI_DATA_DIR=/tmp/x python benchmarks/fill_db.py --orders 100000

For each of N orders, as a finished order of the ACME CA leaves them: one account per
``--orders-per-account`` orders (a real ES256 key), an authorization (valid, one DNS name) with its three
challenges (http-01 valid, dns-01 and tls-alpn-01 still pending), the order (valid, with its
authorization) and its certificate. So N certificates and N valid orders. Rows are bulk-inserted through
the ORM; every certificate row holds the DER of one real certificate made here (the same for all, with the
row's own serial and name in the columns): nothing on the ACME path parses other orders' certificates, and
anything that does still finds a certificate.

Prints one line: what was inserted and how long it took.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import secrets
import sys
import time
from pathlib import Path

BATCH = 2000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def account_key() -> tuple[str, str]:
    """(jwk JSON, thumbprint) of a new ES256 key."""
    from cryptography.hazmat.primitives.asymmetric import ec

    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    jwk = {"crv": "P-256", "kty": "EC", "x": b64(numbers.x.to_bytes(32, "big")),
           "y": b64(numbers.y.to_bytes(32, "big"))}
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode("ascii")
    return json.dumps(jwk), b64(hashlib.sha256(canonical).digest())


def template_der(name: str) -> bytes:
    """A real (self-signed, throw-away) certificate's DER, stored in every certificate row."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def fill(orders: int, per_account: int) -> dict[str, int]:
    from django.db import transaction
    from django.utils import timezone

    from pki_server.acme.models import AcmeAccount, AcmeAuthorization, AcmeChallenge, AcmeOrder
    from pki_server.core.models import Certificate, CertificateAuthority

    cas = list(CertificateAuthority.objects.filter(acme_enabled=True))
    if len(cas) != 1:
        raise SystemExit(f"fill_db.py: expected one ACME-enabled CA, found {len(cas)} (run pki-server init first)")
    ca = cas[0]
    now = timezone.now()
    der = template_der("filler.bench.internal")
    counts = {"accounts": 0, "certificates": 0, "orders": 0, "authorizations": 0, "challenges": 0}
    through = AcmeOrder.authorizations.through
    for first in range(0, orders, BATCH):
        size = min(BATCH, orders - first)
        with transaction.atomic():
            accounts = {}
            for index in range(first, first + size):
                if index // per_account not in accounts:
                    jwk, thumbprint = account_key()
                    accounts[index // per_account] = AcmeAccount(
                        ca=ca, thumbprint=thumbprint, jwk=jwk, contact=[], terms_of_service_agreed=True,
                        created=now)
            AcmeAccount.objects.bulk_create(accounts.values())
            names = [f"filler-{index}.bench.internal" for index in range(first, first + size)]
            certificates = Certificate.objects.bulk_create([
                Certificate(ca=ca, serial=f"{secrets.randbits(159) | (1 << 158):X}", der=der, cn=name,
                            subject=f"CN={name}", not_before=now - datetime.timedelta(hours=1),
                            not_after=now + datetime.timedelta(days=90), profile=ca.acme_profile,
                            sans=f"DNS:{name}", created=now)
                for name in names])
            authorizations = AcmeAuthorization.objects.bulk_create([
                AcmeAuthorization(account=accounts[index // per_account], identifier_type="dns", identifier=name,
                                  status=AcmeAuthorization.STATUS_VALID, expires=now + datetime.timedelta(days=30),
                                  created=now)
                for index, name in zip(range(first, first + size), names, strict=True)])
            challenges = []
            for authz in authorizations:
                challenges.append(AcmeChallenge(authorization=authz, type=AcmeChallenge.HTTP_01,
                                                status=AcmeChallenge.STATUS_VALID, validated=now,
                                                validation_record=[{"url": f"http://{authz.identifier}/"}]))
                for kind in (AcmeChallenge.DNS_01, AcmeChallenge.TLS_ALPN_01):
                    challenges.append(AcmeChallenge(authorization=authz, type=kind))
            AcmeChallenge.objects.bulk_create(challenges)
            created_orders = AcmeOrder.objects.bulk_create([
                AcmeOrder(account=accounts[index // per_account], status=AcmeOrder.STATUS_VALID,
                          identifiers=[{"type": "dns", "value": name}], expires=now + datetime.timedelta(days=7),
                          certificate=certificate, created=now)
                for index, name, certificate in zip(range(first, first + size), names, certificates, strict=True)])
            through.objects.bulk_create([
                through(acmeorder_id=order.pk, acmeauthorization_id=authz.pk)
                for order, authz in zip(created_orders, authorizations, strict=True)])
        counts["accounts"] += len(accounts)
        counts["certificates"] += len(certificates)
        counts["authorizations"] += len(authorizations)
        counts["challenges"] += len(challenges)
        counts["orders"] += len(created_orders)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000, help="Orders (and certificates) to add.")
    parser.add_argument("--orders-per-account", type=int, default=100, help="Orders of one account (default 100).")
    args = parser.parse_args()
    if not 1 <= args.orders <= 10_000_000 or args.orders_per_account < 1:
        parser.error("--orders must be between 1 and 10,000,000 and --orders-per-account at least 1")
    if not os.environ.get("PKI_DATA_DIR"):
        parser.error("PKI_DATA_DIR is not set: run this with the server's environment")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pki_server.settings")
    os.environ.setdefault("PKI_LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import django

    django.setup()
    started = time.monotonic()
    counts = fill(args.orders, args.orders_per_account)
    print(f"fill_db.py: inserted {json.dumps(counts)} in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
