"""What the CA commands share: error handling, passwords, looking up CAs and certificates, output.

Every command subclasses :class:`PkiCommand` and implements ``run()`` instead of ``handle()``.
Errors the core raises on purpose (:class:`PkiError`, ``ValueError``) become a
:class:`CommandError`, which Django prints as one line (``CommandError: …``) with exit status 1.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import URLValidator
from django.db import OperationalError, ProgrammingError

from pki_server.core import extensions as ext
from pki_server.core import utils
from pki_server.core.exceptions import PasswordError, PkiError
from pki_server.core.key_backends import KeyBackend, key_backends
from pki_server.core.models import Certificate, CertificateAuthority


class PkiCommand(BaseCommand):
    """A management command whose expected failures are one clear line, never a traceback."""

    #: The options that give the password of the key a command signs with.
    signing_key_options = "--password or --password-file"

    def handle(self, *args: Any, **options: Any) -> None:
        # The commands print what they did; the core's INFO log lines would say it twice on
        # stderr. They show with -v 2, or when PKI_LOG_LEVEL asks for them.
        logger = logging.getLogger("pki_server")
        quiet = options.get("verbosity", 1) < 2 and not os.environ.get("PKI_LOG_LEVEL")
        level = logger.level
        if quiet and logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)
        try:
            self.run(*args, **options)
        except CommandError:
            raise
        except PasswordError as ex:
            raise CommandError(f"{str(ex).rstrip('.')}: use {self.signing_key_options}.") from ex
        except (PkiError, ValueError) as ex:
            raise CommandError(str(ex)) from ex
        except (OperationalError, ProgrammingError) as ex:
            message = f"Database error: {str(ex).strip().rstrip('.')}."
            if "no such table" in str(ex) or "does not exist" in str(ex):
                message += " Is the database initialised? Run `pki-server init`."
            raise CommandError(message) from ex
        finally:
            logger.setLevel(level)

    def run(self, *args: Any, **options: Any) -> None:
        raise NotImplementedError


# --- Options -------------------------------------------------------------------------------------

def add_password_arguments(
    parser: CommandParser | argparse._ArgumentGroup, prefix: str = "", what: str = "the CA's private key"
) -> None:
    """``--{prefix}password`` and ``--{prefix}password-file``: a password for ``what``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        f"--{prefix}password", metavar="PASSWORD",
        help=f"Password of {what}. Other users can see command lines: prefer --{prefix}password-file.",
    )
    group.add_argument(
        f"--{prefix}password-file", metavar="FILE",
        help=f"Read the password of {what} from the first line of FILE.",
    )


def read_password(options: dict[str, Any], prefix: str = "") -> str | None:
    """The password given with ``--{prefix}password`` or ``--{prefix}password-file``, or None."""
    key = prefix.replace("-", "_")
    password: str | None = options.get(f"{key}password")
    path: str | None = options.get(f"{key}password_file")
    if password is not None and path is not None:
        raise CommandError(f"Give --{prefix}password or --{prefix}password-file, not both.")
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as ex:
            raise CommandError(f"Cannot read the password file {path}: {ex.strerror or ex}.") from None
        except UnicodeDecodeError:
            raise CommandError(f"The password file {path} is not UTF-8 text.") from None
        lines = text.splitlines()
        password = lines[0] if lines else ""
        if not password:
            raise CommandError(f"The password file {path} is empty.")
    elif password == "":
        raise CommandError(f"--{prefix}password is empty.")
    return password


def days(value: int | None, option: str) -> timedelta | None:
    """``--expires DAYS`` as a timedelta (None when not given)."""
    if value is None:
        return None
    if value < 1:
        raise CommandError(f"{option} takes a number of days of at least 1, not {value}.")
    return timedelta(days=value)


def check_url(value: str | None, option: str) -> str | None:
    """``value`` if it is an http(s) URL; empty or None values pass through."""
    if not value:
        return value
    try:
        URLValidator(schemes=["http", "https"])(value)
    except ValidationError:
        raise CommandError(f"{option} {value!r} is not an http:// or https:// URL.") from None
    return value


def check_caa_identities(value: str | None) -> str | None:
    """Comma-separated domain names, as CAA ``issue`` records name a CA (RFC 8659 §4.2)."""
    if value is None:
        return None
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    for name in names:
        if not ext.is_dns_name(name, allow_wildcard=False):
            raise CommandError(f"--acme-caa-identities: {name!r} is not a domain name.")
    return ",".join(names)


def parse_name_constraints(values: Iterable[str]) -> x509.NameConstraints | None:
    """``permit:DNS:example.com`` / ``exclude:IP:10.0.0.0/8`` (repeatable) as one NameConstraints.

    DNS constraints may start with a dot (``.example.com``: subdomains only); IP constraints are
    networks in CIDR notation; ``email:`` takes an address, a host or a ``.domain`` (RFC 5280
    §4.2.1.10).
    """
    permitted: list[x509.GeneralName] = []
    excluded: list[x509.GeneralName] = []
    for value in values:
        action, sep, rest = value.partition(":")
        if not sep or action.lower() not in {"permit", "exclude"}:
            raise CommandError(
                f"--name-constraint {value!r}: use permit:TYPE:VALUE or exclude:TYPE:VALUE "
                "(e.g. permit:DNS:example.com, exclude:IP:10.0.0.0/8)."
            )
        (permitted if action.lower() == "permit" else excluded).append(_constraint_name(value, rest))
    if not permitted and not excluded:
        return None
    return x509.NameConstraints(permitted_subtrees=permitted or None, excluded_subtrees=excluded or None)


def _constraint_name(original: str, value: str) -> x509.GeneralName:
    kind, sep, text = value.partition(":")
    kind, text = kind.strip().upper(), text.strip()
    if not sep or not text:
        raise CommandError(f"--name-constraint {original!r}: the name is missing (e.g. DNS:example.com).")
    if kind == "DNS":
        if not ext.is_dns_name(text.removeprefix("."), allow_wildcard=False):
            raise CommandError(f"--name-constraint {original!r}: {text!r} is not a domain name.")
        return x509.DNSName(text.lower())
    if kind == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_network(text, strict=True))
        except ValueError:
            raise CommandError(
                f"--name-constraint {original!r}: {text!r} is not a network in CIDR notation (10.0.0.0/8)."
            ) from None
    if kind == "EMAIL":
        domain = text.rpartition("@")[2].removeprefix(".")
        if not ext.is_dns_name(domain, allow_wildcard=False):
            raise CommandError(
                f"--name-constraint {original!r}: {text!r} is not an e-mail address or domain."
            )
        return x509.RFC822Name(text.lower())
    raise CommandError(f"--name-constraint {original!r}: the type must be DNS, IP or email.")


# --- Looking things up ---------------------------------------------------------------------------

def get_key_backend(alias: str) -> KeyBackend:
    try:
        return key_backends[alias]
    except KeyError as ex:  # the message lists the configured aliases
        raise CommandError(str(ex.args[0])) from None


def normalize_serial(value: str) -> str:
    """A serial as stored: upper-case hex, no colons, no leading zeros. Raises CommandError."""
    text = value.strip().replace(":", "").replace(" ", "")
    try:
        number = int(text, 16)
    except ValueError:
        raise CommandError(f"{value!r} is not a serial number (hexadecimal, colons allowed).") from None
    return utils.int_to_hex(number)


def get_ca(name_or_serial: str) -> CertificateAuthority:
    """A CA by name, or else by serial."""
    ca = CertificateAuthority.objects.filter(name=name_or_serial).first()
    if ca is not None:
        return ca
    try:
        serial = normalize_serial(name_or_serial)
    except CommandError:
        serial = None
    if serial:
        ca = CertificateAuthority.objects.filter(serial=serial).first()
        if ca is not None:
            return ca
    names = list(CertificateAuthority.objects.values_list("name", flat=True))
    if not names:
        raise CommandError(
            f"No CA named {name_or_serial!r}: there are no CAs yet (create them with `pki-server init` "
            "or `pki-server init_ca`)."
        )
    raise CommandError(f"No CA named {name_or_serial!r}; known: {', '.join(names)}.")


def get_cert(serial: str) -> Certificate:
    """An end-entity certificate by serial (case-insensitive, colons allowed)."""
    normalized = normalize_serial(serial)
    cert = Certificate.objects.select_related("ca").filter(serial=normalized).first()
    if cert is not None:
        return cert
    ca = CertificateAuthority.objects.filter(serial=normalized).first()
    if ca is not None:
        raise CommandError(f"{normalized} is the serial of CA {ca.name!r}, not of an issued certificate.")
    raise CommandError(f"No certificate with serial {normalized}.")


# --- Output --------------------------------------------------------------------------------------

ENCODINGS = {"PEM": serialization.Encoding.PEM, "DER": serialization.Encoding.DER}


def add_output_arguments(parser: CommandParser) -> None:
    parser.add_argument("path", nargs="?", metavar="FILE", help="Write to FILE instead of standard output.")
    parser.add_argument("--format", type=str.upper, default="PEM", choices=list(ENCODINGS),
                        help="PEM (default) or DER.")
    parser.add_argument("--force", action="store_true", help="Overwrite FILE if it exists.")


def encode(certificates: list[x509.Certificate], encoding: str) -> bytes:
    if encoding == "DER" and len(certificates) > 1:
        raise CommandError("DER holds one certificate: use --format PEM for a bundle.")
    return b"".join(cert.public_bytes(ENCODINGS[encoding]) for cert in certificates)


def check_writable(path: str | None, force: bool) -> None:
    """Refuse, before anything is done, to write where writing will fail or overwrite a file."""
    if path is None or path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise CommandError(f"{path} is a directory.")
    if target.exists() and not force:
        raise CommandError(f"{path} exists already; use --force to overwrite it.")
    folder = target.parent
    if not folder.is_dir():
        raise CommandError(f"Cannot write {path}: the folder {folder} does not exist.")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise CommandError(f"Cannot write {path}: permission denied.")


def write_output(command: BaseCommand, data: bytes, path: str | None, force: bool) -> None:
    """Write ``data`` to ``path``, or to standard output (binary data to its byte stream)."""
    if path is None or path == "-":
        buffer = getattr(command.stdout, "buffer", None)
        if buffer is None:  # a text-only stream, e.g. call_command(stdout=StringIO())
            try:
                command.stdout.write(data.decode("ascii"), ending="")
            except UnicodeDecodeError:
                raise CommandError("Cannot write binary (DER) data to this output; give a FILE.") from None
            return
        command.stdout.flush()
        buffer.write(data)
        buffer.flush()
        return
    try:
        with open(path, "wb" if force else "xb") as stream:
            stream.write(data)
    except FileExistsError:
        raise CommandError(f"{path} exists already; use --force to overwrite it.") from None
    except OSError as ex:
        raise CommandError(f"Cannot write {path}: {ex.strerror or ex}.") from None


def stdin_bytes() -> bytes:
    stream = getattr(sys.stdin, "buffer", sys.stdin)
    data = stream.read()
    return data.encode() if isinstance(data, str) else data


# --- Describing certificates ---------------------------------------------------------------------

def when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value is not None else "-"


def status_of(item: CertificateAuthority | Certificate) -> str:
    status = item.status
    if isinstance(item, CertificateAuthority) and not item.enabled and status == "valid":
        return "disabled"
    return status


def _names(names: Iterable[x509.GeneralName]) -> str:
    return ", ".join(ext.format_general_name(name) for name in names)


def _uri_list(points: Iterable[x509.DistributionPoint]) -> str:
    return ", ".join(_names(point.full_name or ()) for point in points)


def describe_extension(extension: x509.Extension[x509.ExtensionType]) -> tuple[str, str]:
    """A name and a one-line value for an extension, as ``view_ca``/``view_cert`` print them."""
    value = extension.value
    name = getattr(extension.oid, "_name", None) or extension.oid.dotted_string
    text: str
    if isinstance(value, x509.BasicConstraints):
        text = "CA:TRUE" if value.ca else "CA:FALSE"
        if value.ca:
            limit = value.path_length
            text += f", path length {limit}" if limit is not None else ", no path length"
    elif isinstance(value, x509.KeyUsage):
        fields = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                  "key_agreement", "key_cert_sign", "crl_sign"]
        used = [field for field in fields if getattr(value, field)]
        if value.key_agreement:
            used += [field for field in ("encipher_only", "decipher_only") if getattr(value, field)]
        text = ", ".join(used)
    elif isinstance(value, x509.ExtendedKeyUsage):
        text = ", ".join(getattr(oid, "_name", oid.dotted_string) for oid in value)
    elif isinstance(value, x509.SubjectAlternativeName | x509.IssuerAlternativeName):
        text = _names(value)
    elif isinstance(value, x509.SubjectKeyIdentifier):
        text = value.digest.hex(":").upper()
    elif isinstance(value, x509.AuthorityKeyIdentifier):
        text = value.key_identifier.hex(":").upper() if value.key_identifier else "-"
    elif isinstance(value, x509.AuthorityInformationAccess):
        labels = {x509.AuthorityInformationAccessOID.OCSP: "OCSP",
                  x509.AuthorityInformationAccessOID.CA_ISSUERS: "CA issuers"}
        text = ", ".join(f"{labels.get(d.access_method, d.access_method.dotted_string)} "
                         f"{ext.format_general_name(d.access_location)}" for d in value)
    elif isinstance(value, x509.CRLDistributionPoints):
        text = _uri_list(value)
    elif isinstance(value, x509.NameConstraints):
        parts = []
        if value.permitted_subtrees:
            parts.append(f"permitted: {_names(value.permitted_subtrees)}")
        if value.excluded_subtrees:
            parts.append(f"excluded: {_names(value.excluded_subtrees)}")
        text = "; ".join(parts)
    elif isinstance(value, x509.OCSPNoCheck):
        text = "yes"
    else:
        text = repr(value)
    return (f"{name} (critical)" if extension.critical else name), text


def field_lines(fields: list[tuple[str, Any]]) -> list[str]:
    width = max(len(label) for label, _ in fields)
    return [f"{label + ':':<{width + 1}} {value}" for label, value in fields]


def extension_lines(certificate: x509.Certificate) -> list[str]:
    lines = ["Extensions:"]
    for extension in certificate.extensions:
        name, text = describe_extension(extension)
        lines.append(f"  {name}: {text}")
    return lines
