"""DNS lookups for validation and the address policy that decides which addresses may be contacted.

Every lookup goes to the configured resolvers (``PKI_ACME_DNS_RESOLVERS``: internal names resolve through internal
DNS) or, when none are configured, to the system's resolver from /etc/resolv.conf. Lookups are fresh: no cache, so
a record the client just published is seen (RFC 8555 §8.4 asks for the current state of DNS), and no search domains:
every name is absolute.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from pki_server.acme.validation.base import Address, ValidationConfig, ValidationError


def make_resolver(config: ValidationConfig) -> dns.asyncresolver.Resolver:
    """A resolver without cache or search list, asking ``config.resolvers`` (or the system's nameservers).

    Raises :class:`ValidationError` ("dns") when no resolver is configured and /etc/resolv.conf has none.
    """
    if config.resolvers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in config.resolvers]
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration as ex:
            raise ValidationError("dns", "DNS problem: no DNS resolver is configured (set PKI_ACME_DNS_RESOLVERS "
                                         f"or /etc/resolv.conf): {ex}") from ex
    resolver.cache = None
    resolver.search = []
    resolver.use_search_by_default = False
    resolver.lifetime = config.dns_timeout
    # Two tries per resolver within the lifetime, so one lost UDP datagram does not fail a validation.
    resolver.timeout = config.dns_timeout / 2
    return resolver


def describe_resolvers(config: ValidationConfig) -> str:
    """The resolvers a lookup used, for error details: ``resolver 10.0.0.53:53`` or ``the system resolver``."""
    if not config.resolvers:
        return "the system resolver"
    names = ", ".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in config.resolvers)
    return f"resolver {names}" if len(config.resolvers) == 1 else f"resolvers {names}"


def ip_literal(name: str) -> Address | None:
    """The address if ``name`` is an IP literal (``192.0.2.1``, ``2001:db8::1`` or ``[2001:db8::1]``)."""
    try:
        return ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
    except ValueError:
        return None


def check_address(address: Address | str, config: ValidationConfig) -> None:
    """Refuse an address the policy forbids: in ``config.deny_networks``, or outside non-empty ``allow_networks``.

    An IPv4-mapped IPv6 address (``::ffff:169.254.169.254``) is judged as the IPv4 address it reaches too.
    Raises :class:`ValidationError` ("connection") whose detail names the address and the rule.
    """
    address = ipaddress.ip_address(address)
    candidates: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    for candidate in candidates:
        for network in config.deny_networks:
            if candidate.version == network.version and candidate in network:
                raise ValidationError("connection", f"{address} is in the denied network {network}, which validation "
                                                    "never contacts (PKI_ACME_VALIDATION_DENY_NETWORKS)")
    if config.allow_networks and not any(
        candidate.version == network.version and candidate in network
        for candidate in candidates for network in config.allow_networks
    ):
        allowed = ", ".join(str(network) for network in config.allow_networks)
        raise ValidationError("connection", f"{address} is outside the allowed networks ({allowed}), the only ones "
                                            "validation contacts")


# Named, so that dnspython does not sniff the event loop on every query: without the sniffio
# package that sniffing is a failed import each time, a measurable share of a validation's CPU.
ASYNCIO = dns.asyncbackend.get_backend("asyncio")


def split_by_policy(addresses: Sequence[Address], config: ValidationConfig) -> tuple[list[Address], list[str]]:
    """The addresses the policy lets a validator contact, and why each other one was refused."""
    permitted: list[Address] = []
    refusals: list[str] = []
    for address in addresses:
        try:
            check_address(address, config)
        except ValidationError as ex:
            refusals.append(ex.detail)
        else:
            permitted.append(address)
    return permitted, refusals


def _qname(name: str) -> dns.name.Name:
    try:
        return dns.name.from_text(name.rstrip(".") + ".")
    except dns.exception.DNSException as ex:
        raise ValidationError("malformed", f"{name!r} is not a valid DNS name: {ex}") from ex


def _failure(ex: Exception) -> str:
    """What went wrong with a lookup, in words."""
    if isinstance(ex, dns.resolver.NXDOMAIN):
        return "NXDOMAIN (the name does not exist)"
    if isinstance(ex, dns.resolver.LifetimeTimeout | dns.exception.Timeout):
        return "the query timed out"
    if isinstance(ex, dns.resolver.NoNameservers):
        answers = sorted({str(error[3]) for error in ex.kwargs.get("errors", [])})
        return ", ".join(answers) or "no resolver answered"
    return str(ex) or type(ex).__name__


async def _lookup(resolver: dns.asyncresolver.Resolver, qname: dns.name.Name, rdtype: str,
                  config: ValidationConfig) -> dns.resolver.Answer:
    try:
        return await resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False, backend=ASYNCIO)
    except dns.resolver.NXDOMAIN:
        raise
    except dns.exception.DNSException as ex:
        raise ValidationError("dns", f"DNS problem: looking up {rdtype} for {qname.to_text(omit_final_dot=True)} "
                                     f"with {describe_resolvers(config)}: {_failure(ex)}") from ex


async def _addresses(resolver: dns.asyncresolver.Resolver, qname: dns.name.Name, rdtype: str,
                     config: ValidationConfig) -> list[Address]:
    answer = await _lookup(resolver, qname, rdtype, config)
    return [ipaddress.ip_address(rdata.address) for rdata in (answer.rrset or [])]


async def resolve_addresses(name: str, config: ValidationConfig) -> list[Address]:
    """The addresses of ``name`` (A and AAAA, CNAMEs followed by the resolver), IPv6 addresses first.

    IPv6 first, as Boulder does: a host that publishes AAAA should serve on it, and the caller falls back to IPv4
    when IPv6 does not connect. An IP literal is returned as it is. The policy (:func:`check_address`) is the
    caller's business: it needs every address, denied ones included, for its records.
    Raises :class:`ValidationError` ("dns") for NXDOMAIN, SERVFAIL, timeouts, or when there is no address at all.
    """
    literal = ip_literal(name)
    if literal is not None:
        return [literal]
    qname = _qname(name)
    resolver = make_resolver(config)
    shown = qname.to_text(omit_final_dot=True)
    results = await asyncio.gather(_addresses(resolver, qname, "AAAA", config),
                                   _addresses(resolver, qname, "A", config), return_exceptions=True)
    addresses: list[Address] = []
    failures: list[BaseException] = []
    for result in results:
        if isinstance(result, BaseException):
            failures.append(result)
        else:
            addresses.extend(a for a in result if a not in addresses)
    if addresses:  # one family failing (a broken AAAA server, say) does not matter when the other answers
        return addresses
    for failure in failures:
        if not isinstance(failure, ValidationError | dns.resolver.NXDOMAIN):
            raise failure
    if any(isinstance(failure, dns.resolver.NXDOMAIN) for failure in failures):
        raise ValidationError("dns", f"DNS problem: NXDOMAIN looking up A and AAAA for {shown} with "
                                     f"{describe_resolvers(config)}: the name does not exist")
    if failures:
        raise failures[-1]  # the A lookup's error when both failed
    raise ValidationError("dns", f"DNS problem: no A or AAAA records found for {shown} with "
                                 f"{describe_resolvers(config)}")


async def lookup_txt(name: str, config: ValidationConfig) -> list[str]:
    """Every TXT value at ``name`` (for DNS-01, RFC 8555 §8.4), CNAMEs followed; a value of several strings is joined.

    A name that does not exist, or has no TXT record, gives ``[]``. Values are decoded as UTF-8 (bytes that are not
    UTF-8 are replaced, so they cannot match a key authorization digest). Other failures raise
    :class:`ValidationError` ("dns") naming the name and the resolvers.
    """
    qname = _qname(name)
    try:
        answer = await _lookup(make_resolver(config), qname, "TXT", config)
    except dns.resolver.NXDOMAIN:
        return []
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in (answer.rrset or [])]
