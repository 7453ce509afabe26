"""The CA an ACME URL names, cached in the process for a few seconds.

Every ACME request starts by finding its CA: the widest row the server reads (with its parent, for
name constraints), and the same few rows for every request. They are cached per process for
``PKI_ACME_CA_CACHE_SECONDS`` (default 5). A change saved in this process (admin, API) clears the
cache at once; one made by another process (``pki-server edit_ca``, another web process's admin)
reaches this process within that time. Signing never uses the cached object: issuance loads the CA
afresh in its own transaction.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from pki_server.acme import problems
from pki_server.acme.models import one
from pki_server.acme.problems import AcmeProblem
from pki_server.core.models import CertificateAuthority
from pki_server.core.signals import post_revoke_cert

_cache: dict[str | None, tuple[float, CertificateAuthority | None]] = {}
_lock = threading.Lock()


def acme_ca(name: str | None) -> CertificateAuthority:
    """The ACME-enabled CA a URL names (None: the default one), or a 404 problem."""
    return _check(name, _lookup(name))


def cached_acme_ca(name: str | None) -> CertificateAuthority | None:
    """:func:`acme_ca` from the cache alone, without the database: None when it must be read."""
    ttl = float(getattr(settings, "PKI_ACME_CA_CACHE_SECONDS", 5))
    cached = _cache.get(name)
    if cached is None or cached[1] is None or time.monotonic() - cached[0] >= ttl:
        return None
    return _check(name, cached[1])


def _check(name: str | None, ca: CertificateAuthority | None) -> CertificateAuthority:
    if ca is None:
        if name is None:
            raise problems.not_found(
                "There is no default ACME CA (there must be exactly one ACME-enabled CA, or PKI_ACME_DEFAULT_CA"
                " must name one): use /acme/<ca-name>/directory."
            )
        raise problems.not_found(f"There is no CA named {name!r}.")
    if not ca.acme_enabled:
        raise problems.not_found(f"CA {ca.name!r} does not serve ACME.")
    if not ca.enabled:
        raise AcmeProblem("serverInternal", f"CA {ca.name!r} is disabled.", 503)
    return ca


def _lookup(name: str | None) -> CertificateAuthority | None:
    ttl = float(getattr(settings, "PKI_ACME_CA_CACHE_SECONDS", 5))
    now = time.monotonic()
    cached = _cache.get(name)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    ca = _query(name)
    if ttl > 0:
        with _lock:
            _cache[name] = (now, ca)
    return ca


def _query(name: str | None) -> CertificateAuthority | None:
    if name is None:
        default = getattr(settings, "PKI_ACME_DEFAULT_CA", "")
        if not default:
            return CertificateAuthority.objects.default_acme()
        name = default
    return one(CertificateAuthority.objects.filter(name=name).select_related("parent"))


def clear() -> None:
    with _lock:
        _cache.clear()


@receiver(post_save, sender=CertificateAuthority, dispatch_uid="acme-ca-cache-save")
@receiver(post_delete, sender=CertificateAuthority, dispatch_uid="acme-ca-cache-delete")
@receiver(post_revoke_cert, sender=CertificateAuthority, dispatch_uid="acme-ca-cache-revoke")
def _changed(**kwargs: Any) -> None:
    clear()
