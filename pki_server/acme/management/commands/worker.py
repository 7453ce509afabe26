"""``pki-server worker``: validations and issuance from the channel layer (Redis when scaled)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from pki_server import eventloop


class Command(BaseCommand):
    help = "Run the ACME worker: challenge validation and certificate issuance."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-sweep", action="store_true",
                            help="Do not re-dispatch stale work (another worker does).")

    def handle(self, *args: Any, **options: Any) -> None:
        from pki_server.acme.worker import Worker

        if not settings.PKI_REDIS_URL:
            self.stderr.write("Warning: PKI_REDIS_URL is not set, so this worker only sees work from its own "
                              "process; `pki-server serve` runs a worker in-process in that case.")
        self.stdout.write("pki-server worker: waiting for validation and issuance work.")
        self.stdout.flush()

        async def main() -> None:
            task = asyncio.create_task(Worker(sweep=not options["no_sweep"]).run())
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            try:
                await task
            except asyncio.CancelledError:
                pass

        eventloop.run(main())
