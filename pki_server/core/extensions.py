"""X.509 extensions: subject alternative names, the URLs a CA publishes, and name constraints."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from cryptography import x509
from django.conf import settings

from pki_server.core.exceptions import SigningPolicyError

if TYPE_CHECKING:
    from pki_server.core.models import CertificateAuthority

Extension = x509.Extension[x509.ExtensionType]

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def is_dns_name(value: str, *, allow_wildcard: bool = True) -> bool:
    """A host name of LDH labels (RFC 1123), optionally starting with a ``*.`` wildcard label."""
    name = value.lower().rstrip(".") if value.endswith(".") and not value.endswith("..") else value.lower()
    if allow_wildcard and name.startswith("*."):
        name = name[2:]
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    return all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def parse_general_name(value: str) -> x509.GeneralName:
    """``DNS:example.com``, ``IP:192.0.2.1``, ``email:a@example.com``, ``URI:https://…``; a bare value
    is an IP address if it parses as one, otherwise a DNS name."""
    kind, sep, rest = value.partition(":")
    if sep and kind.upper() in {"DNS", "IP", "EMAIL", "URI"}:
        kind, text = kind.upper(), rest.strip()
    else:
        text = value.strip()
        try:
            ipaddress.ip_address(text)
            kind = "IP"
        except ValueError:
            kind = "DNS"
    if kind == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address.") from None
    if kind == "EMAIL":
        if "@" not in text:
            raise ValueError(f"{value!r} is not an e-mail address.")
        return x509.RFC822Name(text)
    if kind == "URI":
        if "://" not in text:
            raise ValueError(f"{value!r} is not an absolute URI.")
        return x509.UniformResourceIdentifier(text)
    if not is_dns_name(text):
        raise ValueError(f"{value!r} is not a valid DNS name.")
    return x509.DNSName(text.lower().rstrip("."))


def format_general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.DirectoryName):
        return f"dirname:{name.value.rfc4514_string()}"
    return f"{type(name).__name__}:{name.value}"


def general_name_for_common_name(value: str) -> x509.GeneralName | None:
    """The SAN a common name stands for, if it is a host name or an IP address."""
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if is_dns_name(value):
        return x509.DNSName(value.lower().rstrip("."))
    return None


def subject_alternative_names(certificate: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


# --- The URLs a CA publishes (all under PKI_BASE_URL; core/urls.py serves them) ---------------

def issuer_url(ca: CertificateAuthority) -> str:
    return f"{settings.PKI_BASE_URL}/issuers/{ca.serial}.der"


def ocsp_url(ca: CertificateAuthority) -> str:
    return f"{settings.PKI_BASE_URL}/ocsp/{ca.serial}/"


def crl_url(ca: CertificateAuthority) -> str:
    return f"{settings.PKI_BASE_URL}/crl/{ca.serial}.crl"


def issued_by_extensions(issuer: CertificateAuthority) -> list[Extension]:
    """AKI, AIA (OCSP and CA issuers) and CRL distribution point that ``issuer`` puts in what it signs."""
    return list(_issued_by_extensions(issuer.pub, ocsp_url(issuer), issuer_url(issuer), crl_url(issuer)))


@lru_cache(maxsize=64)
def _issued_by_extensions(pub: x509.Certificate, ocsp: str, issuers: str, crl: str) -> tuple[Extension, ...]:
    # The same for every certificate a CA signs while its URLs stay: built once (extensions are immutable).
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
        pub.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    )
    aia = x509.AuthorityInformationAccess([
        x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp)),
        x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(issuers)),
    ])
    crldp = x509.CRLDistributionPoints([
        x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl)], relative_name=None, reasons=None, crl_issuer=None,
        )
    ])
    return (
        x509.Extension(aki.oid, False, aki),
        x509.Extension(aia.oid, False, aia),
        x509.Extension(crldp.oid, False, crldp),
    )


def merge(defaults: Sequence[Extension], overrides: Iterable[Extension | x509.ExtensionType]) -> list[Extension]:
    """Defaults, with each override replacing the default of the same type (or being added)."""
    merged: dict[x509.ObjectIdentifier, Extension] = {ext.oid: ext for ext in defaults}
    for override in overrides:
        if isinstance(override, x509.ExtensionType):
            critical = isinstance(override, x509.BasicConstraints | x509.KeyUsage | x509.NameConstraints)
            override = x509.Extension(override.oid, critical, override)
        if not isinstance(override, x509.Extension):
            raise TypeError(f"extensions takes x509.Extension objects, not {type(override).__name__}.")
        merged[override.oid] = override
    return list(merged.values())


# --- Name constraints (RFC 5280 §4.2.1.10) -------------------------------------------------------

def _dns_within(name: str, constraint: str) -> bool:
    name, constraint = name.lower().rstrip("."), constraint.lower().rstrip(".")
    if name.startswith("*."):
        name = name[2:]
    if constraint.startswith("."):
        return name.endswith(constraint)
    return name == constraint or name.endswith("." + constraint)


def _matches(name: x509.GeneralName, constraint: x509.GeneralName) -> bool | None:
    """True/False when the constraint applies to this kind of name, None when it does not."""
    if isinstance(name, x509.DNSName) and isinstance(constraint, x509.DNSName):
        return _dns_within(name.value, constraint.value)
    if isinstance(name, x509.IPAddress) and isinstance(constraint, x509.IPAddress):
        network = constraint.value
        if isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
            return name.value in network
        return bool(name.value == network)
    if isinstance(name, x509.RFC822Name) and isinstance(constraint, x509.RFC822Name):
        value, limit = name.value.lower(), constraint.value.lower()
        if "@" in limit:
            return value == limit
        domain = value.rpartition("@")[2]
        return domain.endswith(limit) if limit.startswith(".") else domain == limit
    return None


def check_name_constraints(ca: CertificateAuthority, names: Sequence[x509.GeneralName]) -> None:
    """Refuse names that ``ca`` or any CA above it may not certify."""
    current: CertificateAuthority | None = ca
    while current is not None:
        try:
            constraints = current.pub.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is not None:
            for name in names:
                for excluded in constraints.excluded_subtrees or ():
                    if _matches(name, excluded):
                        raise SigningPolicyError(
                            f"CA {current.name!r} may not sign {format_general_name(name)}: it is excluded by "
                            f"its name constraints ({format_general_name(excluded)})."
                        )
                permitted = constraints.permitted_subtrees
                if permitted is not None:
                    results = [_matches(name, allowed) for allowed in permitted]
                    applicable = [result for result in results if result is not None]
                    if applicable and not any(applicable):
                        allowed_list = ", ".join(format_general_name(p) for p in permitted)
                        raise SigningPolicyError(
                            f"CA {current.name!r} may not sign {format_general_name(name)}: its name "
                            f"constraints permit only {allowed_list}."
                        )
        current = current.parent
