"""``pki-server view_cert SERIAL``: an issued certificate, its status and extensions."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from pki_server.core import utils
from pki_server.core.management import base


class Command(base.PkiCommand):
    help = "Show an issued certificate (serial in hex, any case, colons allowed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("serial", help="Serial number in hex, e.g. 4A:3F:... or 4a3f...")
        parser.add_argument("--pem", action="store_true", help="Append the certificate in PEM.")

    def run(self, *args: Any, **options: Any) -> None:
        cert = base.get_cert(options["serial"])
        fields: list[tuple[str, Any]] = [
            ("Serial", cert.serial),
            ("Subject", cert.subject or "-"),
            ("Names", cert.sans.replace(",", ", ") or "-"),
            ("Issuer", f"{cert.ca.name} ({cert.ca.subject})"),
            ("Profile", cert.profile or "-"),
            ("Status", cert.status),
            ("Not before", base.when(cert.not_before)),
            ("Not after", base.when(cert.not_after)),
            ("Key", utils.describe_key(cert.pub.public_key())),
            ("SHA-256", cert.sha256_fingerprint),
        ]
        if cert.revoked:
            fields += [("Revoked", base.when(cert.revoked_date)), ("Revocation reason", cert.revoked_reason)]
            if cert.compromised:
                fields.append(("Compromised", base.when(cert.compromised)))
        self.stdout.write("\n".join(base.field_lines(fields)))
        self.stdout.write("\n".join(base.extension_lines(cert.pub)))
        if options["pem"]:
            self.stdout.write(cert.pem, ending="")
