"""``pki-server list_cas``: the CAs as a tree, intermediates indented below their parent."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.core.management.base import CommandParser

from pki_server.core.management import base
from pki_server.core.models import CertificateAuthority


class Command(base.PkiCommand):
    help = "List the certificate authorities: name, status, expiry, ACME, serial."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["tree", "name"], default="tree",
                            help="tree (default), or one name per line.")

    def run(self, *args: Any, **options: Any) -> None:
        cas = list(CertificateAuthority.objects.all())
        if options["format"] == "name":
            for ca in cas:
                self.stdout.write(ca.name)
            return
        if not cas:
            self.stdout.write("No CAs yet: create them with `pki-server init` or `pki-server init_ca`.")
            return
        children: dict[int | None, list[CertificateAuthority]] = defaultdict(list)
        for ca in cas:
            children[ca.parent_id].append(ca)
        rows: list[tuple[str, CertificateAuthority]] = []

        def walk(parent_id: int | None, depth: int) -> None:
            for ca in children.get(parent_id, []):
                rows.append(("  " * depth + ca.name, ca))
                walk(ca.pk, depth + 1)

        walk(None, 0)
        width = max(len("NAME"), *(len(label) for label, _ in rows))
        self.stdout.write(f"{'NAME':<{width}}  {'STATUS':<9}  {'EXPIRES':<10}  ACME  SERIAL")
        for label, ca in rows:
            self.stdout.write(
                f"{label:<{width}}  {base.status_of(ca):<9}  {ca.not_after:%Y-%m-%d}  "
                f"{'on ' if ca.acme_enabled else 'off'}   {ca.serial}"
            )
