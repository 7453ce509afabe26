"""The registry of key backends, configured like Django's STORAGES in ``PKI_KEY_BACKENDS``::

    >>> from pki_server.core.key_backends import key_backends
    >>> key_backends["default"]
    <StoragesBackend: default>
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from pki_server.core.key_backends.base import KeyBackend, UsePrivateKeyOptions

__all__ = ["KeyBackend", "KeyBackendHandler", "UsePrivateKeyOptions", "key_backends"]


class KeyBackendHandler:
    """Lazily builds one backend instance per alias in ``PKI_KEY_BACKENDS``."""

    def __init__(self) -> None:
        self._backends: dict[str, KeyBackend] = {}

    def __getitem__(self, alias: str) -> KeyBackend:
        try:
            return self._backends[alias]
        except KeyError:
            pass
        config: dict[str, Any] | None = settings.PKI_KEY_BACKENDS.get(alias)  # type: ignore[assignment]
        if config is None:
            raise KeyError(f"{alias!r} is not a key backend; configured: {', '.join(self.aliases)}.")
        try:
            backend_class = import_string(config["BACKEND"])
        except (ImportError, KeyError) as ex:
            raise ImproperlyConfigured(f"PKI_KEY_BACKENDS[{alias!r}]: cannot load the backend: {ex}") from ex
        backend = backend_class(alias, **config.get("OPTIONS", {}))
        self._backends[alias] = backend
        return backend

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (self[alias] for alias in self.aliases)

    @property
    def aliases(self) -> list[str]:
        return list(settings.PKI_KEY_BACKENDS)

    def reset(self, **kwargs: Any) -> None:
        if kwargs.get("setting", "PKI_KEY_BACKENDS") in {"PKI_KEY_BACKENDS", "STORAGES"}:
            self._backends.clear()


key_backends = KeyBackendHandler()
setting_changed.connect(key_backends.reset)
