"""A key backend that keeps CA keys in the database, as (optionally encrypted) PKCS#8 PEM.

Useful where the web and worker processes share a database but no file system. Anyone who can
read the database can read an unencrypted key: give such keys a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pki_server.core import utils
from pki_server.core.exceptions import KeyBackendError
from pki_server.core.key_backends.base import (
    BaseCreatePrivateKeyOptions,
    KeyBackend,
    UsePrivateKeyOptions,
    dump_pem_private_key,
    load_pem_private_key,
)

if TYPE_CHECKING:
    from pki_server.core.models import CertificateAuthority

__all__ = ["CreatePrivateKeyOptions", "DBBackend", "UsePrivateKeyOptions"]


@dataclass(frozen=True, kw_only=True)
class CreatePrivateKeyOptions(BaseCreatePrivateKeyOptions):
    pass


class DBBackend(KeyBackend):
    create_private_key_options_class = CreatePrivateKeyOptions

    def create_private_key(
        self, options: BaseCreatePrivateKeyOptions, *, label: str
    ) -> tuple[utils.PublicKey, dict[str, Any]]:
        key = options.generate()
        pem = dump_pem_private_key(key, options.password_bytes)
        return key.public_key(), {"private_key": pem.decode("ascii")}

    def delete_private_key(self, stored: dict[str, Any]) -> None:
        """Nothing to do: the key goes with the CA's row."""

    def load_private_key(self, ca: CertificateAuthority, options: UsePrivateKeyOptions) -> utils.PrivateKey:
        pem = ca.key_backend_options.get("private_key")
        if not pem:
            raise KeyBackendError(f"{ca.name}: no private key is stored for this CA.")
        return load_pem_private_key(pem.encode("ascii"), options.password_bytes, f"CA {ca.name!r}")
