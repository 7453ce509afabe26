"""``pki-server dump_crl CA [FILE]``: a CA's latest CRL in PEM or DER, optionally signed anew."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from django.core.management.base import CommandError, CommandParser

from pki_server.core import crl as crls
from pki_server.core.key_backends import UsePrivateKeyOptions
from pki_server.core.management import base


class Command(base.PkiCommand):
    help = ("Write a CA's latest CRL (PEM or DER) to FILE or standard output; with --regenerate, sign a "
            "new one first.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Name (or serial) of the CA.")
        base.add_output_arguments(parser)
        parser.add_argument("--regenerate", action="store_true",
                            help="Sign a new CRL with the CA's key first (and store it: the server serves it).")
        base.add_password_arguments(parser, what="the CA's private key (with --regenerate)")

    def run(self, *args: Any, **options: Any) -> None:
        password = base.read_password(options)
        if password is not None and not options["regenerate"]:
            raise CommandError("--password and --password-file go with --regenerate.")
        base.check_writable(options["path"], options["force"])
        ca = base.get_ca(options["name"])
        if options["regenerate"]:
            latest = crls.generate_crl(ca, UsePrivateKeyOptions(password=password))
        else:
            found = crls.latest_crl(ca)
            if found is None:
                raise CommandError(
                    f"CA {ca.name!r} has no CRL yet; sign one with `pki-server dump_crl {ca.name} --regenerate` "
                    "(and --password-file if its key has a password)."
                )
            latest = found
        data = x509.load_der_x509_crl(bytes(latest.der)).public_bytes(base.ENCODINGS[options["format"]])
        base.write_output(self, data, options["path"], options["force"])
