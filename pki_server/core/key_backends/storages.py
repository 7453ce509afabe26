"""The default key backend: PEM files in a Django storage (``PKI_DATA_DIR/keys``, mode 0600)."""

from __future__ import annotations

import hashlib
import posixpath
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages

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

__all__ = ["CreatePrivateKeyOptions", "StoragesBackend", "UsePrivateKeyOptions"]

KEY_CACHE_SECONDS = 60  # a loaded key is kept this long, while its file is there
# (storage alias, storage location, path, SHA-256 of the password) -> (key, monotonic expiry)
_loaded: dict[tuple[str, str, str, bytes], tuple[utils.PrivateKey, float]] = {}


@dataclass(frozen=True, kw_only=True)
class CreatePrivateKeyOptions(BaseCreatePrivateKeyOptions):
    """``path`` is the folder inside the key storage that the key file goes to."""

    path: str = "ca"

    def __post_init__(self) -> None:
        super().__post_init__()
        normalized = posixpath.normpath(self.path.strip().replace("\\", "/")) if self.path.strip() else ""
        if not normalized or normalized.startswith(("/", "..")) or normalized == ".":
            raise ValueError(f"path={self.path!r} must be a relative folder inside the key storage.")
        object.__setattr__(self, "path", normalized)


class StoragesBackend(KeyBackend):
    create_private_key_options_class = CreatePrivateKeyOptions

    def __init__(self, alias: str, storage_alias: str = "pki_keys") -> None:
        super().__init__(alias, storage_alias=storage_alias)
        self.storage_alias = storage_alias

    @property
    def storage(self) -> Storage:
        return storages[self.storage_alias]

    def create_private_key(
        self, options: BaseCreatePrivateKeyOptions, *, label: str
    ) -> tuple[utils.PublicKey, dict[str, Any]]:
        if not isinstance(options, CreatePrivateKeyOptions):
            raise TypeError(
                "The storages key backend takes pki_server.core.key_backends.storages.CreatePrivateKeyOptions."
            )
        key = options.generate()
        public_key = key.public_key()
        # The file is named after the key itself (its subject key identifier): unique, and stable.
        ski = x509.SubjectKeyIdentifier.from_public_key(public_key).digest.hex().upper()
        name = f"{options.path}/{ski}.key"
        if self.storage.exists(name):
            raise KeyBackendError(f"The key file {name} exists already in the key storage.")
        try:
            stored_name = self.storage.save(name, ContentFile(dump_pem_private_key(key, options.password_bytes)))
        except OSError as ex:
            raise KeyBackendError(f"Cannot write the key file {name}: {ex.strerror or ex}.") from ex
        return public_key, {"path": stored_name}

    def delete_private_key(self, stored: dict[str, Any]) -> None:
        path = stored.get("path")
        for cache_key in [cache_key for cache_key in _loaded if cache_key[2] == path]:
            _loaded.pop(cache_key, None)
        if path and self.storage.exists(path):
            self.storage.delete(path)

    def load_private_key(self, ca: CertificateAuthority, options: UsePrivateKeyOptions) -> utils.PrivateKey:
        path = ca.key_backend_options.get("path")
        if not path:
            raise KeyBackendError(f"{ca.name}: no key file is recorded for this CA.")
        # A key file is named after its key and never rewritten, so while it is there, a key read from
        # it a moment ago is still its key: reading and parsing the PEM on every signature cost more
        # than the signature. A file that went away is noticed at once (the check is one stat).
        storage = self.storage
        cache_key = (self.storage_alias, getattr(storage, "location", ""), path,
                     hashlib.sha256(options.password_bytes or b"").digest())
        cached = _loaded.get(cache_key)
        if cached is not None and cached[1] > time.monotonic() and storage.exists(path):
            return cached[0]
        key = self._read_private_key(ca, storage, path, options)
        if len(_loaded) >= 64:
            _loaded.clear()
        _loaded[cache_key] = (key, time.monotonic() + KEY_CACHE_SECONDS)
        return key

    @staticmethod
    def _read_private_key(ca: CertificateAuthority, storage: Storage, path: str,
                          options: UsePrivateKeyOptions) -> utils.PrivateKey:
        try:
            with storage.open(path, "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            raise KeyBackendError(f"{ca.name}: the key file {path} is missing from the key storage.") from None
        except OSError as ex:
            raise KeyBackendError(f"{ca.name}: cannot read the key file {path}: {ex.strerror or ex}.") from None
        return load_pem_private_key(data, options.password_bytes, f"CA {ca.name!r}")
