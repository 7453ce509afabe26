"""``pki-server revoke_cert SERIAL``: revoke an issued certificate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from pki_server.core.management import base
from pki_server.core.models import REVOCATION_REASONS, parse_reason


def parse_compromised(value: str | None) -> datetime | None:
    """An ISO 8601 date or date and time; one without a time zone is taken as UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CommandError(
            f"--compromised {value!r} is not an ISO 8601 date and time (e.g. 2025-01-31T14:00:00Z)."
        ) from None
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    if parsed > timezone.now():
        raise CommandError(f"--compromised {value!r} is in the future.")
    return parsed


class Command(base.PkiCommand):
    help = "Revoke an issued certificate. It is listed in its CA's CRL and OCSP answers from then on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("serial", help="Serial number in hex (any case, colons allowed).")
        parser.add_argument("--reason", default="unspecified", metavar="REASON",
                            help=f"Revocation reason: {', '.join(name for name, _ in REVOCATION_REASONS)} "
                                 "(default: unspecified).")
        parser.add_argument("--compromised", metavar="DATETIME",
                            help="When the key was (or is suspected to have been) compromised, ISO 8601; "
                                 "UTC unless a time zone is given.")

    def run(self, *args: Any, **options: Any) -> None:
        reason = parse_reason(options["reason"])
        compromised = parse_compromised(options["compromised"])
        cert = base.get_cert(options["serial"])
        cert.revoke(reason, compromised)
        self.stdout.write(f"Revoked certificate {cert.serial} ({cert}) issued by {cert.ca.name}; "
                          f"reason: {reason.name}.")
