"""DNS-01 validation (RFC 8555 §8.4) through the configured resolvers.

The client publishes ``base64url(SHA-256(key_authorization))`` in a TXT record at ``_acme-challenge.<name>``; the
validator looks it up (:func:`.resolver.lookup_txt`: a fresh lookup, no cache, CNAMEs followed, a record of several
strings joined) and accepts when any TXT value there equals the digest. Several values at one name are normal: a
wildcard and its base name share ``_acme-challenge.<name>``, and a client may leave old values behind.

Problem types (RFC 8555 §6.7; the same as Boulder's): "unauthorized" when there is no TXT record or none has the
expected value (the detail quotes what was found), "dns" when the lookup itself failed (SERVFAIL, timeout ...).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

from pki_server.acme.validation.base import ValidationConfig, ValidationError, ValidationRecord
from pki_server.acme.validation.resolver import describe_resolvers, ip_literal, lookup_txt

CHALLENGE_LABEL = "_acme-challenge"
_SHOWN_VALUES = 3  # TXT values quoted in an error detail
_SHOWN_LENGTH = 100  # characters of one TXT value quoted


def dns01_txt_value(key_authorization: str) -> str:
    """The TXT value a client publishes: base64url(SHA-256(key authorization)) without padding (RFC 8555 §8.4)."""
    digest = hashlib.sha256(key_authorization.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


async def validate_dns01(identifier: str, token: str, key_authorization: str,
                         config: ValidationConfig) -> list[ValidationRecord]:
    """Look up the TXT records at ``_acme-challenge.<identifier>`` and find the key authorization's digest.

    ``identifier`` is the DNS name without a wildcard label (a leading ``*.`` is removed all the same: the wildcard
    and the base name are validated at the same name). ``token`` is not used (the digest covers it); it keeps the
    signature every validator shares. Returns one record (the name looked up) or raises :class:`ValidationError`.
    """
    base = identifier.removeprefix("*.").rstrip(".").lower()
    if ip_literal(base) is not None:
        # RFC 8738 §7: dns-01 cannot validate IP addresses.
        raise ValidationError("rejectedIdentifier", f"{identifier} is an IP address, which dns-01 cannot validate: "
                                                    "use http-01 or tls-alpn-01")
    name = f"{CHALLENGE_LABEL}.{base}"
    records = [ValidationRecord(url=None, hostname=base, port=None)]
    try:
        async with asyncio.timeout(config.total_timeout):
            values = await lookup_txt(name, config)
    except TimeoutError:
        raise ValidationError("dns", f"DNS problem: looking up TXT for {name} with {describe_resolvers(config)}: "
                                     f"no answer within {config.total_timeout:g} s", records) from None
    except ValidationError as ex:
        raise ValidationError(ex.problem_type, ex.detail, records) from ex
    if not values:
        raise ValidationError("unauthorized", f"No TXT record found at {name}", records)
    expected = dns01_txt_value(key_authorization)
    if expected in values:
        return records
    raise ValidationError("unauthorized", f"Incorrect TXT record {_show(values)} found at {name} (expected "
                                          f"\"{expected}\")", records)


def _show(values: list[str]) -> str:
    """The values found, quoted, the first few of them and each cut to a hundred characters."""
    shown = []
    for value in values[:_SHOWN_VALUES]:
        text = json.dumps(value[:_SHOWN_LENGTH], ensure_ascii=False)
        shown.append(text + " (cut)" if len(value) > _SHOWN_LENGTH else text)
    more = len(values) - _SHOWN_VALUES
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
