"""``pki-server list_certs``: issued certificates, newest first.

By default the certificates that are valid now; ``--revoked`` and ``--expired`` select those
instead (both: either), ``--all`` lists every one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import Q, QuerySet
from django.utils import timezone

from pki_server.core.management import base
from pki_server.core.models import Certificate


class Command(base.PkiCommand):
    help = "List issued certificates (by default those valid now), newest first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ca", metavar="NAME", help="Only certificates issued by this CA.")
        parser.add_argument("--revoked", action="store_true", help="List revoked certificates.")
        parser.add_argument("--expired", action="store_true", help="List expired certificates.")
        parser.add_argument("--all", action="store_true", help="List every certificate, whatever its status.")
        parser.add_argument("--expiring-in", type=int, metavar="DAYS",
                            help="Only valid certificates that expire within DAYS days.")
        parser.add_argument("--search", metavar="TEXT",
                            help="Only certificates whose common name, subject alternative names or serial "
                                 "contain TEXT (case-insensitive).")
        parser.add_argument("--format", choices=["table", "serial"], default="table",
                            help="table (default), or one serial per line.")

    def run(self, *args: Any, **options: Any) -> None:
        certs = self.select(options)
        if options["format"] == "serial":
            for serial in certs.values_list("serial", flat=True):
                self.stdout.write(serial)
            return
        rows = list(certs)
        if not rows:
            self.stdout.write("No certificates match.")
            return
        self.stdout.write(f"{'SERIAL':<40}  {'CA':<12}  {'STATUS':<7}  {'EXPIRES':<10}  NAMES")
        for cert in rows:
            names = cert.sans.replace("DNS:", "").replace("IP:", "").replace(",", ", ")
            if cert.cn and cert.cn not in names.split(", "):
                names = f"{cert.cn} ({names})" if names else cert.cn
            self.stdout.write(f"{cert.serial:<40}  {cert.ca.name:<12}  {cert.status:<7}  "
                              f"{cert.not_after:%Y-%m-%d}  {names}")

    def select(self, options: dict[str, Any]) -> QuerySet[Certificate]:
        now = timezone.now()
        certs = Certificate.objects.select_related("ca")
        if options["ca"]:
            certs = certs.filter(ca=base.get_ca(options["ca"]))
        if options["expiring_in"] is not None:
            if options["expiring_in"] < 0:
                raise CommandError(f"--expiring-in takes a number of days, not {options['expiring_in']}.")
            if options["revoked"] or options["expired"]:
                raise CommandError("--expiring-in lists valid certificates: it cannot go with --revoked or "
                                   "--expired.")
            certs = certs.filter(not_after__lte=now + timedelta(days=options["expiring_in"]))
        if not options["all"]:
            status = Q()
            if options["revoked"]:
                status |= Q(revoked=True)
            if options["expired"]:
                status |= Q(not_after__lte=now)
            certs = certs.filter(status) if status else certs.filter(revoked=False, not_after__gt=now)
        if options["search"]:
            text = options["search"].strip()
            query = Q(cn__icontains=text) | Q(sans__icontains=text)
            serial = text.replace(":", "").upper()
            if serial:
                query |= Q(serial__contains=serial)
            certs = certs.filter(query)
        return certs.order_by("-created", "-pk")
