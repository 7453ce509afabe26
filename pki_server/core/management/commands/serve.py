"""``pki-server serve``: the ASGI application under uvicorn, on PKI_HOST:PKI_PORT by default."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.db.migrations.executor import MigrationExecutor


class Command(BaseCommand):
    help = "Serve pki-server (admin, published CA resources) with uvicorn."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.PKI_HOST, help="Address to listen on (default: PKI_HOST).")
        parser.add_argument("--port", type=int, default=settings.PKI_PORT, help="Port (default: PKI_PORT).")
        parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
        parser.add_argument("--no-worker", action="store_true",
                            help="Do not run the ACME worker in this process (run `pki-server worker` instead).")

    def handle(self, *args: Any, **options: Any) -> None:
        import uvicorn

        self.check_database()
        if not 0 < options["port"] < 65536:
            raise CommandError(f"--port {options['port']} is not a TCP port.")
        config = uvicorn.Config(
            "pki_server.asgi:application",
            host=options["host"],
            port=options["port"],
            lifespan="off",
            log_level=options["log_level"],
            proxy_headers=True,
            server_header=False,
        )
        self.stdout.write(f"pki-server on http://{options['host']}:{options['port']}/ "
                          f"(public URL {settings.PKI_BASE_URL}/)")
        self.stdout.write(f"ACME directory: {settings.PKI_BASE_URL}/acme/directory")
        self.stdout.write(f"Admin: {settings.PKI_BASE_URL}/admin/")
        self.stdout.flush()
        asyncio.run(self.serve(uvicorn.Server(config), with_worker=not options["no_worker"]))

    @staticmethod
    async def serve(server: Any, *, with_worker: bool) -> None:
        """uvicorn and, unless told otherwise, the ACME worker in the same event loop."""
        from pki_server.acme.worker import Worker

        worker = asyncio.create_task(Worker().run()) if with_worker else None
        try:
            await server.serve()
        finally:
            if worker is not None:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker

    def check_database(self) -> None:
        connection = connections["default"]
        try:
            executor = MigrationExecutor(connection)
            pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        except Exception as ex:
            raise CommandError(f"Cannot open the database: {ex}") from None
        if pending:
            raise CommandError("The database is not initialised or not up to date: run `pki-server init` first.")
        connection.close()
