"""``pki-server edit_ca NAME``: enable or disable a CA, change its ACME settings."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from pki_server.core.management import base
from pki_server.core.management.commands.init_ca import add_acme_arguments


class Command(base.PkiCommand):
    help = "Change a certificate authority: enable or disable it, and its ACME settings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Name (or serial) of the CA.")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--enable", dest="enabled", action="store_true", default=None,
                           help="Let the CA sign again.")
        group.add_argument("--disable", dest="enabled", action="store_false",
                           help="A disabled CA signs nothing (certificates, CAs, ACME orders).")
        add_acme_arguments(parser, default=None)

    def run(self, *args: Any, **options: Any) -> None:
        ca = base.get_ca(options["name"])
        wanted: dict[str, Any] = {
            "enabled": options["enabled"],
            "acme_enabled": options["acme"],
            "acme_requires_contact": options["acme_requires_contact"],
            "acme_profile": options["acme_profile"],
            "acme_terms_of_service": base.check_url(options["acme_terms_of_service"], "--acme-terms-of-service"),
            "acme_website": base.check_url(options["acme_website"], "--acme-website"),
            "acme_caa_identities": base.check_caa_identities(options["acme_caa_identities"]),
        }
        wanted = {field: value for field, value in wanted.items() if value is not None}
        if not wanted:
            raise CommandError(
                "Nothing to change: give --enable/--disable or ACME options (see `pki-server edit_ca --help`)."
            )
        changed = {field: (getattr(ca, field), value) for field, value in wanted.items()
                   if getattr(ca, field) != value}
        if not changed:
            self.stdout.write(f"CA {ca.name}: nothing changed (the values are the same).")
            return
        for field, (_old, new) in changed.items():
            setattr(ca, field, new)
        ca.save(update_fields=list(changed))
        self.stdout.write(f"CA {ca.name}:")
        for field, (old, new) in changed.items():
            self.stdout.write(f"  {field}: {_show(old)} -> {_show(new)}")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return repr(value) if value else "''"
