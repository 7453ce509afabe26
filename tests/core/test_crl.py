"""CRLs: contents checked with OpenSSL, served over HTTP, kept current, numbered under a race, dump_crl."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.utils import timezone

from pki_server.core import crl as crls
from pki_server.core.exceptions import CertificateAuthorityDisabled, PasswordError
from pki_server.core.key_backends import UsePrivateKeyOptions, key_backends
from pki_server.core.key_backends.storages import CreatePrivateKeyOptions
from pki_server.core.models import Certificate, CertificateAuthority, CertificateRevocationList
from pki_server.core.utils import x509_name
from tests.fixtures import make_csr
from tests.test_database import PG_HOST, PG_PORT, postgres_reachable
from tests.test_settings import TIMEOUT, pki_env, run_pki

pytestmark = pytest.mark.django_db


def openssl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False, timeout=60)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def crl_text(der: bytes, tmp_path: Path) -> str:
    path = tmp_path / "crl.der"
    path.write_bytes(der)
    return openssl("crl", "-inform", "DER", "-in", str(path), "-noout", "-text").stdout


def served(client: Client, ca: CertificateAuthority, suffix: str = ".crl") -> bytes:
    response = client.get(f"/crl/{ca.serial}{suffix}")
    assert response.status_code == 200, response.content
    return response.content


def write_pem(path: Path, *items: CertificateAuthority | Certificate) -> str:
    path.write_text("".join(item.pem for item in items))
    return str(path)


def issue(ca: CertificateAuthority, name: str = "www.example.com") -> Certificate:
    return Certificate.objects.create_cert(ca, None, make_csr(), f"/CN={name}")


@pytest.fixture
def password_ca(root: CertificateAuthority) -> CertificateAuthority:
    return CertificateAuthority.objects.init(
        "locked", key_backends["default"],
        CreatePrivateKeyOptions(path="ca", elliptic_curve="P-256", password="s3cret"),
        x509_name("/CN=Locked CA"), parent=root,
    )


# --- Contents ------------------------------------------------------------------------------------

def test_a_new_ca_gets_an_empty_first_crl(root: CertificateAuthority, tmp_path: Path) -> None:
    latest = crls.latest_crl(root)
    assert latest is not None and latest.number == 1
    text = crl_text(bytes(latest.der), tmp_path)
    assert "No Revoked Certificates" in text
    assert "X509v3 CRL Number: \n                1" in text
    parsed = x509.load_der_x509_crl(bytes(latest.der))
    assert parsed.issuer == root.pub.subject
    assert parsed.is_signature_valid(root.pub.public_key())  # type: ignore[arg-type]
    ski = root.pub.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert parsed.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == ski
    assert parsed.next_update_utc is not None
    assert parsed.next_update_utc - parsed.last_update_utc == timedelta(hours=24)
    assert latest.this_update == parsed.last_update_utc and latest.next_update == parsed.next_update_utc


def test_revoking_through_the_python_api_regenerates_at_once(
    intermediate: CertificateAuthority, tmp_path: Path
) -> None:
    compromised_cert, plain_cert, valid_cert = issue(intermediate, "a.example.com"), issue(intermediate), issue(
        intermediate, "c.example.com")
    when = (timezone.now() - timedelta(days=2)).replace(microsecond=0)
    compromised_cert.revoke("key_compromise", compromised=when)
    assert crls.latest_crl(intermediate).number == 2  # type: ignore[union-attr]
    plain_cert.revoke()
    latest = crls.latest_crl(intermediate)
    assert latest is not None and latest.number == 3

    text = crl_text(bytes(latest.der), tmp_path)
    assert "X509v3 CRL Number: \n                3" in text
    assert f"Serial Number: {compromised_cert.serial}" in text
    assert "Key Compromise" in text
    assert f"Invalidity Date: \n                {when:%b %e %H:%M:%S %Y} GMT" in text
    assert f"Serial Number: {valid_cert.serial}" not in text

    parsed = x509.load_der_x509_crl(bytes(latest.der))
    assert len(parsed) == 2
    plain = parsed.get_revoked_certificate_by_serial_number(int(plain_cert.serial, 16))
    assert plain is not None and len(plain.extensions) == 0  # unspecified: no CRLReason at all
    revoked_date = Certificate.objects.get(pk=plain_cert.pk).revoked_date
    assert revoked_date is not None and plain.revocation_date_utc == revoked_date.replace(microsecond=0)


def listed_in_latest(ca: CertificateAuthority, cert: Certificate) -> x509.RevokedCertificate | None:
    latest = crls.latest_crl(ca)
    assert latest is not None
    return x509.load_der_x509_crl(bytes(latest.der)).get_revoked_certificate_by_serial_number(int(cert.serial, 16))


def test_revoking_on_the_command_line_regenerates_at_once(intermediate: CertificateAuthority) -> None:
    cert = issue(intermediate)
    call_command("revoke_cert", cert.serial.lower(), "--reason", "affiliation_changed", stdout=StringIO())
    entry = listed_in_latest(intermediate, cert)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.affiliation_changed


def test_revoking_in_the_admin_regenerates_at_once(admin_client: Client, intermediate: CertificateAuthority) -> None:
    cert = issue(intermediate)
    response = admin_client.post("/admin/pki_core/certificate/", {
        "action": "revoke_selected", "_selected_action": [cert.pk], "apply": "yes", "reason": "superseded",
    }, follow=True)
    assert response.status_code == 200 and Certificate.objects.get(pk=cert.pk).revoked
    entry = listed_in_latest(intermediate, cert)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.superseded


def test_expired_certificates_are_left_off(intermediate: CertificateAuthority) -> None:
    cert = issue(intermediate)
    cert.revoke("superseded")
    Certificate.objects.filter(pk=cert.pk).update(not_after=timezone.now() - timedelta(seconds=1))
    parsed = x509.load_der_x509_crl(bytes(crls.generate_crl(intermediate).der))
    assert len(parsed) == 0
    assert crls.refresh_crls() == 0  # and it is not taken for a revocation the CRL misses


# --- Served over HTTP, checked by OpenSSL ----------------------------------------------------------

def test_openssl_verify_fails_for_a_revoked_certificate_against_the_served_crl(
    client: Client, root: CertificateAuthority, intermediate: CertificateAuthority, tmp_path: Path
) -> None:
    cert = issue(intermediate)
    root_pem, chain_pem = write_pem(tmp_path / "root.pem", root), write_pem(tmp_path / "chain.pem", intermediate)
    leaf_pem = write_pem(tmp_path / "leaf.pem", cert)
    crl_file = tmp_path / "intermediate.crl.pem"

    def verify() -> subprocess.CompletedProcess[str]:
        # The distribution point URL of the certificate, as a relying party would fetch it.
        url = cert.pub.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name
        path = "/" + url[0].value.split("/", 3)[3]  # type: ignore[index, union-attr]
        assert path == f"/crl/{intermediate.serial}.crl"
        der = client.get(path).content
        crl_file.write_bytes(x509.load_der_x509_crl(der).public_bytes(Encoding.PEM))
        return openssl("verify", "-crl_check", "-CAfile", root_pem, "-untrusted", chain_pem,
                       "-CRLfile", str(crl_file), leaf_pem, check=False)

    before = verify()
    assert before.returncode == 0 and "leaf.pem: OK" in before.stdout, before.stdout + before.stderr
    cert.revoke("key_compromise")
    after = verify()
    assert after.returncode != 0
    assert "certificate revoked" in after.stdout + after.stderr


def test_a_revoked_intermediate_is_on_the_roots_crl(
    client: Client, root: CertificateAuthority, tmp_path: Path
) -> None:
    sub = CertificateAuthority.objects.init(
        "sub", key_backends["default"], CreatePrivateKeyOptions(path="ca", elliptic_curve="P-256"),
        x509_name("/CN=Sub CA"), parent=root,
    )
    cert = issue(sub)
    root_pem, chain_pem = write_pem(tmp_path / "root.pem", root), write_pem(tmp_path / "chain.pem", sub)
    leaf_pem = write_pem(tmp_path / "leaf.pem", cert)
    crl_file = tmp_path / "crls.pem"

    def verify_all() -> subprocess.CompletedProcess[str]:
        crl_file.write_bytes(served(client, root, ".pem") + served(client, sub, ".pem"))
        return openssl("verify", "-crl_check_all", "-CAfile", root_pem, "-untrusted", chain_pem,
                       "-CRLfile", str(crl_file), leaf_pem, check=False)

    assert verify_all().returncode == 0
    sub.revoke("ca_compromise")
    root_crl = x509.load_der_x509_crl(served(client, root))
    entry = root_crl.get_revoked_certificate_by_serial_number(int(sub.serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.ca_compromise
    result = verify_all()
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr
    assert "error 23 at 1 depth lookup" in result.stdout + result.stderr  # the intermediate, not the leaf


def test_view_headers_formats_and_conditional_requests(
    client: Client, intermediate: CertificateAuthority, settings
) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"/crl/{intermediate.serial.lower()}.crl")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkix-crl"
    latest = crls.latest_crl(intermediate)
    assert latest is not None and response.content == bytes(latest.der)
    assert response["ETag"] == f'"{latest.number}-der"'
    assert response["Cache-Control"] == "public, max-age=60"
    assert response["Last-Modified"] == latest.this_update.strftime("%a, %d %b %Y %H:%M:%S GMT")

    again = client.get(f"/crl/{intermediate.serial}.crl", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304 and again.content == b""

    for path in (f"/crl/{intermediate.serial}.pem", f"/crl/{intermediate.serial}.crl?format=PEM"):
        pem = client.get(path)
        assert pem.status_code == 200 and pem["Content-Type"] == "application/x-pem-file"
        assert pem.content.startswith(b"-----BEGIN X509 CRL-----\n")
        assert max(len(line) for line in pem.content.splitlines()) == 64
        assert x509.load_pem_x509_crl(pem.content).public_bytes(Encoding.DER) == bytes(latest.der)
        assert pem["ETag"] == f'"{latest.number}-pem"'
    assert client.get(f"/crl/{intermediate.serial}.crl?format=txt").status_code == 400
    assert client.post(f"/crl/{intermediate.serial}.crl").status_code == 405

    # A new CRL is a new ETag; the cache lifetime never reaches past nextUpdate.
    settings.PKI_CRL_LIFETIME = timedelta(seconds=30)
    issue(intermediate).revoke()
    newer = client.get(f"/crl/{intermediate.serial}.crl", HTTP_IF_NONE_MATCH=response["ETag"])
    assert newer.status_code == 200 and newer["ETag"] == f'"{latest.number + 1}-der"'
    max_age = int(newer["Cache-Control"].rpartition("=")[2])
    assert 25 <= max_age <= 30


def test_view_404s(client: Client, intermediate: CertificateAuthority) -> None:
    unknown = client.get("/crl/ABCDEF.crl")
    assert unknown.status_code == 404 and b"No CA has this serial" in unknown.content
    CertificateRevocationList.objects.filter(ca=intermediate).delete()
    missing = client.get(f"/crl/{intermediate.serial}.crl")
    assert missing.status_code == 404
    assert missing.content.decode().startswith("CA intermediate has no CRL yet")


# --- Keeping CRLs current ------------------------------------------------------------------------

def test_refresh_crls_regenerates_before_next_update(
    root: CertificateAuthority, intermediate: CertificateAuthority
) -> None:
    assert crls.refresh_crls() == 0  # both are fresh
    now = timezone.now()
    # Two thirds of the intermediate's CRL lifetime have passed, and a minute more.
    CertificateRevocationList.objects.filter(ca=intermediate).update(
        this_update=now - timedelta(hours=16, minutes=1), next_update=now + timedelta(hours=7, minutes=59)
    )
    assert crls.refresh_crls() == 1
    latest = crls.latest_crl(intermediate)
    assert latest is not None and latest.number == 2 and latest.next_update > now + timedelta(hours=23)
    assert crls.latest_crl(root).number == 1  # type: ignore[union-attr]
    assert crls.refresh_crls() == 0


def test_refresh_crls_makes_missing_crls(root: CertificateAuthority, intermediate: CertificateAuthority) -> None:
    CertificateRevocationList.objects.all().delete()
    assert crls.refresh_crls() == 2
    assert [crl.number for crl in CertificateRevocationList.objects.order_by("ca__name")] == [1, 1]


def test_a_revocation_where_the_key_is_not_usable_is_picked_up_by_refresh(
    intermediate: CertificateAuthority, key_storage: Path
) -> None:
    """As in a web process that holds no CA key: the revocation is saved, the worker signs the CRL."""
    cert = issue(intermediate)
    key_file = key_storage / intermediate.key_backend_options["path"]
    hidden = key_file.rename(key_file.with_suffix(".away"))
    cert.revoke("superseded")  # no error although no CRL could be signed
    assert Certificate.objects.get(pk=cert.pk).revoked
    assert crls.latest_crl(intermediate).number == 1  # type: ignore[union-attr]
    assert crls.refresh_crls() == 0  # still not usable here
    hidden.rename(key_file)
    assert crls.refresh_crls() == 1
    latest = crls.latest_crl(intermediate)
    assert latest is not None and latest.number == 2
    assert x509.load_der_x509_crl(bytes(latest.der)).get_revoked_certificate_by_serial_number(int(cert.serial, 16))
    assert crls.refresh_crls() == 0


def test_a_revocation_committed_after_the_crl_was_signed_is_not_missed(intermediate: CertificateAuthority) -> None:
    """revoked_date is taken before the commit: one stamped just before the CRL's thisUpdate but
    committed after it was signed is found by serial and gets a new CRL."""
    cert = issue(intermediate)
    latest = crls.latest_crl(intermediate)
    assert latest is not None
    Certificate.objects.filter(pk=cert.pk).update(
        revoked=True, revoked_date=latest.this_update - timedelta(seconds=1), revoked_reason="unspecified"
    )
    assert crls.refresh_crls() == 1
    newest = crls.latest_crl(intermediate)
    assert newest is not None and newest.number == 2
    assert x509.load_der_x509_crl(bytes(newest.der)).get_revoked_certificate_by_serial_number(int(cert.serial, 16))
    assert crls.refresh_crls() == 0  # listed now, though stamped before this CRL too


def test_a_password_protected_ca_gets_its_crl_from_dump_crl(
    password_ca: CertificateAuthority, tmp_path: Path
) -> None:
    assert crls.latest_crl(password_ca) is None  # created without a CRL, quietly
    assert crls.refresh_crls() == 0  # the worker cannot either
    with pytest.raises(PasswordError):
        crls.generate_crl(password_ca)
    with pytest.raises(CommandError, match="a password is required: use --password or --password-file"):
        call_command("dump_crl", "locked", "--regenerate", stdout=StringIO())
    with pytest.raises(CommandError, match="Wrong password"):
        call_command("dump_crl", "locked", "--regenerate", "--password", "wrong", stdout=StringIO())
    assert not CertificateRevocationList.objects.filter(ca=password_ca).exists()

    cert = Certificate.objects.create_cert(password_ca, UsePrivateKeyOptions(password="s3cret"), make_csr(),
                                           "/CN=locked.example.com")
    cert.revoke("key_compromise")  # saved; no CRL can be signed here
    assert crls.latest_crl(password_ca) is None and crls.refresh_crls() == 0

    password_file = tmp_path / "password.txt"
    password_file.write_text("s3cret\n")
    out = tmp_path / "locked.crl"
    call_command("dump_crl", "locked", str(out), "--format", "DER", "--regenerate",
                 "--password-file", str(password_file))
    parsed = x509.load_der_x509_crl(out.read_bytes())
    assert parsed.get_revoked_certificate_by_serial_number(int(cert.serial, 16)) is not None
    assert crls.latest_crl(password_ca).number == 1  # type: ignore[union-attr]


def test_a_disabled_ca_signs_no_crl(intermediate: CertificateAuthority) -> None:
    cert = issue(intermediate)
    CertificateAuthority.objects.filter(pk=intermediate.pk).update(enabled=False)
    cert = Certificate.objects.select_related("ca").get(pk=cert.pk)
    cert.revoke()  # saved; the CRL stays as it was
    assert crls.latest_crl(intermediate).number == 1  # type: ignore[union-attr]
    assert crls.refresh_crls() == 0
    with pytest.raises(CertificateAuthorityDisabled, match="disabled and signs nothing"):
        crls.generate_crl(cert.ca)


# --- CRL numbers ---------------------------------------------------------------------------------

def take_number_after_read(ca: CertificateAuthority, created: datetime) -> tuple[list[int], Any]:
    """An execute wrapper: another process stores CRL number 2 (its data read at ``created``)
    right after generate_crl() has read the highest number."""
    taken: list[int] = []

    def wrapper(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        result = execute(sql, params, many, context)
        if not taken and 'MAX("pki_core_certificaterevocationlist"."number")' in sql:
            taken.append(2)
            CertificateRevocationList.objects.create(
                ca=ca, number=2, this_update=created, next_update=created, der=b"other", created=created
            )
        return result

    return taken, wrapper


def test_a_number_taken_meanwhile_is_retried(root: CertificateAuthority) -> None:
    """The other CRL was made from data read before this call began: build again, as number 3."""
    taken, wrapper = take_number_after_read(root, timezone.now() - timedelta(seconds=1))
    with connection.execute_wrapper(wrapper):
        generated = crls.generate_crl(root)
    assert taken == [2]
    assert generated.number == 3
    number = x509.load_der_x509_crl(bytes(generated.der)).extensions.get_extension_for_class(x509.CRLNumber)
    assert number.value.crl_number == 3
    assert sorted(CertificateRevocationList.objects.filter(ca=root).values_list("number", flat=True)) == [1, 2, 3]


def test_a_crl_made_meanwhile_from_fresh_data_is_returned(root: CertificateAuthority) -> None:
    """The other CRL was made from data read after this call began: it is the answer."""
    taken, wrapper = take_number_after_read(root, timezone.now() + timedelta(milliseconds=1))
    with connection.execute_wrapper(wrapper):
        generated = crls.generate_crl(root)
    assert taken == [2]
    assert generated.number == 2 and bytes(generated.der) == b"other"
    assert sorted(CertificateRevocationList.objects.filter(ca=root).values_list("number", flat=True)) == [1, 2]


# Each process signs CRLs of the same CA at once, after a barrier; prints the numbers it got.
GENERATE = """
import sys, time
from pathlib import Path

import django

django.setup()

from pki_server.core.crl import generate_crl
from pki_server.core.models import CertificateAuthority

count, barrier = int(sys.argv[1]), Path(sys.argv[2])
ca = CertificateAuthority.objects.get(name="race")
(barrier / f"ready-{sys.argv[3]}").touch()
deadline = time.monotonic() + 60
while not (barrier / "go").exists():
    assert time.monotonic() < deadline, "no go signal"
    time.sleep(0.005)
print(" ".join(str(generate_crl(ca).number) for _ in range(count)))
"""

CREATE_RACE_CA = """
from pki_server.core.key_backends import key_backends
from pki_server.core.key_backends.storages import CreatePrivateKeyOptions
from pki_server.core.models import CertificateAuthority
CertificateAuthority.objects.init(
    "race", key_backends["default"], CreatePrivateKeyOptions(path="ca", elliptic_curve="P-256"), "/CN=Race CA"
)
"""

# Every stored CRL: its row number and the number inside its DER.
STORED_NUMBERS = """
from cryptography import x509
from pki_server.core.models import CertificateRevocationList
for crl in CertificateRevocationList.objects.filter(ca__name="race").order_by("number"):
    inside = x509.load_der_x509_crl(bytes(crl.der)).extensions.get_extension_for_class(x509.CRLNumber)
    print(crl.number, inside.value.crl_number)
"""


def race(tmp_path: Path, environ: dict[str, str], processes: int = 4, each: int = 5) -> None:
    """Processes generating CRLs of one CA at once all succeed; the stored numbers have no gap
    and no duplicate, and each call returns a CRL newer than the one its process got before."""
    for args in (["migrate", "--no-input", "-v", "0"], ["shell", "--no-imports", "-c", CREATE_RACE_CA]):
        result = run_pki(args, environ, tmp_path)
        assert result.returncode == 0, result.stderr
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**environ, "DJANGO_SETTINGS_MODULE": "pki_server.settings"}
    running = [
        subprocess.Popen([sys.executable, "-c", GENERATE, str(each), str(barrier), str(n)], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(processes)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(barrier.glob("ready-*"))) < processes and time.monotonic() < deadline:
            if any(p.poll() is not None for p in running):
                break
            time.sleep(0.02)
        (barrier / "go").touch()
        outputs = [p.communicate(timeout=TIMEOUT) for p in running]
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    for process, (_out, err) in zip(running, outputs, strict=True):
        assert process.returncode == 0, err
    stored = run_pki(["shell", "--no-imports", "-c", STORED_NUMBERS], environ, tmp_path)
    assert stored.returncode == 0, stored.stderr
    pairs = [tuple(map(int, line.split())) for line in stored.stdout.splitlines()]
    # No gap, no duplicate, the number inside each CRL is its row's; 1 is the CA's first CRL.
    assert pairs == [(n, n) for n in range(1, len(pairs) + 1)]
    assert len(pairs) > processes  # they did run at once: several were stored
    for out, _err in outputs:
        numbers = [int(n) for n in out.split()]
        assert len(numbers) == each
        assert numbers == sorted(set(numbers)), numbers  # each call got a newer CRL than the one before
        assert set(numbers) <= {n for n, _ in pairs}


def test_concurrent_generation_gets_distinct_numbers_sqlite(tmp_path: Path) -> None:
    race(tmp_path, pki_env(tmp_path / "var"))


@pytest.mark.postgres
@pytest.mark.skipif(not postgres_reachable(), reason=f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
def test_concurrent_generation_gets_distinct_numbers_postgres(tmp_path: Path) -> None:
    import psycopg
    from psycopg import sql

    name = f"pki_test_{uuid.uuid4().hex[:16]}"
    admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="test", autocommit=True,
                            connect_timeout=10)
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            race(tmp_path, pki_env(tmp_path / "var", PKI_DATABASE_URL=f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}"))
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


# --- pki-server dump_crl ---------------------------------------------------------------------------

def test_dump_crl(intermediate: CertificateAuthority, tmp_path: Path) -> None:
    out = StringIO()
    call_command("dump_crl", "intermediate", stdout=out)
    assert out.getvalue().startswith("-----BEGIN X509 CRL-----")
    path = tmp_path / "intermediate.crl"
    call_command("dump_crl", intermediate.serial, str(path), "--format", "der")
    assert "X509v3 CRL Number: \n                1" in crl_text(path.read_bytes(), tmp_path)

    with pytest.raises(CommandError, match="exists already; use --force"):
        call_command("dump_crl", "intermediate", str(path), "--regenerate")
    assert crls.latest_crl(intermediate).number == 1  # type: ignore[union-attr]  # nothing signed
    with pytest.raises(CommandError, match="go with --regenerate"):
        call_command("dump_crl", "intermediate", "--password", "x", stdout=StringIO())
    with pytest.raises(CommandError, match="No CA named 'nope'"):
        call_command("dump_crl", "nope", stdout=StringIO())

    call_command("dump_crl", "intermediate", str(path), "--format", "DER", "--regenerate", "--force")
    assert "X509v3 CRL Number: \n                2" in crl_text(path.read_bytes(), tmp_path)
    CertificateRevocationList.objects.filter(ca=intermediate).delete()
    with pytest.raises(CommandError, match="has no CRL yet; sign one with `pki-server dump_crl intermediate"):
        call_command("dump_crl", "intermediate", stdout=StringIO())
