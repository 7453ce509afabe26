"""TLS-ALPN-01 validation (RFC 8737; RFC 8738 §6 for IP identifiers) with the address rules of DESIGN.md.

The validator resolves the identifier (:func:`.resolver.resolve_addresses`), applies the address policy
(:func:`.resolver.check_address`) and connects to the first permitted address that answers on
``config.tlsalpn01_port`` (443 in production), pinned to that address. The TLS handshake offers exactly the ALPN
protocol ``acme-tls/1`` and sends as SNI the identifier, or for an IP address its reverse-DNS name
(``4.3.2.1.in-addr.arpa``, RFC 8738 §6). The certificate chain is not verified: what proves control is the
certificate's content. TLS 1.2 or later.

What is checked (RFC 8737 §3):

- the server negotiated ``acme-tls/1`` (no ALPN, or a refusal, is "unauthorized");
- the leaf certificate has a subjectAltName extension with exactly one entry, a dNSName equal to the identifier
  (case-insensitive), or for an IP identifier an iPAddress equal to it;
- it has exactly one acmeIdentifier extension (1.3.6.1.5.5.7.1.31), marked critical, whose value is the DER
  OCTET STRING of the 32-byte SHA-256 digest of the key authorization.

Not checked: that the certificate is self-signed, its validity dates and its key. RFC 8737 §3 has the client build
a self-signed certificate but the digest of the key authorization, which only the account holder can compute, is the
proof; Boulder and Pebble do not check the signature either. Any answer with a wrong certificate is
"incorrectResponse" (an answer that does not meet the challenge's requirements, as for http-01's wrong body); a
connection that cannot be made or a failed handshake is "connection", naming the address and port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import ssl

from cryptography import x509

from pki_server.acme.validation.base import Address, ValidationConfig, ValidationError, ValidationRecord
from pki_server.acme.validation.resolver import ip_literal, resolve_addresses, split_by_policy

ACME_TLS_ALPN_PROTOCOL = "acme-tls/1"
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # id-pe-acmeIdentifier, RFC 8737 §6.1
_HOST_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$)({_HOST_LABEL}\.)*{_HOST_LABEL}\.?")
_SHOWN_NAMES = 5  # subjectAltName entries quoted in an error detail


def acme_identifier_value(key_authorization: str) -> bytes:
    """The acmeIdentifier extension's value: the DER OCTET STRING of SHA-256(key authorization) (RFC 8737 §3)."""
    return b"\x04\x20" + hashlib.sha256(key_authorization.encode("utf-8")).digest()


@dataclasses.dataclass(frozen=True)
class _Target:
    identifier: str  # as validated: lower case DNS name, or the IP address in its canonical form
    address: Address | None  # the identifier's address when it is an IP address
    sni: str  # the server name sent

    def where(self, address: Address, port: int) -> str:
        shown = f"[{address}]" if address.version == 6 else str(address)
        return f"Connecting to {shown}:{port} for {self.identifier} (SNI {self.sni})"


class _ConnectFailure(Exception):
    pass


async def validate_tlsalpn01(identifier: str, token: str, key_authorization: str,
                             config: ValidationConfig) -> list[ValidationRecord]:
    """Connect with ALPN ``acme-tls/1`` and check the certificate presented (module docstring).

    ``identifier`` is a DNS name or an IP address (RFC 8738). ``token`` is not used (the digest covers it); it keeps
    the signature every validator shares. Returns the record of the connection or raises :class:`ValidationError`.
    """
    target = _target(identifier)
    port = config.tlsalpn01_port
    record = ValidationRecord(url=None, hostname=target.identifier, port=port)
    records = [record]
    address: Address | None = None
    doing = "looking up the address"
    try:
        async with asyncio.timeout(config.total_timeout):
            try:
                addresses = await resolve_addresses(target.identifier, config)
            except ValidationError as ex:
                raise ValidationError(ex.problem_type, ex.detail, records) from ex
            record = dataclasses.replace(record, addresses_resolved=tuple(str(a) for a in addresses))
            records[0] = record
            permitted, refusals = split_by_policy(addresses, config)
            if not permitted:
                raise ValidationError("connection", f"Connecting to port {port} for {target.identifier}: "
                                                    f"{'; '.join(refusals)}. No address was contacted", records)
            failures: list[str] = []
            for address in permitted:
                records[0] = dataclasses.replace(record, address_used=str(address))
                doing = "connecting"
                try:
                    alpn, der = await _handshake(target, address, config, records)
                except _ConnectFailure as ex:
                    failures.append(f"{target.where(address, port)}: {ex}")
                    continue
                _check(target, address, port, alpn, der, key_authorization, records)
                return records
    except TimeoutError:
        where = target.where(address, port) if address is not None else f"Validating {target.identifier}"
        raise ValidationError("connection", f"{where}: timed out {doing} (a validation may take "
                                            f"{config.total_timeout:g} s in all)", records) from None
    if len(failures) == 1:
        raise ValidationError("connection", failures[0], records)
    raise ValidationError("connection", f"No address of {target.identifier} could be reached on port {port}: "
                                        f"{'; '.join(failures)}", records)


def _target(identifier: str) -> _Target:
    if identifier.startswith("*."):
        # RFC 8555 §7.1.3 / RFC 8737 §3: wildcard names are validated with dns-01 only.
        raise ValidationError("rejectedIdentifier", f"{identifier} is a wildcard name, which tls-alpn-01 cannot "
                                                    "validate: use dns-01")
    literal = ip_literal(identifier)
    if literal is not None:
        # RFC 8738 §6: the SNI is the reverse-DNS name of the address ("in-addr.arpa" or "ip6.arpa").
        return _Target(str(literal), literal, literal.reverse_pointer)
    if not (identifier.isascii() and _HOSTNAME.fullmatch(identifier)):
        raise ValidationError("malformed", f"{identifier!r} is neither a DNS name nor an IP address")
    name = identifier.rstrip(".").lower()
    return _Target(name, None, name)


def _tls_context() -> ssl.SSLContext:
    # No verification: the acmeIdentifier extension proves control (RFC 8737 §3), the certificate is self-signed.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ACME_TLS_ALPN_PROTOCOL])
    return context


async def _handshake(target: _Target, address: Address, config: ValidationConfig,
                     records: list[ValidationRecord]) -> tuple[str | None, bytes | None]:
    """Connect and complete the handshake; the ALPN protocol negotiated and the leaf certificate (DER)."""
    port = config.tlsalpn01_port
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(str(address), port, ssl=_tls_context(), server_hostname=target.sni),
            config.connect_timeout,
        )
    except TimeoutError:
        raise _ConnectFailure(f"timed out connecting and completing the TLS handshake after "
                              f"{config.connect_timeout:g} s") from None
    except ConnectionRefusedError:
        raise _ConnectFailure("connection refused") from None
    except ssl.SSLError as ex:
        reason = ex.reason or str(ex)
        if "NO_APPLICATION_PROTOCOL" in reason.upper():
            raise ValidationError("unauthorized", f"{target.where(address, port)}: the server refused to negotiate "
                                                  f"the ALPN protocol \"{ACME_TLS_ALPN_PROTOCOL}\" ({reason})",
                                  records) from None
        raise _ConnectFailure(f"TLS handshake failed: {reason}") from None
    except OSError as ex:
        raise _ConnectFailure(f"cannot connect: {ex.strerror or ex}") from None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None:  # asyncio always gives it for a TLS connection; kept so no assert guards this
            raise _ConnectFailure("no TLS session was established")
        return ssl_object.selected_alpn_protocol(), ssl_object.getpeercert(binary_form=True)
    finally:
        writer.transport.abort()  # nothing is sent over the connection; the handshake was the whole exchange


def _check(target: _Target, address: Address, port: int, alpn: str | None, der: bytes | None,
           key_authorization: str, records: list[ValidationRecord]) -> None:
    """Raise :class:`ValidationError` unless the handshake's result meets RFC 8737 §3."""
    where = target.where(address, port)
    if alpn != ACME_TLS_ALPN_PROTOCOL:
        got = f"\"{alpn}\"" if alpn else "no protocol"
        raise ValidationError("unauthorized", f"{where}: the server did not negotiate the ALPN protocol "
                                              f"\"{ACME_TLS_ALPN_PROTOCOL}\" (it chose {got})", records)
    if not der:
        raise ValidationError("incorrectResponse", f"{where}: the server presented no certificate", records)
    problem = _certificate_problem(target, der, key_authorization)
    if problem is not None:
        raise ValidationError("incorrectResponse", f"{where}: incorrect validation certificate: {problem}", records)


def _certificate_problem(target: _Target, der: bytes, key_authorization: str) -> str | None:
    """What is wrong with the certificate, in words, or None when it proves control of the identifier."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        extensions = list(certificate.extensions)
    except (ValueError, x509.DuplicateExtension) as ex:  # a malformed certificate, an extension given twice
        return f"it cannot be parsed ({ex})"
    sans = [e for e in extensions if e.oid == x509.ExtensionOID.SUBJECT_ALTERNATIVE_NAME]
    if not sans:
        return "it has no subjectAltName extension"
    names = list(sans[0].value) if isinstance(sans[0].value, x509.SubjectAlternativeName) else []
    expected: x509.GeneralName = (x509.IPAddress(target.address) if target.address is not None
                                  else x509.DNSName(target.identifier))
    if len(names) != 1 or not _same_name(names[0], expected):
        shown = ", ".join(_show_name(n) for n in names[:_SHOWN_NAMES])
        if len(names) > _SHOWN_NAMES:
            shown += f" and {len(names) - _SHOWN_NAMES} more"
        return (f"its subjectAltName must hold exactly one entry, {_show_name(expected)}, but holds "
                f"{len(names)}: {shown or 'none'}")
    identifiers = [e for e in extensions if e.oid == ACME_IDENTIFIER_OID]
    if not identifiers:
        return f"it has no acmeIdentifier extension ({ACME_IDENTIFIER_OID.dotted_string})"
    extension = identifiers[0]
    if not extension.critical:
        return "its acmeIdentifier extension is not marked critical"
    value = extension.value.value if isinstance(extension.value, x509.UnrecognizedExtension) else b""
    if value != acme_identifier_value(key_authorization):
        if len(value) == 34 and value[:2] == b"\x04\x20":
            return (f"its acmeIdentifier extension holds the digest {value[2:].hex()}, but SHA-256 of the key "
                    f"authorization is {acme_identifier_value(key_authorization)[2:].hex()}")
        return ("its acmeIdentifier extension is not a DER OCTET STRING of a SHA-256 digest (32 bytes): "
                f"{value[:40].hex()}{'...' if len(value) > 40 else ''}")
    return None


def _same_name(name: x509.GeneralName, expected: x509.GeneralName) -> bool:
    if isinstance(name, x509.DNSName) and isinstance(expected, x509.DNSName):
        return name.value.lower() == expected.value
    return isinstance(name, x509.IPAddress) and isinstance(expected, x509.IPAddress) and name.value == expected.value


def _show_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    return f"{type(name).__name__}:{getattr(name, 'value', '?')}"
