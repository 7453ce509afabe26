"""A TLS-ALPN-01 responder for tests (RFC 8737, RFC 8738 §6): TLS on 127.0.0.1 that answers ``acme-tls/1``.

Usage (asyncio)::

    async with TLSALPNResponder() as responder:
        responder.add("a.example", key_authorization)         # SNI a.example -> the validation certificate
        responder.add("127.0.0.1", key_authorization)         # SNI 1.0.0.127.in-addr.arpa -> IP:127.0.0.1
        responder.add("b.example", key_authorization, critical=False)   # a wrong certificate, for negative tests
        config = ValidationConfig(tlsalpn01_port=responder.port, ...)

From synchronous tests (a pki-server subprocess validating against it) use :class:`TLSALPNThread`, which runs the
same responder on an event loop of its own thread and may be given a fixed port.

Each name added gets its own TLS context (picked by the SNI callback) with a fresh self-signed certificate built as
RFC 8737 §3 says: one SAN (dNSName, or iPAddress for an IP identifier) and a critical acmeIdentifier extension
holding the DER OCTET STRING of SHA-256(key authorization). The knobs of :meth:`TLSALPNResponder.add` build wrong
ones: ``extension=False`` (none), ``critical=False``, ``digest=`` (another 32 bytes), ``extension_value=`` (raw
bytes), ``sans=`` (any SAN list, e.g. two names), ``alpn=`` (the protocols the server will negotiate: ``[]`` or
``["http/1.1"]`` means the server does not agree to ``acme-tls/1``). A handshake whose SNI names nothing added gets
a certificate for ``unknown.invalid`` without the extension. ``handshakes`` lists (SNI, ALPN negotiated) of every
handshake that completed, ``sni_seen`` the SNI of every ClientHello, so a test can see what the validator sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import ssl
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ACME_TLS_ALPN_PROTOCOL = "acme-tls/1"
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def sni_name(identifier: str) -> str:
    """The SNI a validator sends for ``identifier``: the name, or the reverse-DNS name of an IP (RFC 8738 §6)."""
    try:
        return ipaddress.ip_address(identifier).reverse_pointer
    except ValueError:
        return identifier.rstrip(".").lower()


def validation_certificate(identifier: str, key_authorization: str, key: ec.EllipticCurvePrivateKey, *,
                           extension: bool = True, critical: bool = True, digest: bytes | None = None,
                           extension_value: bytes | None = None,
                           sans: Sequence[x509.GeneralName] | None = None) -> x509.Certificate:
    """A self-signed TLS-ALPN-01 certificate (RFC 8737 §3), or a wrong one as the knobs say (module docstring)."""
    if sans is None:
        try:
            sans = [x509.IPAddress(ipaddress.ip_address(identifier))]
        except ValueError:
            sans = [x509.DNSName(identifier)]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACME TLS-ALPN-01 challenge")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if extension:
        if extension_value is None:
            digest = hashlib.sha256(key_authorization.encode()).digest() if digest is None else digest
            extension_value = b"\x04" + bytes([len(digest)]) + digest
        builder = builder.add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, extension_value),
                                        critical=critical)
    return builder.sign(key, hashes.SHA256())


class TLSALPNResponder:
    """See the module docstring. ``start()`` listens on ``host`` (ephemeral ``port`` unless one is given)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.handshakes: list[tuple[str | None, str | None]] = []
        self.sni_seen: list[str | None] = []  # every ClientHello's SNI, completed handshakes or not
        self._sni: dict[int, str | None] = {}
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._directory = tempfile.TemporaryDirectory(prefix="tlsalpn-")
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._count = 0
        self._default = self._context(validation_certificate("unknown.invalid", "", self._key, extension=False),
                                      [ACME_TLS_ALPN_PROTOCOL])
        self._default.sni_callback = self._select  # type: ignore[assignment]
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def add(self, identifier: str, key_authorization: str, *, extension: bool = True, critical: bool = True,
            digest: bytes | None = None, extension_value: bytes | None = None,
            sans: Sequence[x509.GeneralName] | None = None, alpn: Sequence[str] = (ACME_TLS_ALPN_PROTOCOL,),
            sni: str | None = None) -> x509.Certificate:
        """Answer handshakes for ``identifier`` (SNI ``sni`` or :func:`sni_name`) with this certificate and ALPN."""
        certificate = validation_certificate(identifier, key_authorization, self._key, extension=extension,
                                             critical=critical, digest=digest, extension_value=extension_value,
                                             sans=sans)
        self._contexts[(sni or sni_name(identifier)).lower()] = self._context(certificate, alpn)
        return certificate

    def remove(self, identifier: str) -> None:
        self._contexts.pop(sni_name(identifier), None)

    def _context(self, certificate: x509.Certificate, alpn: Sequence[str]) -> ssl.SSLContext:
        self._count += 1
        cert_path = Path(self._directory.name) / f"{self._count}.pem"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM) + self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_path)
        cert_path.unlink()
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
        self.sni_seen.append(server_name)
        self._sni[id(ssl_object)] = server_name
        context = self._contexts.get((server_name or "").lower())
        if context is not None:
            ssl_object.context = context

    async def start(self) -> TLSALPNResponder:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self._default)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        self._directory.cleanup()

    async def __aenter__(self) -> TLSALPNResponder:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The handshake is the whole exchange (RFC 8737 §3): note it, wait for the client to hang up."""
        ssl_object = writer.get_extra_info("ssl_object")
        self.handshakes.append((self._sni.pop(id(ssl_object), None), ssl_object.selected_alpn_protocol()))
        self._writers.add(writer)
        try:
            with contextlib.suppress(ConnectionError, TimeoutError, ssl.SSLError):
                await asyncio.wait_for(reader.read(1024), 5)
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


class TLSALPNThread:
    """The responder on an event loop of its own thread, for synchronous tests; ``port=0`` picks a free one."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.responder = TLSALPNResponder(host, port)

    @property
    def port(self) -> int:
        return self.responder.port

    def add(self, identifier: str, key_authorization: str, **knobs: object) -> x509.Certificate:
        future = asyncio.run_coroutine_threadsafe(self._add(identifier, key_authorization, knobs), self.loop)
        return future.result(timeout=10)

    async def _add(self, identifier: str, key_authorization: str, knobs: dict[str, object]) -> x509.Certificate:
        return self.responder.add(identifier, key_authorization, **knobs)  # type: ignore[arg-type]

    def start(self) -> TLSALPNThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.responder.start(), self.loop).result(timeout=10)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.responder.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> TLSALPNThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
