"""The CA's command-line interface: ``pki-server <command>`` (docs/cli.md).

Most tests run the commands with ``call_command``; a few run ``python -m pki_server`` in a
subprocess with its own data directory, to check exit codes and what reaches stderr.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from pki_server.core.models import Certificate, CertificateAuthority
from tests.fixtures import make_csr

pytestmark = pytest.mark.django_db


# --- Helpers -------------------------------------------------------------------------------------

def run(*args: str) -> str:
    """Run a command with call_command and return what it printed."""
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def fails(*args: str) -> str:
    """Run a command that must fail; return its one-line message."""
    with pytest.raises(CommandError) as info:
        run(*args)
    message = str(info.value)
    assert "\n" not in message.strip()
    return message


def snapshot(keys: Path) -> tuple[int, int, list[str]]:
    """What a failed command must leave as it was: rows and key files."""
    files = sorted(str(path.relative_to(keys)) for path in keys.rglob("*") if path.is_file()) if keys.exists() else []
    return CertificateAuthority.objects.count(), Certificate.objects.count(), files


def write_csr(path: Path, csr: x509.CertificateSigningRequest, encoding: str = "PEM") -> Path:
    path.write_bytes(csr.public_bytes(getattr(serialization.Encoding, encoding)))
    return path


def openssl_verify(tmp_path: Path, root: CertificateAuthority, untrusted: list[x509.Certificate],
                   leaf: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    (tmp_path / "root.pem").write_text(root.pem)
    chain = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in untrusted)
    (tmp_path / "untrusted.pem").write_bytes(chain)
    args = ["openssl", "verify", "-CAfile", str(tmp_path / "root.pem")]
    if untrusted:
        args += ["-untrusted", str(tmp_path / "untrusted.pem")]
    return subprocess.run([*args, str(leaf)], capture_output=True, text=True, check=False)


@pytest.fixture
def csr_file(tmp_path: Path) -> Path:
    return write_csr(tmp_path / "req.csr", make_csr("/CN=example.com", sans=["example.com", "www.example.com"]))


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("s3cret\n")
    return path


@pytest.fixture
def locked(root: CertificateAuthority, password_file: Path) -> CertificateAuthority:
    """An intermediate whose key is encrypted with the password in ``password_file``."""
    run("init_ca", "locked", "/CN=Locked CA", "--parent", "root", "--curve", "P-256",
        "--password-file", str(password_file))
    return CertificateAuthority.objects.get(name="locked")


# --- init_ca -------------------------------------------------------------------------------------

def test_init_ca_root(key_storage: Path) -> None:
    output = run("init_ca", "myroot", "/C=AT/O=Example/CN=Example Root", "--curve", "P-384",
                 "--path-length", "2", "--expires", "100")
    ca = CertificateAuthority.objects.get(name="myroot")
    assert ca.is_root and ca.subject == "/C=AT/O=Example/CN=Example Root"
    assert isinstance(ca.pub.public_key(), ec.EllipticCurvePublicKey)
    assert ca.pub.public_key().curve.name == "secp384r1"
    assert ca.path_length == 2
    assert ca.pub.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 2
    assert abs(ca.not_after - (timezone.now() + timedelta(days=100))) < timedelta(minutes=10)
    assert not ca.acme_enabled
    assert ca.serial in output and "EC secp384r1" in output and "root CA myroot" in output
    assert len(list(key_storage.rglob("*.key"))) == 1


def test_init_ca_rfc4514_subject_and_key_types(key_storage: Path) -> None:
    run("init_ca", "ed", "CN=Ed Root,O=Example", "--key-type", "ed25519")
    run("init_ca", "ed448", "/CN=Ed448 Root", "--key-type", "Ed448")
    run("init_ca", "rsa", "/CN=RSA Root", "--key-size", "2048")
    assert isinstance(CertificateAuthority.objects.get(name="ed").pub.public_key(), ed25519.Ed25519PublicKey)
    assert CertificateAuthority.objects.get(name="ed").subject == "/O=Example/CN=Ed Root"
    assert isinstance(CertificateAuthority.objects.get(name="ed448").pub.public_key(), ed448.Ed448PublicKey)
    key = CertificateAuthority.objects.get(name="rsa").pub.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048


def test_init_ca_intermediate_with_encrypted_parent(password_file: Path, key_storage: Path) -> None:
    run("init_ca", "top", "/CN=Top", "--curve", "P-256", "--password-file", str(password_file))
    key_file = next(key_storage.rglob("*.key")).read_bytes()
    assert b"ENCRYPTED" in key_file

    output = run("init_ca", "sub", "/CN=Sub", "--parent", "top", "--parent-password", "s3cret",
                 "--key-type", "EC", "--acme", "--acme-profile", "server", "--acme-requires-contact",
                 "--acme-website", "https://pki.example.com/", "--acme-caa-identities", "PKI.example.com")
    top, sub = CertificateAuthority.objects.get(name="top"), CertificateAuthority.objects.get(name="sub")
    assert sub.parent == top and "signed by top" in output
    sub.pub.verify_directly_issued_by(top.pub)
    assert sub.acme_enabled and sub.acme_requires_contact and sub.acme_profile == "server"
    assert sub.acme_website == "https://pki.example.com/" and sub.acme_caa_identities == "pki.example.com"
    assert sub.not_after <= top.not_after


def test_init_ca_name_constraints() -> None:
    run("init_ca", "nc", "/CN=Constrained", "--curve", "P-256",
        "--name-constraint", "permit:DNS:example.com", "--name-constraint", "permit:IP:10.0.0.0/8",
        "--name-constraint", "exclude:DNS:secret.example.com")
    extension = CertificateAuthority.objects.get(name="nc").pub.extensions.get_extension_for_class(
        x509.NameConstraints)
    assert extension.critical
    assert x509.DNSName("example.com") in extension.value.permitted_subtrees
    assert x509.DNSName("secret.example.com") in extension.value.excluded_subtrees
    assert "permitted: DNS:example.com, IP:10.0.0.0/8" in run("view_ca", "nc")


@pytest.mark.parametrize(("args", "message"), [
    (["bad", "/XX=1"], "is not a valid name"),
    (["bad", ""], "The subject is empty"),
    (["bad", "/CN=x", "--parent", "nope"], "No CA named 'nope'; known: intermediate, root."),
    (["bad", "/CN=x", "--curve", "P-999"], "'P-999' is not a supported curve"),
    (["bad", "/CN=x", "--key-type", "DSA"], "'DSA' is not a key type"),
    (["bad", "/CN=x", "--key-type", "EC", "--key-size", "2048"], "key_size applies to RSA keys only"),
    (["bad", "/CN=x", "--key-size", "1000"], "power of two"),
    (["bad", "/CN=x", "--key-backend", "hsm"], "'hsm' is not a key backend"),
    (["root", "/CN=x"], "A CA named 'root' exists already."),
    (["bad", "/CN=x", "--expires", "0"], "--expires takes a number of days of at least 1"),
    (["bad", "/CN=x", "--parent", "root", "--path-length", "1"], "less than the parent's"),
    (["bad", "/CN=x", "--parent", "intermediate"], "path length of 0: it cannot sign CAs"),
    (["bad", "/CN=x", "--name-constraint", "allow:DNS:example.com"], "use permit:TYPE:VALUE"),
    (["bad", "/CN=x", "--name-constraint", "permit:IP:10.0.0.1/8"], "not a network in CIDR notation"),
    (["bad", "/CN=x", "--acme-terms-of-service", "ftp://example.com"], "is not an http:// or https:// URL"),
    (["bad", "/CN=x", "--acme-caa-identities", "not a domain"], "is not a domain name"),
    (["bad", "/CN=x", "--acme-profile", "nope"], "invalid choice: 'nope'"),
    (["bad", "/CN=x", "--parent-password", "x"], "need --parent"),
])
def test_init_ca_bad_input_writes_nothing(intermediate: CertificateAuthority, key_storage: Path,
                                          args: list[str], message: str) -> None:
    before = snapshot(key_storage)
    assert message in fails("init_ca", *args)
    assert snapshot(key_storage) == before


def test_init_ca_wrong_or_missing_parent_password(password_file: Path, key_storage: Path,
                                                  tmp_path: Path) -> None:
    run("init_ca", "top", "/CN=Top", "--curve", "P-256", "--password-file", str(password_file))
    before = snapshot(key_storage)
    assert fails("init_ca", "x", "/CN=x", "--parent", "top") == (
        "The private key of CA 'top' is encrypted: a password is required: "
        "use --parent-password or --parent-password-file."
    )
    assert "Wrong password for the private key of CA 'top'" in fails(
        "init_ca", "x", "/CN=x", "--parent", "top", "--parent-password", "wrong")
    empty = tmp_path / "empty"
    empty.write_text("")
    assert "is empty" in fails("init_ca", "x", "/CN=x", "--parent", "top", "--parent-password-file", str(empty))
    assert "Cannot read the password file" in fails(
        "init_ca", "x", "/CN=x", "--parent", "top", "--parent-password-file", str(tmp_path / "missing"))
    assert snapshot(key_storage) == before
    run("init_ca", "x", "/CN=x", "--parent", "top", "--parent-password-file", str(password_file))
    assert len(snapshot(key_storage)[2]) == 2


def test_init_ca_db_key_backend_is_never_shown(key_storage: Path) -> None:
    run("init_ca", "dbca", "/CN=DB CA", "--key-backend", "db", "--curve", "P-256")
    ca = CertificateAuthority.objects.get(name="dbca")
    assert "PRIVATE KEY" in ca.key_backend_options["private_key"]
    assert not list(key_storage.rglob("*.key"))
    shown = run("view_ca", "dbca", "--pem") + run("list_cas")
    assert "PRIVATE" not in shown and "private_key" not in shown and "Key backend:         db" in shown


# --- list_cas, view_ca, edit_ca ------------------------------------------------------------------

def test_list_cas_tree(intermediate: CertificateAuthority, root: CertificateAuthority) -> None:
    run("init_ca", "other", "/CN=Other Root", "--curve", "P-256")
    run("edit_ca", "other", "--disable")
    lines = run("list_cas").splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "EXPIRES", "ACME", "SERIAL"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["other", "root", "intermediate"]
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert by_name["intermediate"].startswith("  intermediate")
    assert by_name["root"].startswith("root")
    assert by_name["intermediate"].split()[1:4] == ["valid", f"{intermediate.not_after:%Y-%m-%d}", "on"]
    assert by_name["other"].split()[1] == "disabled" and by_name["root"].split()[3] == "off"
    assert by_name["root"].split()[4] == root.serial
    assert run("list_cas", "--format", "name").split() == ["intermediate", "other", "root"]


def test_list_cas_empty() -> None:
    assert "No CAs yet" in run("list_cas")


def test_view_ca(intermediate: CertificateAuthority, root: CertificateAuthority) -> None:
    output = run("view_ca", "intermediate")
    assert f"Serial:              {intermediate.serial}" in output
    assert "Issuer:              root (/C=AT/O=Example/CN=Example Root)" in output
    assert "basicConstraints (critical): CA:TRUE, path length 0" in output
    assert "keyUsage (critical): digital_signature, key_cert_sign, crl_sign" in output
    assert f"cRLDistributionPoints: URI:{root.crl_url}" in output
    assert intermediate.ocsp_url in output and intermediate.crl_url in output and intermediate.issuer_url in output
    assert "Directory:" in output and "/acme/directory" in output
    assert "BEGIN CERTIFICATE" not in output
    # by serial, in lower case with colons, and with the certificate appended
    serial = ":".join(intermediate.serial[i:i + 2] for i in range(0, len(intermediate.serial), 2)).lower()
    with_pem = run("view_ca", serial, "--pem")
    pem = with_pem[with_pem.index("-----BEGIN"):].encode()
    assert x509.load_pem_x509_certificate(pem) == intermediate.pub
    assert fails("view_ca", "nope") == "No CA named 'nope'; known: intermediate, root."


def test_view_ca_without_cas() -> None:
    assert "there are no CAs yet" in fails("view_ca", "root")


def test_edit_ca(intermediate: CertificateAuthority, csr_file: Path) -> None:
    output = run("edit_ca", "intermediate", "--disable", "--no-acme", "--acme-profile", "client",
                 "--acme-terms-of-service", "https://example.com/tos", "--acme-caa-identities", "a.example, b.example")
    ca = CertificateAuthority.objects.get(name="intermediate")
    assert not ca.enabled and not ca.acme_enabled and ca.acme_profile == "client"
    assert ca.acme_terms_of_service == "https://example.com/tos" and ca.acme_caa_identities == "a.example,b.example"
    assert "enabled: yes -> no" in output and "acme_profile: 'webserver' -> 'client'" in output
    assert fails("sign_cert", "--ca", "intermediate", "--csr", str(csr_file)) == (
        "CA 'intermediate' is disabled and signs nothing.")
    assert "disabled" in run("list_cas")

    run("edit_ca", "intermediate", "--enable", "--acme", "--acme-requires-contact", "--acme-terms-of-service", "")
    ca.refresh_from_db()
    assert ca.enabled and ca.acme_enabled and ca.acme_requires_contact and ca.acme_terms_of_service == ""
    assert "nothing changed" in run("edit_ca", "intermediate", "--enable")


@pytest.mark.parametrize(("args", "message"), [
    ([], "Nothing to change"),
    (["--acme-website", "not a url"], "is not an http:// or https:// URL"),
    (["--acme-caa-identities", "bad_name"], "is not a domain name"),
    (["--acme-profile", "nope"], "invalid choice"),
    (["--enable", "--disable"], "not allowed with argument"),
])
def test_edit_ca_bad_input_changes_nothing(intermediate: CertificateAuthority, args: list[str],
                                           message: str) -> None:
    before = CertificateAuthority.objects.filter(pk=intermediate.pk).values().get()
    assert message in fails("edit_ca", "intermediate", *args)
    assert CertificateAuthority.objects.filter(pk=intermediate.pk).values().get() == before


# --- sign_cert -----------------------------------------------------------------------------------

def test_sign_cert_verifies_with_openssl(intermediate: CertificateAuthority, root: CertificateAuthority,
                                         csr_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "cert.pem"
    output = run("sign_cert", "--ca", "intermediate", "--csr", str(csr_file), "--alt", "192.0.2.1",
                 "--alt", "DNS:api.example.com", "--out", str(out))
    cert = Certificate.objects.get()
    assert f"Issued certificate {cert.serial}" in output and str(out) in output
    assert x509.load_pem_x509_certificate(out.read_bytes()) == cert.pub
    assert cert.sans == "DNS:example.com,DNS:www.example.com,IP:192.0.2.1,DNS:api.example.com"
    eku = cert.pub.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    result = openssl_verify(tmp_path, root, [intermediate.pub], out)
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stdout + result.stderr
    # without the intermediate, the chain does not verify: the check above means something
    assert openssl_verify(tmp_path, root, [], out).returncode != 0


def test_sign_cert_bundle_verifies(intermediate: CertificateAuthority, root: CertificateAuthority,
                                   csr_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle.pem"
    run("sign_cert", "--ca", "intermediate", "--csr", str(csr_file), "--bundle", "--out", str(out))
    certs = x509.load_pem_x509_certificates(out.read_bytes())
    assert certs == [Certificate.objects.get().pub, intermediate.pub]
    # openssl verify reads the first certificate of the file; the chain comes from the bundle.
    (tmp_path / "chain.pem").write_bytes(certs[1].public_bytes(serialization.Encoding.PEM))
    result = openssl_verify(tmp_path, root, certs[1:], out)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sign_cert_options(intermediate: CertificateAuthority, tmp_path: Path) -> None:
    csr_file = write_csr(tmp_path / "req.der", make_csr("/CN=ignored.example", sans=["csr.example.com"]), "DER")
    pem = run("sign_cert", "--ca", intermediate.serial.lower(), "--csr", str(csr_file), "--no-csr-sans",
              "--subject", "/O=Example/CN=client.example.com", "--alt", "DNS:other.example.com",
              "--profile", "client", "--expires", "10")
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert cert.subject.rfc4514_string() == "CN=client.example.com,O=Example"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["client.example.com", "other.example.com"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert abs(cert.not_valid_after_utc - (datetime.now(UTC) + timedelta(days=10))) < timedelta(minutes=10)
    assert Certificate.objects.get().profile == "client"


def test_sign_cert_from_stdin(intermediate: CertificateAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    csr = make_csr("/CN=stdin.example.com")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(csr.public_bytes(serialization.Encoding.PEM))))
    pem = run("sign_cert", "--ca", "intermediate", "--csr", "-")
    assert x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string() == "CN=stdin.example.com"


def test_sign_cert_with_password(locked: CertificateAuthority, csr_file: Path, password_file: Path,
                                 tmp_path: Path) -> None:
    out = tmp_path / "cert.pem"
    before = Certificate.objects.count()
    assert fails("sign_cert", "--ca", "locked", "--csr", str(csr_file), "--out", str(out)) == (
        "The private key of CA 'locked' is encrypted: a password is required: use --password or --password-file.")
    assert fails("sign_cert", "--ca", "locked", "--csr", str(csr_file), "--password", "nope", "--out", str(out)) == (
        "Wrong password for the private key of CA 'locked': use --password or --password-file.")
    assert Certificate.objects.count() == before and not out.exists()
    run("sign_cert", "--ca", "locked", "--csr", str(csr_file), "--password-file", str(password_file),
        "--out", str(out))
    assert x509.load_pem_x509_certificate(out.read_bytes()).issuer == locked.pub.subject


def test_sign_cert_name_constraints(root: CertificateAuthority, tmp_path: Path) -> None:
    run("init_ca", "corp", "/CN=Corp CA", "--parent", "root", "--curve", "P-256",
        "--name-constraint", "permit:DNS:corp.example")
    outside = write_csr(tmp_path / "outside.csr", make_csr("/CN=www.example.org"))
    out = tmp_path / "cert.pem"
    message = fails("sign_cert", "--ca", "corp", "--csr", str(outside), "--out", str(out))
    assert message == ("CA 'corp' may not sign DNS:www.example.org: its name constraints permit only "
                       "DNS:corp.example.")
    assert "may not sign DNS:evil.example.org" in fails(
        "sign_cert", "--ca", "corp", "--csr", str(outside), "--subject", "/CN=a.corp.example",
        "--no-csr-sans", "--alt", "evil.example.org", "--out", str(out))
    assert not out.exists() and Certificate.objects.count() == 0
    run("sign_cert", "--ca", "corp", "--csr", str(outside), "--subject", "/CN=www.corp.example", "--out", str(out))
    assert Certificate.objects.get().sans == "DNS:www.corp.example"


@pytest.mark.parametrize(("args", "message"), [
    (["--ca", "nope"], "No CA named 'nope'; known: intermediate, root."),
    (["--csr", "{tmp}/garbage.csr"], "garbage.csr is not a certificate signing request (PEM or DER)."),
    (["--csr", "{tmp}/missing.csr"], "Cannot read the CSR"),
    (["--csr", "{tmp}/cert.pem"], "cert.pem is not a certificate signing request"),
    (["--profile", "nope"], "'nope' is not a profile; use one of webserver"),
    (["--subject", "/CN=x/FOO=bar"], "is not a valid name"),
    (["--subject", "CN"], "is not a valid name"),
    (["--alt", "not a name!"], "--alt: 'not a name!' is not a valid DNS name."),
    (["--alt", "IP:999.1.1.1"], "--alt: 'IP:999.1.1.1' is not an IP address."),
    (["--expires", "-5"], "--expires takes a number of days of at least 1"),
    (["--out", "{tmp}/no/such/folder/cert.pem"], "the folder"),
    (["--password-file", "{tmp}/missing"], "Cannot read the password file"),
])
def test_sign_cert_bad_input_writes_nothing(intermediate: CertificateAuthority, csr_file: Path,
                                            tmp_path: Path, key_storage: Path, args: list[str],
                                            message: str) -> None:
    (tmp_path / "garbage.csr").write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n")
    (tmp_path / "cert.pem").write_text(intermediate.pem)
    options = {"--ca": "intermediate", "--csr": str(csr_file), "--out": str(tmp_path / "out.pem")}
    extra: list[str] = []
    for name, value in zip(args[::2], args[1::2], strict=True):
        value = value.format(tmp=tmp_path)
        if name in options:
            options[name] = value
        else:
            extra += [name, value]
    before = snapshot(key_storage)
    flat = [item for pair in options.items() for item in pair]
    assert message in fails("sign_cert", *flat, *extra)
    assert snapshot(key_storage) == before
    assert not (tmp_path / "out.pem").exists()


def test_sign_cert_refuses_to_overwrite(intermediate: CertificateAuthority, csr_file: Path,
                                        tmp_path: Path) -> None:
    out = tmp_path / "cert.pem"
    out.write_text("keep me")
    message = fails("sign_cert", "--ca", "intermediate", "--csr", str(csr_file), "--out", str(out))
    assert message == f"{out} exists already; use --force to overwrite it."
    assert out.read_text() == "keep me" and Certificate.objects.count() == 0
    run("sign_cert", "--ca", "intermediate", "--csr", str(csr_file), "--out", str(out), "--force")
    assert x509.load_pem_x509_certificate(out.read_bytes()) == Certificate.objects.get().pub


# --- list_certs, view_cert, revoke_cert ----------------------------------------------------------

@pytest.fixture
def three_certs(intermediate: CertificateAuthority, root: CertificateAuthority) -> list[Certificate]:
    from pki_server.core.key_backends import UsePrivateKeyOptions

    certs = []
    for name in ("alpha.example.com", "beta.example.com", "gamma.example.org"):
        certs.append(Certificate.objects.create_cert(intermediate, UsePrivateKeyOptions(), make_csr(f"/CN={name}")))
    return certs


def test_list_certs(three_certs: list[Certificate]) -> None:
    alpha, beta, gamma = three_certs
    gamma.revoke("superseded")
    Certificate.objects.filter(pk=beta.pk).update(not_after=timezone.now() + timedelta(days=3))

    table = run("list_certs")
    assert table.splitlines()[0].split() == ["SERIAL", "CA", "STATUS", "EXPIRES", "NAMES"]
    assert alpha.serial in table and beta.serial in table and gamma.serial not in table
    assert run("list_certs", "--format", "serial").split() == [beta.serial, alpha.serial]
    assert run("list_certs", "--revoked", "--format", "serial").split() == [gamma.serial]
    assert run("list_certs", "--all", "--format", "serial").split() == [gamma.serial, beta.serial, alpha.serial]
    assert run("list_certs", "--expiring-in", "7", "--format", "serial").split() == [beta.serial]
    assert run("list_certs", "--search", "ALPHA", "--format", "serial").split() == [alpha.serial]
    assert run("list_certs", "--all", "--search", ".org", "--format", "serial").split() == [gamma.serial]
    assert run("list_certs", "--search", alpha.serial[:10].lower(), "--format", "serial").split() == [alpha.serial]
    assert run("list_certs", "--ca", "root") == "No certificates match.\n"
    assert run("list_certs", "--ca", "intermediate", "--format", "serial").split() == [beta.serial, alpha.serial]
    assert "revoked" in run("list_certs", "--revoked")
    assert "No CA named 'nope'" in fails("list_certs", "--ca", "nope")


def test_list_certs_expired(three_certs: list[Certificate]) -> None:
    alpha = three_certs[0]
    Certificate.objects.filter(pk=alpha.pk).update(not_after=timezone.now() - timedelta(days=1))
    assert run("list_certs", "--expired", "--format", "serial").split() == [alpha.serial]
    assert alpha.serial not in run("list_certs")
    assert "expired" in run("list_certs", "--expired")


def test_view_cert(three_certs: list[Certificate]) -> None:
    alpha = three_certs[0]
    colons = ":".join(alpha.serial[i:i + 2] for i in range(0, len(alpha.serial), 2)).lower()
    output = run("view_cert", colons, "--pem")
    assert f"Serial:     {alpha.serial}" in output
    assert "Names:      DNS:alpha.example.com" in output and "Status:     valid" in output
    assert "Issuer:     intermediate" in output and "extendedKeyUsage: serverAuth" in output
    assert x509.load_pem_x509_certificate(output[output.index("-----BEGIN"):].encode()) == alpha.pub
    assert fails("view_cert", "ABCDEF") == "No certificate with serial ABCDEF."
    assert fails("view_cert", "xyz") == "'xyz' is not a serial number (hexadecimal, colons allowed)."


def test_revoke_cert(three_certs: list[Certificate], intermediate: CertificateAuthority) -> None:
    alpha = three_certs[0]
    output = run("revoke_cert", alpha.serial.lower(), "--reason", "key_compromise",
                 "--compromised", "2024-05-01T12:00:00")
    alpha.refresh_from_db()
    assert alpha.revoked and alpha.revoked_reason == "key_compromise"
    assert alpha.compromised == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert f"Revoked certificate {alpha.serial}" in output and "key_compromise" in output
    assert "Status:            revoked" in run("view_cert", alpha.serial)
    assert "is revoked already" in fails("revoke_cert", alpha.serial)
    assert "'stolen' is not a revocation reason; use one of unspecified, key_compromise" in fails(
        "revoke_cert", three_certs[1].serial, "--reason", "stolen")
    assert "is not an ISO 8601 date" in fails("revoke_cert", three_certs[1].serial, "--compromised", "yesterday")
    assert "is in the future" in fails("revoke_cert", three_certs[1].serial, "--compromised", "2999-01-01")
    assert "is the serial of CA 'intermediate'" in fails("revoke_cert", intermediate.serial)
    assert Certificate.objects.filter(revoked=True).count() == 1
    run("revoke_cert", three_certs[1].serial)
    assert Certificate.objects.get(pk=three_certs[1].pk).revoked_reason == "unspecified"


# --- dump_ca, dump_cert --------------------------------------------------------------------------

def test_dump_ca_and_cert(three_certs: list[Certificate], intermediate: CertificateAuthority,
                          root: CertificateAuthority, tmp_path: Path) -> None:
    alpha = three_certs[0]
    assert x509.load_pem_x509_certificate(run("dump_ca", "root").encode()) == root.pub
    assert x509.load_pem_x509_certificates(run("dump_ca", "intermediate", "--bundle").encode()) == [
        intermediate.pub, root.pub]
    assert x509.load_pem_x509_certificates(run("dump_cert", alpha.serial, "--bundle").encode()) == [
        alpha.pub, intermediate.pub]

    run("dump_ca", "intermediate", str(tmp_path / "ca.der"), "--format", "der")
    assert x509.load_der_x509_certificate((tmp_path / "ca.der").read_bytes()) == intermediate.pub
    run("dump_cert", alpha.serial, str(tmp_path / "cert.pem"))
    assert x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes()) == alpha.pub
    assert "exists already; use --force" in fails("dump_cert", alpha.serial, str(tmp_path / "cert.pem"))
    run("dump_cert", three_certs[1].serial, str(tmp_path / "cert.pem"), "--force")
    assert x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes()) == three_certs[1].pub

    assert fails("dump_cert", alpha.serial, "--format", "DER", "--bundle") == (
        "DER holds one certificate: use --format PEM for a bundle.")
    assert "No CA named 'nope'" in fails("dump_ca", "nope", str(tmp_path / "nope.pem"))
    assert not (tmp_path / "nope.pem").exists()


def test_dump_der_to_stdout_writes_bytes(three_certs: list[Certificate]) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8")
    call_command("dump_cert", three_certs[0].serial, "--format", "DER", stdout=stream)
    stream.flush()
    assert raw.getvalue() == three_certs[0].pub.public_bytes(serialization.Encoding.DER)


# --- init ----------------------------------------------------------------------------------------

def test_init_creates_default_cas_once(key_storage: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PKI_BASE_URL = "https://pki.example.net"
    output = run("init")
    root = CertificateAuthority.objects.get(name="root")
    intermediate = CertificateAuthority.objects.get(name="intermediate")
    assert root.is_root and root.path_length == 1 and root.subject == "/CN=pki-server Root CA"
    assert root.pub.public_key().curve.name == "secp384r1" and not root.acme_enabled
    assert intermediate.parent == root and intermediate.path_length == 0 and intermediate.acme_enabled
    assert intermediate.pub.public_key().curve.name == "secp256r1"
    assert intermediate.subject == "/CN=pki-server Intermediate CA"
    intermediate.pub.verify_directly_issued_by(root.pub)
    assert "ACME directory: https://pki.example.net/acme/directory" in output
    assert root.serial in output and intermediate.serial in output

    before = snapshot(key_storage)
    again = run("init")
    assert "nothing changed" in again and "ACME directory: https://pki.example.net/acme/directory" in again
    assert snapshot(key_storage) == before and len(before[2]) == 2


def test_init_with_existing_cas_changes_nothing(root: CertificateAuthority, key_storage: Path) -> None:
    before = snapshot(key_storage)
    output = run("init")
    assert "CAs exist already (root): nothing changed." in output and "ACME directory" not in output
    assert snapshot(key_storage) == before


# --- Real processes ------------------------------------------------------------------------------

def _environment(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PKI_")}
    env.update(PKI_DATA_DIR=str(data_dir), PKI_DEFAULT_KEY_SIZE="2048")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def pki_server(data_dir: Path, *args: str, cwd: Path | None = None,
               stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "pki_server", *args], env=_environment(data_dir), cwd=cwd,
                          input=stdin, capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory initialised by a real `pki-server init`."""
    data_dir = tmp_path_factory.mktemp("cli") / "var"
    result = pki_server(data_dir, "init")
    assert result.returncode == 0, result.stderr.decode()
    assert b"ACME directory: http://127.0.0.1:8000/acme/directory" in result.stdout
    assert result.stderr == b""
    return data_dir


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], message: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("CommandError: "), stderr
    assert message in stderr


def test_process_sign_and_verify(instance: Path, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name.from_rfc4514_string("CN=proc.example.com"))
           .sign(key, hashes.SHA256()))
    (tmp_path / "req.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    result = pki_server(instance, "sign_cert", "--ca", "intermediate", "--csr", "req.csr", "--out", "cert.pem",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    for name in ("root", "intermediate"):
        assert pki_server(instance, "dump_ca", name, f"{name}.pem", cwd=tmp_path).returncode == 0
    verify = subprocess.run(["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "intermediate.pem",
                             "cert.pem"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    serial = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes()).serial_number
    der = pki_server(instance, "dump_cert", f"{serial:x}", "--format", "DER")
    assert der.returncode == 0
    assert x509.load_der_x509_certificate(der.stdout).serial_number == serial
    listed = pki_server(instance, "list_certs", "--format", "serial").stdout.decode().split()
    assert f"{serial:X}" in listed


@pytest.mark.parametrize(("args", "message"), [
    (["sign_cert", "--ca", "nope", "--csr", "req.csr", "--out", "out.pem"],
     "No CA named 'nope'; known: intermediate, root."),
    (["sign_cert", "--ca", "intermediate", "--csr", "bad.csr", "--out", "out.pem"],
     "bad.csr is not a certificate signing request (PEM or DER)."),
    (["sign_cert", "--ca", "intermediate", "--csr", "req.csr", "--profile", "nope", "--out", "out.pem"],
     "'nope' is not a profile"),
    (["sign_cert", "--ca", "intermediate", "--csr", "req.csr", "--alt", "a..b", "--out", "out.pem"],
     "--alt: 'a..b' is not a valid DNS name."),
    (["init_ca", "x", "/CN=x", "--parent", "intermediate", "--curve", "P-256"], "path length of 0"),
    (["revoke_cert", "ABCDEF"], "No certificate with serial ABCDEF."),
    (["view_ca", "nope"], "No CA named 'nope'"),
])
def test_process_errors_are_one_line(instance: Path, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "req.csr").write_bytes(make_csr("/CN=x.example.com").public_bytes(serialization.Encoding.PEM))
    (tmp_path / "bad.csr").write_bytes(b"garbage")
    keys_before = sorted((instance / "keys").rglob("*"))
    result = pki_server(instance, *args, cwd=tmp_path)
    assert_one_line_error(result, message)
    assert result.stdout == b""
    assert not (tmp_path / "out.pem").exists()
    assert sorted((instance / "keys").rglob("*")) == keys_before


def test_process_without_database(tmp_path: Path) -> None:
    result = pki_server(tmp_path / "fresh", "list_cas")
    assert_one_line_error(result, "Run `pki-server init`.")
