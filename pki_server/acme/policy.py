"""What the ACME server accepts: identifiers, contacts and CSRs (RFC 8555 §7.1.3, §7.3, §7.4)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pki_server.acme import jose, problems
from pki_server.core.extensions import is_dns_name
from pki_server.core.managers import csr_signature_valid

MAX_IDENTIFIERS = 100
MAX_CONTACTS = 10
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+")
CSR_CURVES = ("secp256r1", "secp384r1")
MIN_CSR_RSA_BITS = 2048


@dataclass(frozen=True, order=True)
class Identifier:
    type: str  # "dns" or "ip"
    value: str  # as the client sent it, normalised: lower case, wildcard kept

    @property
    def wildcard(self) -> bool:
        return self.value.startswith("*.")

    @property
    def base(self) -> str:
        """The name an authorization is for: without the wildcard label (RFC 8555 §7.1.3)."""
        return self.value[2:] if self.wildcard else self.value

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


def parse_identifier(raw: Any) -> Identifier:
    """One identifier of a newOrder, or a rejectedIdentifier / unsupportedIdentifier problem."""
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or not isinstance(raw.get("value"), str):
        raise problems.malformed('Each identifier must be an object with a "type" and a "value".')
    kind, value = raw["type"], raw["value"]
    if kind == "dns":
        name = value.lower()
        if name.endswith("."):
            raise problems.rejected_identifier(f"{value!r}: a DNS identifier must not end with a dot.")
        if "*" in name[2:] or ("*" in name and not name.startswith("*.")):
            raise problems.rejected_identifier(f"{value!r}: a wildcard may only be the whole leftmost label (*.).")
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            raise problems.rejected_identifier(f"{value!r} is an IP address: send it as an identifier of type ip.")
        if not is_dns_name(name) or "." not in name.removeprefix("*."):
            raise problems.rejected_identifier(f"{value!r} is not a valid fully qualified DNS name.")
        return Identifier("dns", name)
    if kind == "ip":  # RFC 8738
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise problems.malformed(f"{value!r} is not an IP address.") from None
        return Identifier("ip", address.compressed)
    raise problems.unsupported_identifier(f"Identifiers of type {kind!r} are not supported; use dns or ip.")


def parse_identifiers(raw: Any) -> list[Identifier]:
    if not isinstance(raw, list) or not raw:
        raise problems.malformed('A newOrder needs a non-empty "identifiers" list.')
    if len(raw) > MAX_IDENTIFIERS:
        raise problems.rejected_identifier(f"An order may have at most {MAX_IDENTIFIERS} identifiers.")
    subproblems = []
    identifiers: set[Identifier] = set()
    for item in raw:
        try:
            identifiers.add(parse_identifier(item))
        except problems.AcmeProblem as problem:
            if len(raw) == 1:
                raise
            subproblems.append({**problem.to_json(), "identifier": item if isinstance(item, dict) else None})
    if subproblems:
        detail = "; ".join(p["detail"] for p in subproblems)
        raise problems.rejected_identifier(f"The order has identifiers this CA cannot accept: {detail}", subproblems)
    return sorted(identifiers)


def parse_contacts(raw: Any, *, required: bool) -> list[str]:
    """RFC 8555 §7.3: contact URLs; this server supports mailto: with one plain address."""
    if raw is None:
        raw = []
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise problems.malformed('"contact" must be a list of URL strings.')
    if required and not raw:
        raise problems.invalid_contact("This CA requires a mailto: contact for new accounts.")
    if len(raw) > MAX_CONTACTS:
        raise problems.invalid_contact(f"At most {MAX_CONTACTS} contacts are allowed.")
    contacts = []
    for url in raw:
        scheme, sep, address = url.partition(":")
        if not sep or scheme.lower() != "mailto":
            raise problems.unsupported_contact(f"{url!r}: only mailto: contacts are supported.")
        if "?" in address or "," in address or not _EMAIL.fullmatch(address):
            raise problems.invalid_contact(f"{url!r} is not a mailto: URL with one e-mail address.")
        contacts.append(f"mailto:{address}")
    return contacts


def load_csr(der: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_der_x509_csr(der)
    except ValueError:
        raise problems.bad_csr("The CSR cannot be parsed (it must be DER, base64url-encoded).") from None


def check_csr(csr: x509.CertificateSigningRequest, identifiers: list[Identifier], account_jwk: dict[str, Any]) -> None:
    """RFC 8555 §7.4: a valid signature, an allowed key that is not the account's, exactly the order's names."""
    # The hash first: cryptography does not verify SHA-1/MD5 signatures, and the client should hear why.
    try:
        algorithm = csr.signature_hash_algorithm
    except Exception:
        algorithm = None
    if isinstance(algorithm, hashes.SHA1 | hashes.MD5):
        raise problems.bad_csr(f"The CSR is signed with {algorithm.name.upper()}; use SHA-256 or better.")
    if not csr_signature_valid(csr):
        raise problems.bad_csr("The CSR's signature is not valid.")
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_CSR_RSA_BITS:
            raise problems.bad_csr(
                f"The CSR's RSA key has {key.key_size} bits; at least {MIN_CSR_RSA_BITS} are needed."
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in CSR_CURVES:
            raise problems.bad_csr(f"The CSR's key uses the curve {key.curve.name}; use P-256 or P-384.")
    else:
        raise problems.bad_csr(f"The CSR's key is a {type(key).__name__}; use RSA (2048+) or EC (P-256, P-384).")
    if jose.canonical_jwk(jose.jwk_from_key(key)) == jose.canonical_jwk(account_jwk):
        raise problems.bad_csr("The CSR's key is the account key; use a different key for the certificate.")

    names: set[Identifier] = set()
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except ValueError:
        raise problems.bad_csr("The CSR's extensions cannot be parsed.") from None
    for general_name in san or ():
        if isinstance(general_name, x509.DNSName):
            names.add(Identifier("dns", general_name.value.lower()))
        elif isinstance(general_name, x509.IPAddress):
            names.add(Identifier("ip", general_name.value.compressed))
        else:
            raise problems.bad_csr(f"The CSR asks for a name of an unsupported kind: {general_name}.")
    for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        cn = str(attribute.value).lower()
        try:
            names.add(Identifier("ip", ipaddress.ip_address(cn).compressed))
        except ValueError:
            names.add(Identifier("dns", cn))
    wanted = set(identifiers)
    if names != wanted:
        extra = sorted(n.value for n in names - wanted)
        missing = sorted(n.value for n in wanted - names)
        parts = []
        if extra:
            parts.append(f"names not in the order: {', '.join(extra)}")
        if missing:
            parts.append(f"identifiers of the order missing: {', '.join(missing)}")
        raise problems.bad_csr(f"The CSR's names differ from the order's ({'; '.join(parts)}).")
