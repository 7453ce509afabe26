"""DNS lookups for validation and the address policy that decides which addresses may be contacted.

Every lookup goes to the configured resolvers (``PKI_ACME_DNS_RESOLVERS``: internal names resolve through internal
DNS) or, when none are configured, to the system's resolver from /etc/resolv.conf. Lookups are fresh: no cache, so
a record the client just published is seen (RFC 8555 §8.4 asks for the current state of DNS), and no search domains:
every name is absolute.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any

import dns.asyncbackend
import dns.asyncquery
import dns.asyncresolver
import dns.entropy
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from pki_server.acme.validation.base import Address, ValidationConfig, ValidationError

RESOLV_CONF = "/etc/resolv.conf"  # the system's resolvers, when PKI_ACME_DNS_RESOLVERS names none


def make_resolver(config: ValidationConfig) -> dns.asyncresolver.Resolver:
    """A resolver without cache or search list, asking ``config.resolvers`` (or the system's nameservers).

    Raises :class:`ValidationError` ("dns") when no resolver is configured and /etc/resolv.conf has none.
    """
    if config.resolvers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in config.resolvers]
    else:
        try:
            resolver = dns.asyncresolver.Resolver(filename=RESOLV_CONF)
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


# The system's nameservers as last read, and the (mtime, size, inode) of RESOLV_CONF they were read from.
_system: tuple[tuple[int, int, int], list[tuple[str, int]]] | None = None


def _nameservers(config: ValidationConfig) -> list[tuple[str, int]]:
    """The resolvers a query asks: the configured ones, else the system's.

    RESOLV_CONF is parsed again only when it changes (one stat per query), not on every query: the
    parse is blocking file I/O on the event loop, and a validation makes five queries.
    """
    global _system
    if config.resolvers:
        return list(config.resolvers)
    try:
        status = os.stat(RESOLV_CONF)
        stamp: tuple[int, int, int] | None = (status.st_mtime_ns, status.st_size, status.st_ino)
    except OSError:
        stamp = None  # make_resolver says what is wrong
    cached = _system
    if stamp is not None and cached is not None and cached[0] == stamp:
        return list(cached[1])
    system = make_resolver(config)
    # Read from resolv.conf they are addresses (port: the resolver's); set by us, Do53Nameserver objects.
    servers = [(server, system.port) if isinstance(server, str) else (server.address, server.port)
               for server in system.nameservers
               if isinstance(server, str | dns.nameserver.Do53Nameserver)]
    if stamp is not None:
        _system = (stamp, servers)
    return list(servers)


async def query(qname: dns.name.Name, rdtype: str, config: ValidationConfig) -> dns.rrset.RRset | None:
    """A fresh lookup of ``rdtype`` at ``qname``: the answer's RRset (CNAMEs followed), None when there is none.

    dnspython's resolver semantics — the resolvers in order, each try ``dns_timeout / 2``, all within
    ``dns_timeout``; a resolver answering SERVFAIL or REFUSED is not asked again; a truncated answer is
    asked again over TCP — with its exceptions (NXDOMAIN, NoNameservers, LifetimeTimeout), for less
    CPU (about half for an answer without records, a seventh less for one with): a new socket (and
    so a new random source port) and a random ID per query as there, but no per-query event-loop
    endpoint, and an answer without records (most CAA lookups climbing the tree, AAAA of IPv4-only
    hosts) is not parsed beyond its question.
    """
    qtype = dns.rdatatype.from_text(rdtype)
    qid, wire = _query_wire(qname, qtype)
    servers = _nameservers(config)
    errors: list[tuple[str, bool, int, Any, dns.message.Message | None]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.dns_timeout
    while servers:
        for server in list(servers):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise dns.resolver.LifetimeTimeout(timeout=config.dns_timeout, errors=errors)
            host, port = server
            tcp = False
            try:
                response = await _exchange_udp(wire, qname, qtype, host, port, min(config.dns_timeout / 2, remaining))
                if response.flags & dns.flags.TC:
                    tcp = True
                    response = await dns.asyncquery.tcp(_query_message(qname, qtype, qid), host,
                                                        timeout=max(deadline - loop.time(), 0.001), port=port,
                                                        backend=ASYNCIO)
            except (TimeoutError, dns.exception.Timeout) as ex:
                errors.append((host, tcp, port, ex, None))
                continue
            except (OSError, dns.exception.DNSException) as ex:  # unreachable, refused, a broken answer
                errors.append((host, tcp, port, ex, None))
                servers.remove(server)
                continue
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                raise dns.resolver.NXDOMAIN(qnames=[qname])
            if rcode != dns.rcode.NOERROR:
                errors.append((host, tcp, port, dns.rcode.to_text(rcode), response))
                servers.remove(server)
                continue
            if not response.answer:
                return None
            if not isinstance(response, dns.message.QueryMessage):  # is_response() checked the opcode: cannot be
                raise dns.exception.FormError("the answer is not a query response")
            return response.resolve_chaining().answer
    raise dns.resolver.NoNameservers(request=_query_message(qname, qtype, qid), errors=errors)


_HEADER = struct.Struct("!HHHHHH")
_QUESTION_TAIL = struct.Struct("!HH")
_NO_QUESTION_NEEDED = frozenset({dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED})


def _query_wire(qname: dns.name.Name, qtype: dns.rdatatype.RdataType) -> tuple[int, bytes]:
    """A random ID and the query as dnspython's ``make_query(qname, qtype).to_wire()`` writes it.

    RFC 1035 §4.1: a header (RD set, one question), the name, type and class IN; no EDNS, as
    make_query without EDNS options. Written here because building and rendering a Message was a
    third of a lookup's CPU; the answers are still parsed by dnspython.
    """
    qid = dns.entropy.random_16()
    name: bytes = qname.to_wire()  # type: ignore[assignment]  # bytes when not writing to a file
    return qid, _HEADER.pack(qid, dns.flags.RD, 1, 0, 0, 0) + name + _QUESTION_TAIL.pack(qtype, dns.rdataclass.IN)


def _query_message(qname: dns.name.Name, qtype: dns.rdatatype.RdataType, qid: int) -> dns.message.QueryMessage:
    """The same query as a Message (for TCP after truncation, and in errors)."""
    return dns.message.make_query(qname, qtype, id=qid)


def _answers(response: dns.message.Message, qname: dns.name.Name, qtype: dns.rdatatype.RdataType) -> bool:
    """Whether ``response`` (its ID already matched) answers the query: dnspython's ``is_response`` for a QUERY."""
    if not response.flags & dns.flags.QR or dns.opcode.from_flags(response.flags) != dns.opcode.QUERY:
        return False
    if not response.question:  # allowed only for errors, as dnspython allows it
        return response.rcode() in _NO_QUESTION_NEEDED
    question = response.question
    return (len(question) == 1 and question[0].name == qname and question[0].rdtype == qtype
            and question[0].rdclass == dns.rdataclass.IN)


async def _exchange_udp(wire: bytes, qname: dns.name.Name, qtype: dns.rdatatype.RdataType, host: str, port: int,
                        timeout: float) -> dns.message.Message:
    """Send ``wire`` from a new socket and wait for the datagram that answers it (others are ignored).

    An answer without records (ANCOUNT 0) is parsed only up to its question, enough to match it
    to the request: its authority section (an SOA, from most servers) cost more than the rest.
    """
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((host, port))  # a connected socket: the kernel drops datagrams from anywhere else
        async with asyncio.timeout(timeout):
            await loop.sock_sendall(sock, wire)
            while True:
                data = await loop.sock_recv(sock, 65535)
                if len(data) < 12 or data[:2] != wire[:2]:  # not even a header, or another query's ID
                    continue
                try:
                    response = dns.message.from_wire(data, question_only=data[6:8] == b"\0\0")
                except dns.exception.DNSException:
                    continue
                if _answers(response, qname, qtype):
                    return response


async def _lookup(qname: dns.name.Name, rdtype: str, config: ValidationConfig) -> dns.rrset.RRset | None:
    try:
        return await query(qname, rdtype, config)
    except dns.resolver.NXDOMAIN:
        raise
    except dns.exception.DNSException as ex:
        raise ValidationError("dns", f"DNS problem: looking up {rdtype} for {qname.to_text(omit_final_dot=True)} "
                                     f"with {describe_resolvers(config)}: {_failure(ex)}") from ex


async def _addresses(qname: dns.name.Name, rdtype: str, config: ValidationConfig) -> list[Address]:
    rrset = await _lookup(qname, rdtype, config)
    return [ipaddress.ip_address(rdata.address) for rdata in (rrset or [])]


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
    shown = qname.to_text(omit_final_dot=True)
    results = await asyncio.gather(_addresses(qname, "AAAA", config), _addresses(qname, "A", config),
                                   return_exceptions=True)
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
        rrset = await _lookup(qname, "TXT", config)
    except dns.resolver.NXDOMAIN:
        return []
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in (rrset or [])]
