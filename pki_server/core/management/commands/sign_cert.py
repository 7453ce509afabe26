"""``pki-server sign_cert --ca NAME --csr FILE``: issue a certificate for a CSR.

The CSR's SubjectAlternativeName is copied unless ``--no-csr-sans``; its other extensions are
not (the profile decides key usage and the rest). The output file is written only after the
certificate was signed and saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from django.core.management.base import CommandError, CommandParser

from pki_server.core import extensions as ext
from pki_server.core.key_backends import UsePrivateKeyOptions
from pki_server.core.management import base
from pki_server.core.models import Certificate
from pki_server.core.profiles import PROFILES


def load_csr(path: str) -> x509.CertificateSigningRequest:
    """A CSR in PEM or DER from ``path`` (``-``: standard input)."""
    what = "standard input" if path == "-" else path
    if path == "-":
        data = base.stdin_bytes()
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as ex:
            raise CommandError(f"Cannot read the CSR {path}: {ex.strerror or ex}.") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data.strip())
        return x509.load_der_x509_csr(data)
    except ValueError:
        raise CommandError(f"{what} is not a certificate signing request (PEM or DER).") from None


def csr_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []
    except ValueError as ex:  # a malformed extension in the CSR
        raise CommandError(f"The CSR's extensions cannot be read: {ex}") from None


class Command(base.PkiCommand):
    help = "Sign a certificate signing request (CSR) and write the certificate in PEM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ca", required=True, metavar="NAME", help="Name (or serial) of the signing CA.")
        parser.add_argument("--csr", required=True, metavar="FILE",
                            help="The CSR, PEM or DER; - reads standard input.")
        parser.add_argument("--subject", help="Subject of the certificate (default: the CSR's subject).")
        parser.add_argument("--alt", action="append", default=[], metavar="NAME",
                            help="Subject alternative name (repeatable): example.com, 192.0.2.1, DNS:x, IP:y.")
        parser.add_argument("--no-csr-sans", dest="csr_sans", action="store_false",
                            help="Ignore the subject alternative names in the CSR.")
        parser.add_argument("--profile", metavar="NAME",
                            help=f"Certificate profile: {', '.join(PROFILES)} (default: PKI_DEFAULT_PROFILE).")
        parser.add_argument("--expires", type=int, metavar="DAYS",
                            help="Validity in days (default: the profile's; never beyond the CA's).")
        base.add_password_arguments(parser)
        parser.add_argument("--out", metavar="FILE", help="Write the certificate to FILE (default: standard output).")
        parser.add_argument("--force", action="store_true", help="Overwrite --out if it exists.")
        parser.add_argument("--bundle", action="store_true",
                            help="Append the chain of intermediate CAs (up to, not including, the root).")

    def run(self, *args: Any, **options: Any) -> None:
        out = options["out"]
        base.check_writable(out, options["force"])
        ca = base.get_ca(options["ca"])
        password = base.read_password(options)
        not_after = base.days(options["expires"], "--expires")
        csr = load_csr(options["csr"])

        names: list[x509.GeneralName] = csr_sans(csr) if options["csr_sans"] else []
        for value in options["alt"]:
            try:
                name = ext.parse_general_name(value)
            except ValueError as ex:
                raise CommandError(f"--alt: {ex}") from None
            if name not in names:
                names.append(name)
        extensions = [x509.SubjectAlternativeName(names)] if names else []

        cert = Certificate.objects.create_cert(
            ca, UsePrivateKeyOptions(password=password), csr, options["subject"],
            profile=options["profile"], not_after=not_after, extensions=extensions,
        )
        pem = (cert.bundle_pem if options["bundle"] else cert.pem).encode("ascii")
        base.write_output(self, pem, out, options["force"])
        if out and out != "-":
            self.stdout.write(f"Issued certificate {cert.serial} to {cert.subject or cert.sans} "
                              f"(valid until {base.when(cert.not_after)}), written to {out}.")
