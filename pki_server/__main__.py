"""``pki-server`` and ``python -m pki_server``: Django's management commands with our settings."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pki_server.settings")
    args = list(sys.argv[1:] if argv is None else argv)

    from django.core.exceptions import ImproperlyConfigured

    try:
        from django.conf import settings

        settings.INSTALLED_APPS  # noqa: B018 - loads and validates the settings
    except ImproperlyConfigured as ex:
        print(f"pki-server: configuration error: {ex}", file=sys.stderr)
        raise SystemExit(2) from None

    from django.core.management import execute_from_command_line

    execute_from_command_line(["pki-server", *args])


if __name__ == "__main__":
    main()
