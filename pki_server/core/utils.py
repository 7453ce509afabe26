"""Small, pure helpers for X.509 values: names, serials, key types."""

from __future__ import annotations

import re
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

PrivateKey: TypeAlias = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
)
PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

KEY_TYPES = ("RSA", "EC", "Ed25519", "Ed448")
ELLIPTIC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
}
_CURVE_ALIASES = {"p-256": "secp256r1", "p256": "secp256r1", "prime256v1": "secp256r1",
                  "p-384": "secp384r1", "p384": "secp384r1", "p-521": "secp521r1", "p521": "secp521r1"}

# Short names accepted in "/C=AT/CN=example.com" strings (OpenSSL's, case-insensitive).
NAME_OIDS: dict[str, x509.ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "DC": NameOID.DOMAIN_COMPONENT,
    "STREET": NameOID.STREET_ADDRESS,
    "UID": NameOID.USER_ID,
    "TITLE": NameOID.TITLE,
    "GN": NameOID.GIVEN_NAME,
    "SN": NameOID.SURNAME,
    "POSTALCODE": NameOID.POSTAL_CODE,
}

_SLASH_SPLIT = re.compile(r"(?<!\\)/")


def x509_name(name: str | x509.Name) -> x509.Name:
    """Parse ``/C=AT/CN=example.com`` (OpenSSL style) or an RFC 4514 string into a :class:`x509.Name`.

    >>> x509_name("/C=AT/CN=example.com").rfc4514_string()
    'CN=example.com,C=AT'
    >>> x509_name("CN=example.com,O=Example").rfc4514_string()
    'CN=example.com,O=Example'
    """
    if isinstance(name, x509.Name):
        return name
    if not isinstance(name, str):
        raise TypeError(f"x509_name() takes a str or x509.Name, not {type(name).__name__}")
    text = name.strip()
    if not text:
        return x509.Name([])
    if not text.startswith("/"):
        try:
            return x509.Name.from_rfc4514_string(text, {k: v for k, v in NAME_OIDS.items()})
        except ValueError as ex:
            raise ValueError(f"{name!r} is not a valid name: {ex}") from None
    attributes = []
    for part in _SLASH_SPLIT.split(text[1:]):
        if not part:
            continue
        key, sep, value = part.partition("=")
        oid = NAME_OIDS.get(key.strip().upper())
        if not sep or oid is None:
            raise ValueError(f"{name!r} is not a valid name: unknown or malformed attribute {part!r}")
        value = value.replace("\\/", "/").strip()
        if not value:
            raise ValueError(f"{name!r} is not a valid name: {key} has no value")
        try:
            attributes.append(x509.NameAttribute(oid, value))
        except ValueError as ex:
            raise ValueError(f"{name!r} is not a valid name: {ex}") from None
    return x509.Name(attributes)


def format_name(name: x509.Name) -> str:
    """A name in the OpenSSL slash form, most significant attribute first: ``/C=AT/CN=example.com``."""
    reverse = {oid: short for short, oid in NAME_OIDS.items()}
    parts = []
    for attribute in name:
        key = reverse.get(attribute.oid, attribute.oid.dotted_string)
        if key == "EMAILADDRESS":
            key = "emailAddress"
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
        parts.append(f"/{key}={value.replace('/', chr(92) + '/')}")
    return "".join(parts)


def common_name(name: x509.Name) -> str:
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return ""
    value = attributes[-1].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def int_to_hex(value: int) -> str:
    """Serials and fingerprints as upper-case hex without colons or leading zeros: ``4AE2...``."""
    return f"{value:X}"


def hex_to_int(value: str) -> int:
    return int(value.replace(":", ""), 16)


def parse_key_type(value: str) -> str:
    for key_type in KEY_TYPES:
        if value.lower() == key_type.lower():
            return key_type
    raise ValueError(f"{value!r} is not a key type; use one of {', '.join(KEY_TYPES)}.")


def parse_elliptic_curve(value: str) -> str:
    name = _CURVE_ALIASES.get(value.lower(), value.lower())
    if name not in ELLIPTIC_CURVES:
        raise ValueError(f"{value!r} is not a supported curve; use P-256, P-384 or P-521.")
    return name


def key_type_of(key: PrivateKey | PublicKey | object) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "EC"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PrivateKey | ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPrivateKey | dsa.DSAPublicKey):
        return "DSA"
    return type(key).__name__


def describe_key(key: PublicKey | object) -> str:
    """``RSA 2048``, ``EC secp256r1``, ``Ed25519``."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    return key_type_of(key)


def signature_hash_for(key: PrivateKey | PublicKey) -> hashes.HashAlgorithm | None:
    """The hash a CA with this key signs with (None for EdDSA, which hashes internally)."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey | ed25519.Ed25519PublicKey
                  | ed448.Ed448PublicKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.key_size >= 521:
            return hashes.SHA512()
        if key.curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()
