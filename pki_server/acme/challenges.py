"""The challenge types this server validates, each bound to its pure validator (validation/)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pki_server.acme.validation.base import ValidationConfig, ValidationRecord
from pki_server.acme.validation.dns01 import validate_dns01
from pki_server.acme.validation.http01 import validate_http01
from pki_server.acme.validation.tlsalpn01 import validate_tlsalpn01

Validator = Callable[[str, str, str, ValidationConfig], Awaitable[list[ValidationRecord]]]

VALIDATORS: dict[str, Validator] = {
    "http-01": validate_http01,
    "dns-01": validate_dns01,
    "tls-alpn-01": validate_tlsalpn01,
}
