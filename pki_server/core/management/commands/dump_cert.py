"""``pki-server dump_cert SERIAL [FILE]``: an issued certificate in PEM or DER."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from pki_server.core.management import base


class Command(base.PkiCommand):
    help = "Write an issued certificate (PEM or DER) to FILE or standard output."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("serial", help="Serial number in hex (any case, colons allowed).")
        base.add_output_arguments(parser)
        parser.add_argument("--bundle", action="store_true",
                            help="Append the chain of intermediate CAs, not the root (PEM only).")

    def run(self, *args: Any, **options: Any) -> None:
        base.check_writable(options["path"], options["force"])
        cert = base.get_cert(options["serial"])
        certificates = cert.bundle() if options["bundle"] else [cert.pub]
        base.write_output(self, base.encode(certificates, options["format"]), options["path"], options["force"])
