"""``pki-server dump_ca NAME [FILE]``: a CA's certificate in PEM or DER."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from pki_server.core.management import base


class Command(base.PkiCommand):
    help = "Write a CA's certificate (PEM or DER) to FILE or standard output."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Name (or serial) of the CA.")
        base.add_output_arguments(parser)
        parser.add_argument("--bundle", action="store_true",
                            help="The CA and every CA above it, up to and including the root (PEM only).")

    def run(self, *args: Any, **options: Any) -> None:
        base.check_writable(options["path"], options["force"])
        ca = base.get_ca(options["name"])
        certificates = [item.pub for item in ca.bundle()] if options["bundle"] else [ca.pub]
        base.write_output(self, base.encode(certificates, options["format"]), options["path"], options["force"])
