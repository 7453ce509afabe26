"""``pki-server init``: migrate the database and, when there is no CA yet, create a default pair.

The pair is a root CA ``root`` (EC P-384, path length 1) and below it an intermediate
``intermediate`` (EC P-256, path length 0) that serves ACME. Neither key has a password, so
that the server can sign ACME orders unattended; the keys are files of mode 0600 in
``PKI_DATA_DIR/keys``. Running ``init`` again changes nothing.
"""

from __future__ import annotations

from io import StringIO
from typing import Any, NamedTuple

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandParser
from django.db import transaction

from pki_server.core.management import base
from pki_server.core.models import CertificateAuthority


class DefaultCA(NamedTuple):
    name: str
    subject: str
    curve: str
    path_length: int


ROOT = DefaultCA("root", "/CN=pki-server Root CA", "P-384", 1)
INTERMEDIATE = DefaultCA("intermediate", "/CN=pki-server Intermediate CA", "P-256", 0)


class Command(base.PkiCommand):
    help = ("Create or update the database, and create a root CA and an ACME-enabled intermediate CA "
            "when no CA exists yet. Running it again changes nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--key-backend", default="default", metavar="ALIAS",
                            help="Key backend for the two keys (default: default, files in PKI_DATA_DIR/keys).")

    def run(self, *args: Any, **options: Any) -> None:
        output = StringIO()
        call_command("migrate", interactive=False, verbosity=1, stdout=output)
        migrated = "No migrations to apply." not in output.getvalue()
        db = settings.DATABASES["default"]
        self.stdout.write(f"Database {db['NAME']}: {'migrated' if migrated else 'up to date'}.")

        existing = list(CertificateAuthority.objects.values_list("name", flat=True))
        if existing:
            self.stdout.write(f"CAs exist already ({', '.join(existing)}): nothing changed.")
        else:
            root, intermediate = self.create_default_cas(options["key_backend"])
            for ca in (root, intermediate):
                self.stdout.write(f"Created {'root' if ca.is_root else 'intermediate'} CA {ca.name}: "
                                  f"{ca.subject}, {ca.key_type}, serial {ca.serial}, valid until "
                                  f"{base.when(ca.not_after)}{', ACME on' if ca.acme_enabled else ''}.")
        if CertificateAuthority.objects.default_acme() is not None:
            self.stdout.write(f"ACME directory: {settings.PKI_BASE_URL}/acme/directory")

    def create_default_cas(self, alias: str) -> tuple[CertificateAuthority, CertificateAuthority]:
        backend = base.get_key_backend(alias)
        options = backend.create_private_key_options_class
        with transaction.atomic():
            root = CertificateAuthority.objects.init(
                ROOT.name, backend, options(key_type="EC", elliptic_curve=ROOT.curve), ROOT.subject,
                path_length=ROOT.path_length,
            )
            try:
                intermediate = CertificateAuthority.objects.init(
                    INTERMEDIATE.name, backend, options(key_type="EC", elliptic_curve=INTERMEDIATE.curve),
                    INTERMEDIATE.subject, parent=root, path_length=INTERMEDIATE.path_length,
                    acme_enabled=True,
                )
            except BaseException:
                backend.delete_private_key(root.key_backend_options)  # the transaction drops its row
                raise
        return root, intermediate
