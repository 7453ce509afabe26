"""``pki-server init_ca NAME SUBJECT``: create a root CA, or an intermediate with ``--parent``."""

from __future__ import annotations

import argparse
from typing import Any

from cryptography import x509
from django.core.management.base import CommandError, CommandParser

from pki_server.core import utils
from pki_server.core.key_backends import UsePrivateKeyOptions
from pki_server.core.management import base
from pki_server.core.models import CertificateAuthority
from pki_server.core.profiles import PROFILES


def add_acme_arguments(parser: CommandParser, *, default: bool | None) -> None:
    """The ACME options that init_ca and edit_ca share (``default`` None: leave unchanged)."""
    group = parser.add_argument_group("ACME")
    group.add_argument("--acme", action=argparse.BooleanOptionalAction, default=default,
                       help="Serve this CA over ACME." + (" Default: off." if default is False else ""))
    group.add_argument("--acme-requires-contact", action=argparse.BooleanOptionalAction,
                       default=default,
                       help="New ACME accounts must give a mailto: contact.")
    group.add_argument("--acme-profile", choices=list(PROFILES), metavar="PROFILE",
                       help=f"Profile of certificates issued over ACME: {', '.join(PROFILES)}.")
    group.add_argument("--acme-terms-of-service", metavar="URL",
                       help="Terms of service ACME clients agree to.")
    group.add_argument("--acme-website", metavar="URL", help="Website shown in the ACME directory.")
    group.add_argument("--acme-caa-identities", metavar="DOMAINS",
                       help="Comma-separated domain names that CAA records use for this CA.")


class Command(base.PkiCommand):
    help = "Create a certificate authority: a root, or an intermediate signed by --parent."
    signing_key_options = "--parent-password or --parent-password-file"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A short, unique name for the CA.")
        parser.add_argument("subject", help='Subject, as "/C=AT/O=Example/CN=Example Root" or RFC 4514.')
        parent = parser.add_argument_group("Parent (for an intermediate CA)")
        parent.add_argument("--parent", metavar="CA", help="Name (or serial) of the CA that signs this one.")
        base.add_password_arguments(parent, "parent-", "the parent CA's private key")

        key = parser.add_argument_group("Private key")
        key.add_argument("--key-type", metavar="TYPE",
                         help=f"{', '.join(utils.KEY_TYPES)} (default: EC with --curve, otherwise RSA).")
        key.add_argument("--key-size", type=int, metavar="BITS",
                         help="RSA key size (default: PKI_DEFAULT_KEY_SIZE).")
        key.add_argument("--curve", metavar="CURVE", help="Elliptic curve: P-256 (default), P-384 or P-521.")
        key.add_argument("--key-backend", default="default", metavar="ALIAS",
                         help="Key backend from PKI_KEY_BACKENDS (default: default, files in "
                              "PKI_DATA_DIR/keys).")
        base.add_password_arguments(key, "", "the new private key (encrypts it)")

        cert = parser.add_argument_group("Certificate")
        cert.add_argument("--path-length", type=int, metavar="N",
                          help="How many CAs may follow below this one (default: unlimited for a root, "
                               "one less than the parent's for an intermediate).")
        cert.add_argument("--expires", type=int, metavar="DAYS",
                          help="Validity in days (default: PKI_CA_DEFAULT_EXPIRES; never beyond the "
                               "parent's).")
        cert.add_argument("--name-constraint", action="append", default=[],
                          metavar="permit|exclude:TYPE:NAME",
                          help="Restrict the names this CA and the CAs below it may sign (repeatable), e.g. "
                               "permit:DNS:example.com, exclude:IP:10.0.0.0/8, permit:email:.example.com.")
        add_acme_arguments(parser, default=False)

    def run(self, *args: Any, **options: Any) -> None:
        parent = base.get_ca(options["parent"]) if options["parent"] else None
        parent_password = base.read_password(options, "parent-")
        if parent is None and parent_password is not None:
            raise CommandError("--parent-password and --parent-password-file need --parent.")
        password = base.read_password(options)
        subject = utils.x509_name(options["subject"])
        if not len(subject):
            raise CommandError("The subject is empty; give one such as /CN=Example Root CA.")
        not_after = base.days(options["expires"], "--expires")
        constraints = base.parse_name_constraints(options["name_constraint"])
        extensions: list[x509.Extension[x509.ExtensionType]] = []
        if constraints is not None:  # RFC 5280 §4.2.1.10: conforming CAs MUST mark it critical
            extensions.append(x509.Extension(constraints.oid, True, constraints))
        backend = base.get_key_backend(options["key_backend"])
        key_options = backend.create_private_key_options_class(
            password=password,
            key_type=utils.parse_key_type(options["key_type"]) if options["key_type"] else None,
            key_size=options["key_size"],
            elliptic_curve=utils.parse_elliptic_curve(options["curve"]) if options["curve"] else None,
        )
        acme: dict[str, Any] = {
            "acme_enabled": bool(options["acme"]),
            "acme_requires_contact": bool(options["acme_requires_contact"]),
            "acme_profile": options["acme_profile"] or "webserver",
            "acme_terms_of_service": base.check_url(
                options["acme_terms_of_service"] or "", "--acme-terms-of-service"
            ),
            "acme_website": base.check_url(options["acme_website"] or "", "--acme-website"),
            "acme_caa_identities": base.check_caa_identities(options["acme_caa_identities"] or ""),
        }
        ca = CertificateAuthority.objects.init(
            options["name"], backend, key_options, subject,
            parent=parent,
            use_parent_private_key_options=UsePrivateKeyOptions(password=parent_password) if parent else None,
            not_after=not_after,
            path_length=options["path_length"],
            extensions=extensions,
            **acme,
        )
        signed_by = f"intermediate CA {ca.name} (signed by {parent.name})" if parent else f"root CA {ca.name}"
        self.stdout.write(f"Created {signed_by}.")
        self.stdout.write("\n".join(base.field_lines([
            ("Serial", ca.serial),
            ("Subject", ca.subject),
            ("Key", f"{ca.key_type}{' (encrypted)' if password else ''}, backend {ca.key_backend_alias}"),
            ("Path length", "unlimited" if ca.path_length is None else ca.path_length),
            ("Valid", f"{base.when(ca.not_before)} to {base.when(ca.not_after)}"),
            ("ACME", "on" if ca.acme_enabled else "off"),
        ])))
