"""Does the cost of OCSP and CRL requests stay flat as the number of certificates grows? (issue 5)

Run: ``python benchmarks/revocation_status.py [--requests 400]``

It makes a throw-away installation (SQLite in a temporary data directory, the default root and
intermediate CA from ``pki-server init``, so the intermediate has its delegated OCSP responder),
then measures through Django's full request handler (all middleware, in-process, no network):

- OCSP: POST ``/ocsp/<CA serial>/`` for serials picked at random among the certificates, half of
  them valid and half revoked (signed responses; the responder key is decrypted once and cached);
- CRL: GET ``/crl/<CA serial>.crl`` (the stored, signed CRL);
- CRL generation: signing a new CRL (what a revocation triggers).

at 1,000 and then at 100,000 certificates of the intermediate. The number of *revoked*
certificates is the same at both sizes (100): only valid certificates are added, which is what
must not change the cost. The rows are inserted in bulk and carry placeholder DER, not real
signatures: OCSP and CRLs only look certificates up by serial or by (issuer, revoked), and never
parse a certificate's DER, so real signatures would only make the set-up slower.

Prints one JSON line: the median time per request in microseconds at each size, and the ratio
100,000 / 1,000 (1.0 = flat) for each kind of request.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

SMALL, LARGE, REVOKED = 1_000, 100_000, 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="measured requests per kind and size")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="pki-bench-revocation-"))
    os.environ.update({"PKI_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "pki_server.settings",
                       "PKI_LOG_LEVEL": "WARNING", "PKI_ALLOWED_HOSTS": "testserver,localhost"})
    for name in ("PKI_DATABASE_URL", "PKI_REDIS_URL", "PKI_SECRET_KEY"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import django

    django.setup()
    from django.core.management import call_command

    try:
        call_command("init", stdout=io.StringIO())
        Bench(args.requests).run()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


class Bench:
    def __init__(self, requests: int) -> None:
        from django.test import Client

        from pki_server.core.models import CertificateAuthority

        self.requests = requests
        self.client = Client()
        self.ca = CertificateAuthority.objects.get(name="intermediate")
        self.serials: list[str] = []
        self.revoked: list[str] = []

    def add_certificates(self, count: int, revoked: int) -> None:
        from django.utils import timezone

        from pki_server.core.models import Certificate

        now = timezone.now()
        rows = []
        for index in range(count):
            serial = f"{secrets.randbits(159) | (1 << 158):X}"
            is_revoked = index < revoked
            rows.append(Certificate(
                ca=self.ca, serial=serial, der=b"\x30\x00", cn=f"host{len(self.serials) + index}.example.com",
                subject="", not_before=now - timedelta(days=1), not_after=now + timedelta(days=90),
                profile="webserver", revoked=is_revoked, revoked_date=now if is_revoked else None,
                revoked_reason="key_compromise" if is_revoked else "",
            ))
        Certificate.objects.bulk_create(rows, batch_size=5000)
        self.serials += [row.serial for row in rows]
        self.revoked += [row.serial for row in rows if row.revoked]
        del rows
        # The benchmark's own 100,000 serials must not make the garbage collector slower for the
        # requests measured: move what exists now out of its reach.
        gc.collect()
        gc.freeze()

    def ocsp_body(self, serial: str) -> bytes:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509 import ocsp

        name_hash, key_hash = self._issuer_hashes
        request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            name_hash, key_hash, int(serial, 16), hashes.SHA256()).build()
        return request.public_bytes(serialization.Encoding.DER)

    def measure(self) -> dict[str, float]:
        from cryptography.x509 import ocsp

        from pki_server.core import crl

        revoked = set(self.revoked)
        valid = [serial for serial in self.serials if serial not in revoked]
        picks = [secrets.choice(valid) if i % 2 else secrets.choice(self.revoked) for i in range(self.requests + 50)]
        bodies = [self.ocsp_body(serial) for serial in picks]
        ocsp_url, crl_url = f"/ocsp/{self.ca.serial}/", f"/crl/{self.ca.serial}.crl"

        def ocsp_once(body: bytes) -> None:
            response = self.client.post(ocsp_url, body, content_type="application/ocsp-request")
            answer = ocsp.load_der_ocsp_response(response.content)
            assert answer.certificate_status is not ocsp.OCSPCertStatus.UNKNOWN, "benchmark set-up is wrong"

        def crl_once() -> None:
            response = self.client.get(crl_url)
            assert response.status_code == 200 and response.content

        crl.generate_crl(self.ca)
        times = {"ocsp": [], "crl": [], "crl_generation": []}  # type: dict[str, list[float]]
        for index, body in enumerate(bodies):
            started = time.perf_counter()
            ocsp_once(body)
            elapsed = time.perf_counter() - started
            started = time.perf_counter()
            crl_once()
            crl_elapsed = time.perf_counter() - started
            if index >= 50:  # warm-up
                times["ocsp"].append(elapsed)
                times["crl"].append(crl_elapsed)
        for _ in range(20):
            started = time.perf_counter()
            crl.generate_crl(self.ca)
            times["crl_generation"].append(time.perf_counter() - started)
        return {kind: statistics.median(values) * 1e6 for kind, values in times.items()}

    def run(self) -> None:
        from cryptography.hazmat.primitives import hashes

        from pki_server.core.ocsp import issuer_hashes

        self._issuer_hashes = issuer_hashes(self.ca, hashes.SHA256())
        self.add_certificates(SMALL, REVOKED)
        small = self.measure()
        self.add_certificates(LARGE - SMALL, 0)
        large = self.measure()
        result = {
            "benchmark": "revocation_status",
            "certificates": [SMALL, LARGE],
            "revoked": REVOKED,
            "requests": self.requests,
            "median_us": {kind: {str(SMALL): round(small[kind], 1), str(LARGE): round(large[kind], 1)}
                          for kind in small},
            "ratio_100k_to_1k": {kind: round(large[kind] / small[kind], 3) for kind in small},
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
