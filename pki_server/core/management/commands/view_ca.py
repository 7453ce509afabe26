"""``pki-server view_ca NAME``: everything about a CA except where its private key is."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser

from pki_server.core.management import base
from pki_server.core.models import CertificateAuthority


class Command(base.PkiCommand):
    help = "Show a certificate authority: certificate, extensions, URLs and ACME settings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Name (or serial) of the CA.")
        parser.add_argument("--pem", action="store_true", help="Append the certificate in PEM.")

    def run(self, *args: Any, **options: Any) -> None:
        ca = base.get_ca(options["name"])
        children = ", ".join(ca.children.values_list("name", flat=True)) or "-"
        # key_backend_options is never shown: the database backend keeps the key itself there.
        fields: list[tuple[str, Any]] = [
            ("Name", ca.name),
            ("Serial", ca.serial),
            ("Subject", ca.subject),
            ("Issuer", f"{ca.parent.name} ({ca.parent.subject})" if ca.parent else "self-signed (root CA)"),
            ("Child CAs", children),
            ("Enabled", "yes" if ca.enabled else "no"),
            ("Status", base.status_of(ca)),
            ("Not before", base.when(ca.not_before)),
            ("Not after", base.when(ca.not_after)),
            ("Key", ca.key_type),
            ("Key backend", ca.key_backend_alias),
            ("Path length", "unlimited" if ca.path_length is None else ca.path_length),
            ("SHA-256", ca.sha256_fingerprint),
            ("Issued certificates", ca.certificates.count()),
        ]
        if ca.revoked:
            fields += [("Revoked", base.when(ca.revoked_date)), ("Revocation reason", ca.revoked_reason)]
        self.stdout.write("\n".join(base.field_lines(fields)))
        self.stdout.write("\n".join(base.extension_lines(ca.pub)))
        self.stdout.write("URLs:")
        self.stdout.write("\n".join("  " + line for line in base.field_lines([
            ("Certificate (DER)", ca.issuer_url), ("OCSP", ca.ocsp_url), ("CRL", ca.crl_url),
        ])))
        self.stdout.write("ACME:")
        acme: list[tuple[str, Any]] = [
            ("Enabled", "yes" if ca.acme_enabled else "no"),
            ("Requires contact", "yes" if ca.acme_requires_contact else "no"),
            ("Profile", ca.acme_profile),
            ("Terms of service", ca.acme_terms_of_service or "-"),
            ("Website", ca.acme_website or "-"),
            ("CAA identities", ca.acme_caa_identities or "-"),
        ]
        if ca.acme_enabled and ca.enabled and CertificateAuthority.objects.default_acme() == ca:
            acme.append(("Directory", f"{settings.PKI_BASE_URL}/acme/directory"))
        self.stdout.write("\n".join("  " + line for line in base.field_lines(acme)))
        if options["pem"]:
            self.stdout.write(ca.pem, ending="")
