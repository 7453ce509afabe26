"""``pki-server serve``: the ASGI application under uvicorn, on PKI_HOST:PKI_PORT by default.

With ``--tls`` it also serves HTTPS on ``--tls-port``, with a certificate that it issues from its
own CA and renews (pki_server/tls.py), or with an operator's pair (``--tls-cert``/``--tls-key``).
Plain HTTP keeps running on ``--port``, for a TLS-terminating proxy in front. Both listeners are
uvicorn servers in one event loop sharing one application, next to the in-process ACME worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.db.migrations.executor import MigrationExecutor

from pki_server import accesslog, eventloop
from pki_server.core.exceptions import PkiError


class Command(BaseCommand):
    help = "Serve pki-server (ACME, admin, published CA resources) with uvicorn, over HTTP and optionally HTTPS."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.PKI_HOST, help="Address to listen on (default: PKI_HOST).")
        parser.add_argument("--port", type=int, default=settings.PKI_PORT, help="HTTP port (default: PKI_PORT).")
        parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
        parser.add_argument("--no-access-log", action="store_true",
                            help="Write no access log (one line per HTTP request on standard output; a "
                                 "--log-level above info turns it off too).")
        parser.add_argument("--no-worker", action="store_true",
                            help="Do not run the ACME worker in this process (run `pki-server worker` instead): "
                                 "no issuance and no sweeper here; the challenges this process's requests start "
                                 "are still validated here, unless --no-validation.")
        parser.add_argument("--no-validation", action="store_true",
                            help="With --no-worker: send every challenge to the workers instead of validating it "
                                 "here (for a web process that must not connect to the names it validates).")
        parser.add_argument("--forwarded-allow-ips", metavar="IPS",
                            help="Proxies whose X-Forwarded-Proto/-For headers are trusted, comma-separated "
                                 "(default: $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1; * trusts everyone).")
        tls = parser.add_argument_group("HTTPS")
        tls.add_argument("--tls", action="store_true",
                         help="Also serve HTTPS on --tls-port, with a certificate issued by the server's own CA.")
        tls.add_argument("--tls-port", type=int, default=8443, help="HTTPS port (default: 8443).")
        tls.add_argument("--tls-ca", metavar="NAME",
                         help="CA that issues the server's certificate (default: the ACME CA of /acme/directory).")
        tls.add_argument("--tls-name", action="append", default=[], metavar="NAME",
                         help="Another host name or IP address for the certificate (repeatable); "
                              "it is also added to the allowed hosts.")
        tls.add_argument("--tls-lifetime", default="90d", metavar="DURATION",
                         help="Lifetime of the certificate: 90d (default), 12h, 30m, 45s. "
                              "It is renewed when a third of it is left.")
        tls.add_argument("--tls-check-interval", type=float, default=3600.0, metavar="SECONDS",
                         help="How often to check whether the certificate is due for renewal (default: 3600).")
        tls.add_argument("--tls-cert", metavar="FILE",
                         help="Serve this certificate (PEM, with its chain) instead; implies --tls. "
                              "Reloaded when the file changes.")
        tls.add_argument("--tls-key", metavar="FILE", help="The private key of --tls-cert (PEM, no password).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self.run(options)
        except PkiError as ex:  # the TLS set-up's errors are meant for a person
            raise CommandError(str(ex)) from None

    def run(self, options: dict[str, Any]) -> None:
        from pki_server import tls

        host, port = options["host"], options["port"]
        use_tls = options["tls"] or bool(options["tls_cert"] or options["tls_key"])
        tls_port = options["tls_port"]
        for value, name in ((port, "--port"), (tls_port, "--tls-port")):
            if not 0 < value < 65536:
                raise CommandError(f"{name} {value} is not a TCP port.")
        if use_tls and tls_port == port:
            raise CommandError(f"--tls-port {tls_port} is the HTTP port too: give them different ports.")
        if bool(options["tls_cert"]) != bool(options["tls_key"]):
            raise CommandError("Give --tls-cert and --tls-key together.")
        if options["no_validation"] and not options["no_worker"]:
            raise CommandError("--no-validation goes with --no-worker: this process's worker validates here.")
        if options["tls_check_interval"] <= 0:
            raise CommandError("--tls-check-interval takes a number of seconds greater than 0.")
        self.check_database()

        # Everything is checked before anything is written: the CA, the names, the ports.
        source: tls.ServerCertificate | tls.OperatorPair | None = None
        if options["tls_cert"]:
            source = tls.OperatorPair(Path(options["tls_cert"]), Path(options["tls_key"]))
        elif use_tls:
            lifetime = tls.parse_lifetime(options["tls_lifetime"])
            names = tls.server_names(settings.PKI_BASE_URL, host, options["tls_name"])
            source = tls.ServerCertificate(tls.resolve_ca(options["tls_ca"]), names, lifetime=lifetime)
        with contextlib.ExitStack() as sockets:
            http_socket = sockets.enter_context(self.bind(host, port, "--port"))
            tls_socket = sockets.enter_context(self.bind(host, tls_port, "--tls-port")) if use_tls else None

            context: ssl.SSLContext | None = None
            https_url = ""
            if source is not None:
                context = tls.server_context()
                if isinstance(source, tls.ServerCertificate):
                    row, renewed = source.ensure()
                    source.load_into(context)
                    self.allow_hosts(options["tls_name"])
                    described = (f"certificate {row.serial} from CA {source.ca.name} for {row.sans.replace(',', ', ')}"
                                 f", {'issued now' if renewed else 'reused'}, valid until "
                                 f"{row.not_after:%Y-%m-%d %H:%M:%S} UTC, in {source.files.directory}")
                else:
                    source.load_into(context)
                    described = f"certificate {source.describe()}"
                https_url = self.https_origin(tls_port)

            config = self.config(options, http_socket)
            servers = [_Server(config)]
            listeners = [(servers[0], http_socket)]
            if tls_socket is not None and context is not None:
                tls_config = self.config(options, tls_socket)
                tls_config.load()
                tls_config.ssl = context  # new handshakes use what load_cert_chain loaded last
                servers.append(_Server(tls_config))
                listeners.append((servers[1], tls_socket))

            self.stdout.write(f"pki-server on http://{self.address(http_socket)}/ "
                              f"(public URL {settings.PKI_BASE_URL}/)")
            if tls_socket is not None:
                listening = f"https://{self.address(tls_socket)}"
                public = f" (public URL {https_url}/)" if https_url != listening else ""
                self.stdout.write(f"HTTPS on {listening}/{public}: {described}")
            self.stdout.write(f"ACME directory: {settings.PKI_BASE_URL}/acme/directory")
            if https_url:
                self.stdout.write(f"ACME directory over HTTPS: {https_url}/acme/directory")
            self.stdout.write(f"Admin: {settings.PKI_BASE_URL}/admin/")
            self.stdout.flush()
            if options["log_level"] in ("info", "debug") and not options["no_access_log"]:
                accesslog.log.enable()
            renewal = None
            if source is not None and context is not None:
                renewal = tls.keep_current(context, source, options["tls_check_interval"])
            try:
                eventloop.run(self.serve(listeners, with_worker=not options["no_worker"],
                                         validate=not options["no_validation"], renewal=renewal))
            finally:
                accesslog.log.disable()  # the lines of the loop's last iteration

    @staticmethod
    def config(options: dict[str, Any], sock: socket.socket) -> uvicorn.Config:
        from pki_server.asgi import application

        host, port = sock.getsockname()[:2]
        return uvicorn.Config(
            application,
            host=host,
            port=port,
            lifespan="off",
            log_level=options["log_level"],
            access_log=False,  # pki_server/accesslog.py writes it, for less
            proxy_headers=True,
            forwarded_allow_ips=options["forwarded_allow_ips"],
            server_header=False,
        )

    @staticmethod
    async def serve(
        listeners: Sequence[tuple[uvicorn.Server, socket.socket]], *, with_worker: bool, validate: bool = True,
        renewal: Any = None,
    ) -> None:
        """The uvicorn servers, the ACME worker (unless told otherwise; without it, a validator of the
        challenges started here, unless ``validate`` is false) and the certificate's renewal, in one
        event loop. SIGINT/SIGTERM stop every server gracefully."""
        from pki_server.acme.worker import Worker

        loop = asyncio.get_running_loop()
        servers = [server for server, _sock in listeners]

        def stop(sig: signal.Signals) -> None:
            for server in servers:
                server.handle_exit(sig, None)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
        tasks = []
        if with_worker:
            tasks.append(asyncio.create_task(Worker().run()))
        elif validate:
            tasks.append(asyncio.create_task(Worker(receive=False, sweep=False).run()))
        if renewal is not None:
            tasks.append(asyncio.create_task(renewal))
        try:
            # If one listener stops (it failed to start, say), stop the other too.
            running = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in listeners]
            done, _pending = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for server in servers:
                server.should_exit = True
            await asyncio.gather(*running, return_exceptions=True)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    @staticmethod
    @contextlib.contextmanager
    def bind(host: str, port: int, option: str) -> Iterator[socket.socket]:
        """A listening socket bound now, so that a port in use is one clear error before any work."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for
        # sockets that say they are TCP. Without it, Nagle holds a response body back until the
        # client's delayed ACK of the headers: 40 ms per keep-alive response (uvicorn --workers'
        # known bug). NODELAY on the listening socket is inherited by accepted ones as well.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as ex:
            sock.close()
            raise CommandError(f"Cannot listen on {host} port {port} ({option}): {ex.strerror or ex}.") from None
        try:
            yield sock
        finally:
            sock.close()

    @staticmethod
    def address(sock: socket.socket) -> str:
        host, port = sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @staticmethod
    def https_origin(tls_port: int) -> str:
        """PKI_BASE_URL's host on the HTTPS port."""
        host = urlsplit(settings.PKI_BASE_URL).hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}" if tls_port == 443 else f"https://{host}:{tls_port}"

    @staticmethod
    def allow_hosts(names: list[str]) -> None:
        """The certificate's extra names are names this server answers to."""
        from pki_server.core import extensions as ext

        allowed = settings.ALLOWED_HOSTS
        if "*" in allowed:
            return
        for value in names:
            name = ext.parse_general_name(value).value
            host = f"[{name}]" if ":" in str(name) else str(name)
            if host not in allowed:
                allowed.append(host)

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


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handlers: with two listeners in one process, each
    would replace the other's; :meth:`Command.serve` stops them all instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    _wake: asyncio.Event | None = None
    _exiting = False

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._exiting

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._exiting = value
        if value and self._wake is not None:
            self._wake.set()

    async def main_loop(self) -> None:
        """uvicorn's, ticking once a second instead of ten times: an idle server woke up ten times a
        second to find nothing to do but the Date header, which changes once a second. A stop
        (``should_exit``) still ends it at once."""
        self._wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # on_tick's count of tenths of a second
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            should_exit = await self.on_tick(counter)
