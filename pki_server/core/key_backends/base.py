"""The key-backend interface: where a CA's private key lives and how it signs.

A backend creates a CA's key, stores it (a file, a database row, an HSM slot) and signs with it.
Callers never see the private key: they hand the backend a builder and get the signed object
back, so that a PKCS#11 backend can keep keys inside the token.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from django.conf import settings

from pki_server.core import utils
from pki_server.core.exceptions import KeyBackendError

if TYPE_CHECKING:
    from pki_server.core.models import CertificateAuthority


def _password_bytes(password: str | bytes | None) -> bytes | None:
    if password is None or password in ("", b""):
        return None
    return password.encode("utf-8") if isinstance(password, str) else password


@dataclass(frozen=True, kw_only=True)
class BaseCreatePrivateKeyOptions:
    """How to make a new CA key. ``key_size`` implies RSA and ``elliptic_curve`` EC when
    ``key_type`` is not given; with neither, the key is RSA of ``PKI_DEFAULT_KEY_SIZE`` bits."""

    password: str | bytes | None = None
    key_type: str | None = None
    key_size: int | None = None
    elliptic_curve: str | None = None

    def __post_init__(self) -> None:
        key_type = self.key_type
        if key_type is not None:
            key_type = utils.parse_key_type(key_type)
        elif self.elliptic_curve is not None:
            key_type = "EC"
        else:
            key_type = "RSA"
        object.__setattr__(self, "key_type", key_type)
        if self.key_size is not None and key_type != "RSA":
            raise ValueError(f"key_size applies to RSA keys only, not to {key_type}.")
        if self.elliptic_curve is not None and key_type != "EC":
            raise ValueError(f"elliptic_curve applies to EC keys only, not to {key_type}.")
        if key_type == "EC":
            object.__setattr__(self, "elliptic_curve", utils.parse_elliptic_curve(self.elliptic_curve or "P-256"))
        if self.key_size is not None and (self.key_size < 1024 or self.key_size & (self.key_size - 1)):
            raise ValueError(f"key_size={self.key_size}: an RSA key size is a power of two of at least 1024.")

    @property
    def password_bytes(self) -> bytes | None:
        return _password_bytes(self.password)

    def generate(self) -> utils.PrivateKey:
        """A new private key as these options describe, checked against ``PKI_MIN_KEY_SIZE``."""
        if self.key_type == "RSA":
            size = self.key_size or settings.PKI_DEFAULT_KEY_SIZE
            if size < settings.PKI_MIN_KEY_SIZE:
                raise ValueError(
                    f"key_size={size} is below the minimum key size of {settings.PKI_MIN_KEY_SIZE} bits "
                    "(PKI_MIN_KEY_SIZE)."
                )
            return rsa.generate_private_key(public_exponent=65537, key_size=size)
        if self.key_type == "EC":
            assert self.elliptic_curve is not None
            return ec.generate_private_key(utils.ELLIPTIC_CURVES[self.elliptic_curve]())
        if self.key_type == "Ed25519":
            return ed25519.Ed25519PrivateKey.generate()
        return ed448.Ed448PrivateKey.generate()


@dataclass(frozen=True, kw_only=True)
class UsePrivateKeyOptions:
    """What it takes to use a stored key: its password, if it has one."""

    password: str | bytes | None = None

    @property
    def password_bytes(self) -> bytes | None:
        return _password_bytes(self.password)


class KeyBackend(abc.ABC):
    """A place where CA private keys live. Subclasses are listed in ``PKI_KEY_BACKENDS``."""

    #: Options class that :meth:`create_private_key` takes.
    create_private_key_options_class: ClassVar[type[BaseCreatePrivateKeyOptions]]
    #: Options class that the signing methods take.
    use_private_key_options_class: ClassVar[type[UsePrivateKeyOptions]] = UsePrivateKeyOptions

    def __init__(self, alias: str, **options: Any) -> None:
        self.alias = alias
        self.options = options

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.alias}>"

    @abc.abstractmethod
    def create_private_key(
        self, options: BaseCreatePrivateKeyOptions, *, label: str
    ) -> tuple[utils.PublicKey, dict[str, Any]]:
        """Create and store a key. Returns its public key and the JSON-serialisable data that
        :meth:`load_private_key` needs to find it again (stored as the CA's
        ``key_backend_options``; it must never hold a password)."""

    @abc.abstractmethod
    def delete_private_key(self, stored: dict[str, Any]) -> None:
        """Remove a key created by :meth:`create_private_key` (used to undo a failed ``init``)."""

    @abc.abstractmethod
    def load_private_key(self, ca: CertificateAuthority, options: UsePrivateKeyOptions) -> utils.PrivateKey:
        """The CA's private key; raises :class:`PasswordError` for a missing or wrong password."""

    def get_use_private_key_options(
        self, options: UsePrivateKeyOptions | dict[str, Any] | None
    ) -> UsePrivateKeyOptions:
        if options is None:
            return self.use_private_key_options_class()
        if isinstance(options, dict):
            return self.use_private_key_options_class(**options)
        if not isinstance(options, UsePrivateKeyOptions):
            raise TypeError(f"{self!r} takes UsePrivateKeyOptions, not {type(options).__name__}.")
        return options

    def check_usable(self, ca: CertificateAuthority, options: UsePrivateKeyOptions) -> None:
        """Raise :class:`KeyBackendError` unless the key can be used with these options."""
        self.load_private_key(ca, options)

    def sign_certificate(
        self, ca: CertificateAuthority, options: UsePrivateKeyOptions, builder: x509.CertificateBuilder
    ) -> x509.Certificate:
        key = self.load_private_key(ca, options)
        return builder.sign(key, utils.signature_hash_for(key))  # type: ignore[arg-type]

    def sign_certificate_revocation_list(
        self, ca: CertificateAuthority, options: UsePrivateKeyOptions,
        builder: x509.CertificateRevocationListBuilder,
    ) -> x509.CertificateRevocationList:
        key = self.load_private_key(ca, options)
        return builder.sign(key, utils.signature_hash_for(key))  # type: ignore[arg-type]


def load_pem_private_key(data: bytes, password: bytes | None, what: str) -> utils.PrivateKey:
    """Decrypt a stored PEM key, turning cryptography's errors into clear :class:`PasswordError`\\ s."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key as _load

    from pki_server.core.exceptions import PasswordError

    try:
        key = _load(data, password=password)
    except TypeError:
        if password is None:
            raise PasswordError(f"The private key of {what} is encrypted: a password is required.") from None
        raise PasswordError(f"The private key of {what} is not encrypted: do not give a password.") from None
    except ValueError:
        if password is not None:
            raise PasswordError(f"Wrong password for the private key of {what}.") from None
        raise KeyBackendError(f"The private key of {what} cannot be read.") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                      | ed448.Ed448PrivateKey):
        raise KeyBackendError(f"The private key of {what} is of an unsupported type.")
    return key


def dump_pem_private_key(key: utils.PrivateKey, password: bytes | None) -> bytes:
    from cryptography.hazmat.primitives import serialization

    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
