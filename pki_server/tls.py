"""The server's own HTTPS certificate (`pki-server serve --tls`), issued by one of its CAs and renewed.

The certificate is an ordinary end-entity certificate issued through
``Certificate.objects.create_cert`` (so it is listed in the admin and can be revoked there), for the
host name of ``PKI_BASE_URL`` and any extra names. Its key (EC P-256, a new one for every
certificate) and the PEM files live in ``PKI_DATA_DIR/tls/``:

- ``key.pem``: the private key, mode 0600;
- ``cert.pem``: the certificate;  ``chain.pem``: the CAs above it, without the root;
- ``fullchain.pem``: both, what the server sends in the handshake.

It is reused while it is valid, not revoked, issued by the chosen CA and for the same names, and
renewed when less than a third of its lifetime is left. Renewal loads the new pair into the running
server's ``ssl.SSLContext``: new handshakes use it, open connections keep the old one.

This module uses only core's public API: core knows nothing of how it is served.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.utils import timezone

from pki_server.core import extensions as ext
from pki_server.core import utils
from pki_server.core.exceptions import PasswordError, PkiError
from pki_server.core.models import Certificate, CertificateAuthority

log = logging.getLogger("pki_server.tls")

DEFAULT_LIFETIME = timedelta(days=90)
MIN_LIFETIME = timedelta(seconds=10)
PROFILE = "webserver"  # serverAuth only: the server does not authenticate as a client
CHECK_INTERVAL = 3600.0  # seconds between renewal checks
_MAX_BACKDATE = timedelta(minutes=5)  # as create_cert's default, for clients with a slow clock
_LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")
_DURATION = re.compile(r"([0-9]+)\s*([smhd]?)", re.ASCII)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "": "days"}


class TlsError(PkiError):
    """The server cannot get or use its TLS certificate; the message says why and what to do."""


def parse_lifetime(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``; a bare number is days."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise TlsError(f"--tls-lifetime {text!r} is not a duration (e.g. 90d, 12h, 30m, 45s).")
    lifetime = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if lifetime < MIN_LIFETIME:
        raise TlsError(f"--tls-lifetime {text!r} is too short (the minimum is {MIN_LIFETIME.seconds} s).")
    return lifetime


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _parse_name(value: str, what: str) -> x509.GeneralName:
    try:
        name = ext.parse_general_name(value)
    except ValueError as ex:
        raise TlsError(f"{what}: {ex}") from None
    if isinstance(name, x509.DNSName):
        if not ext.is_dns_name(name.value):
            raise TlsError(f"{what}: {value!r} is not a host name.")
        return x509.DNSName(name.value.lower().rstrip("."))
    if isinstance(name, x509.IPAddress):
        return name
    raise TlsError(f"{what}: {value!r} is neither a host name nor an IP address.")


def server_names(base_url: str, listen_host: str, extra: Iterable[str] = ()) -> list[x509.GeneralName]:
    """The names the certificate is for: PKI_BASE_URL's host, ``extra``, and the loopback names
    when the server listens on (or is published at) a loopback address."""
    base_host = urlsplit(base_url).hostname or ""
    names: list[x509.GeneralName] = []
    if base_host:
        names.append(_parse_name(base_host, "PKI_BASE_URL"))
    names += [_parse_name(value, "--tls-name") for value in extra]
    if is_loopback(listen_host) or is_loopback(base_host):
        names += [_parse_name(value, "loopback") for value in _LOOPBACK_NAMES]
    return list(dict.fromkeys(names))


def resolve_ca(name: str | None) -> CertificateAuthority:
    """The CA named ``name``, or else the ACME-enabled CA that ``/acme/directory`` serves; its key
    must be usable without a password (the server renews unattended)."""
    if name:
        ca = CertificateAuthority.objects.filter(name=name).first()
        if ca is None:
            known = ", ".join(CertificateAuthority.objects.values_list("name", flat=True)) or "none"
            raise TlsError(f"--tls-ca: no CA named {name!r} (known: {known}).")
    else:
        found = CertificateAuthority.objects.default_acme()
        if found is None:
            count = CertificateAuthority.objects.filter(acme_enabled=True, enabled=True).count()
            why = "no CA has ACME enabled" if not count else f"{count} CAs have ACME enabled"
            raise TlsError(f"--tls needs a CA to issue the server's certificate, and {why}: name one with --tls-ca.")
        ca = found
    try:
        ca.check_usable()
    except PasswordError:
        raise TlsError(
            f"The key of CA {ca.name!r} needs a password, so the server cannot renew its certificate unattended: "
            "choose another CA with --tls-ca, or give your own pair with --tls-cert/--tls-key."
        ) from None
    return ca


@dataclass(frozen=True)
class TlsFiles:
    directory: Path

    @property
    def key(self) -> Path:
        return self.directory / "key.pem"

    @property
    def cert(self) -> Path:
        return self.directory / "cert.pem"

    @property
    def chain(self) -> Path:
        return self.directory / "chain.pem"

    @property
    def fullchain(self) -> Path:
        return self.directory / "fullchain.pem"


def default_files() -> TlsFiles:
    return TlsFiles(Path(settings.DATA_DIR) / "tls")


def renewal_due(certificate: x509.Certificate) -> datetime:
    """When a third of the certificate's lifetime is left."""
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return not_after - (not_after - not_before) / 3


def server_context() -> ssl.SSLContext:
    """A server-side context with the standard library's defaults (TLS 1.2 or later)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ServerCertificate:
    """The certificate of one server: reuse it while it is good, issue a new one otherwise."""

    def __init__(self, ca: CertificateAuthority, names: list[x509.GeneralName], *,
                 lifetime: timedelta = DEFAULT_LIFETIME, files: TlsFiles | None = None) -> None:
        if not names:
            raise TlsError("The server's certificate needs at least one name (PKI_BASE_URL or --tls-name).")
        self.ca = ca
        self.names = names
        self.lifetime = lifetime
        self.files = files or default_files()

    def current(self, now: datetime | None = None) -> Certificate | None:
        """The certificate in the files, if it can still be used and need not be renewed yet."""
        now = now or timezone.now()
        try:
            leaf = x509.load_pem_x509_certificate(self.files.cert.read_bytes())
            key = serialization.load_pem_private_key(self.files.key.read_bytes(), password=None)
            self.files.fullchain.stat()
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
            return None
        if key.public_key() != leaf.public_key():
            return None
        row = Certificate.objects.filter(serial=utils.int_to_hex(leaf.serial_number), ca=self.ca).first()
        if row is None or row.revoked or bytes(row.der) != leaf.public_bytes(serialization.Encoding.DER):
            return None
        if set(ext.subject_alternative_names(leaf)) != set(self.names):
            return None
        if now < leaf.not_valid_before_utc or now >= renewal_due(leaf):
            return None
        return row

    def ensure(self) -> tuple[Certificate, bool]:
        """The certificate to serve, and whether it was issued just now."""
        row = self.current()
        if row is not None:
            return row, False
        return self.issue(), True

    def issue(self) -> Certificate:
        """Issue a certificate for a new key and write the files (key first written, last renamed)."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
        now = timezone.now()
        backdate = min(_MAX_BACKDATE, self.lifetime / 10)
        row = Certificate.objects.create_cert(
            self.ca, None, csr, profile=PROFILE,
            not_before=now - backdate, not_after=now + self.lifetime,
            extensions=[x509.SubjectAlternativeName(self.names)],
        )
        chain = row.bundle()
        pem = [cert.public_bytes(serialization.Encoding.PEM) for cert in chain]
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        self.files.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(self.files.chain, b"".join(pem[1:]), 0o644)
        _write(self.files.fullchain, b"".join(pem), 0o644)
        _write(self.files.cert, pem[0], 0o644)
        _write(self.files.key, key_pem, 0o600)
        log.info("Issued the server's TLS certificate %s (CA %s, %s), valid until %s.",
                 row.serial, self.ca.name, row.sans, row.not_after)
        return row

    def load_into(self, context: ssl.SSLContext) -> None:
        context.load_cert_chain(self.files.fullchain, self.files.key)


class OperatorPair:
    """A certificate and key the operator provides (``--tls-cert``/``--tls-key``), reloaded when
    either file changes, so that an outside renewal (certbot's, say) takes effect."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[float, float]:
        try:
            return self.cert.stat().st_mtime, self.key.stat().st_mtime
        except OSError as ex:
            raise TlsError(f"Cannot read {ex.filename}: {ex.strerror}.") from None

    def check(self) -> None:
        """Clear messages for the usual mistakes, before OpenSSL's terse ones."""
        try:
            leaf = x509.load_pem_x509_certificates(self.cert.read_bytes())[0]
        except OSError as ex:
            raise TlsError(f"Cannot read --tls-cert {self.cert}: {ex.strerror}.") from None
        except ValueError:
            raise TlsError(f"--tls-cert {self.cert} holds no PEM certificate.") from None
        try:
            key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        except OSError as ex:
            raise TlsError(f"Cannot read --tls-key {self.key}: {ex.strerror}.") from None
        except TypeError:
            raise TlsError(f"--tls-key {self.key} is encrypted; the server needs a key without a password.") from None
        except (ValueError, UnsupportedAlgorithm):
            raise TlsError(f"--tls-key {self.key} holds no PEM private key.") from None
        if key.public_key() != leaf.public_key():
            raise TlsError(f"--tls-key {self.key} is not the key of the certificate in --tls-cert {self.cert}.")

    def load_into(self, context: ssl.SSLContext) -> None:
        self.check()
        try:
            context.load_cert_chain(self.cert, self.key)
        except ssl.SSLError as ex:
            raise TlsError(f"Cannot use --tls-cert {self.cert} with --tls-key {self.key}: {ex.reason or ex}.") from None
        except OSError as ex:
            raise TlsError(f"Cannot read {ex.filename or self.cert}: {ex.strerror}.") from None

    def changed(self) -> bool:
        stamp = self._stamp()
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        return True

    def describe(self) -> str:
        try:
            leaf = x509.load_pem_x509_certificate(self.cert.read_bytes())
        except ValueError:
            return str(self.cert)
        names = ", ".join(ext.format_general_name(name) for name in ext.subject_alternative_names(leaf))
        expires = leaf.not_valid_after_utc
        return f"{self.cert} ({names or leaf.subject.rfc4514_string()}, valid until {expires:%Y-%m-%d})"


async def keep_current(context: ssl.SSLContext, source: ServerCertificate | OperatorPair,
                       interval: float = CHECK_INTERVAL) -> None:
    """Every ``interval`` seconds, renew (or reload) the certificate if it is due, and load it into
    ``context``. A failure is logged and retried at the next check; the server keeps serving."""
    while True:
        await asyncio.sleep(interval)
        try:
            if isinstance(source, OperatorPair):
                if source.changed():
                    source.load_into(context)
                    log.info("Reloaded the TLS certificate %s.", source.describe())
                continue
            row, renewed = await database_sync_to_async(source.ensure)()
            if renewed:
                source.load_into(context)
                log.info("New TLS connections now use certificate %s.", row.serial)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Could not renew the server's TLS certificate; trying again in %s s.", interval)
