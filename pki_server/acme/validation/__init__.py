"""Challenge validation: pure async functions that know nothing of Django (DESIGN.md, "Which way the arrows point").

The worker builds one :class:`ValidationConfig` from the settings and calls, for example,
``await validate_http01(identifier, token, key_authorization, config)``, which returns the
:class:`ValidationRecord`\\ s of what it did or raises :class:`ValidationError` (an RFC 8555 problem type, a detail
for a person, and the records gathered so far).
"""

from pki_server.acme.validation.base import (
    DEFAULT_DENY_NETWORKS,
    ValidationConfig,
    ValidationError,
    ValidationRecord,
    parse_host_port,
    parse_networks,
    parse_resolvers,
)
from pki_server.acme.validation.caa import check_caa
from pki_server.acme.validation.dns01 import dns01_txt_value, validate_dns01
from pki_server.acme.validation.http01 import validate_http01
from pki_server.acme.validation.resolver import check_address, lookup_txt, make_resolver, resolve_addresses
from pki_server.acme.validation.tlsalpn01 import acme_identifier_value, validate_tlsalpn01

__all__ = [
    "DEFAULT_DENY_NETWORKS",
    "ValidationConfig",
    "ValidationError",
    "ValidationRecord",
    "acme_identifier_value",
    "check_address",
    "check_caa",
    "dns01_txt_value",
    "lookup_txt",
    "make_resolver",
    "parse_host_port",
    "parse_networks",
    "parse_resolvers",
    "resolve_addresses",
    "validate_dns01",
    "validate_http01",
    "validate_tlsalpn01",
]
