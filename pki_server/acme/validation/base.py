"""What every validator shares: its configuration, the record of what it did, and its one error type.

Nothing here touches Django: the worker builds a :class:`ValidationConfig` from the settings once and passes it to
the pure async validators (``validate_http01`` ...), which return :class:`ValidationRecord`\\ s or raise
:class:`ValidationError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, cast

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

#: Addresses a validator never contacts unless the operator says otherwise (DESIGN.md, "Security principles").
#: Internal PKI must reach private networks (10/8, 192.168/16, fc00::/7 ...), so those stay allowed; what is denied
#: is the validating host itself, link-local (which holds the cloud metadata service 169.254.169.254) and addresses
#: that are never a web server.
DEFAULT_DENY_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(network)
    for network in (
        "127.0.0.0/8",  # loopback
        "::1/128",
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "::/128",  # unspecified
        "169.254.0.0/16",  # link-local, includes the cloud metadata service 169.254.169.254
        "fe80::/10",
        "224.0.0.0/4",  # multicast
        "ff00::/8",
        "255.255.255.255/32",  # limited broadcast
        "fd00:ec2::254/128",  # AWS metadata service over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata service
    )
)


def _as_network(value: object) -> Network:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    try:
        return ipaddress.ip_network(str(value))
    except ValueError as ex:
        raise ValueError(f"{value!r} is not a network in CIDR notation (such as 10.0.0.0/8): {ex}") from ex


def _as_resolver(value: object) -> tuple[str, int]:
    if isinstance(value, str):
        return parse_host_port(value)
    try:
        host_value, port_value = cast("tuple[object, object]", value)
        host = str(ipaddress.ip_address(str(host_value)))
        port = int(cast("int | str", port_value))
    except (TypeError, ValueError) as ex:
        raise ValueError(f"{value!r} is not a DNS resolver: give (IP address, port), such as ('10.0.0.53', 53)") from ex
    if not 0 < port < 65536:
        raise ValueError(f"{value!r} is not a DNS resolver: port {port} is not between 1 and 65535")
    return host, port


def parse_host_port(text: str, default_port: int = 53) -> tuple[str, int]:
    """Parse ``10.0.0.53``, ``10.0.0.53:5353``, ``::1``, ``[::1]:5353`` into (address, port).

    DNS resolvers are given by IP address (a resolver's name would need a resolver to look it up).
    """
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} is not host[:port]")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError as ex:
        raise ValueError(f"{text!r} is not an IP address with an optional port (such as 10.0.0.53:53 or "
                         f"[fd00::53]:53)") from ex
    try:
        port = int(port_text) if port_text else default_port
    except ValueError as ex:
        raise ValueError(f"{text!r}: the port {port_text!r} is not a number") from ex
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: the port {port} is not between 1 and 65535")
    return str(address), port


def parse_resolvers(text: str) -> tuple[tuple[str, int], ...]:
    """Parse a comma-separated ``host[:port]`` list (``PKI_ACME_DNS_RESOLVERS``); empty means the system's."""
    return tuple(parse_host_port(part) for part in text.split(",") if part.strip())


def parse_networks(text: str) -> tuple[Network, ...]:
    """Parse a comma-separated CIDR list (``PKI_ACME_VALIDATION_DENY_NETWORKS``); empty means none."""
    return tuple(_as_network(part.strip()) for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class ValidationConfig:
    """How validators reach the outside world. Every field has a safe default.

    Networks and resolvers may also be given as strings ("10.0.0.0/8", "10.0.0.53:53"); they are parsed here, so a
    bad value fails when the configuration is built, not in the middle of a validation.
    """

    http01_port: int = 80  # RFC 8555 §8.3: port 80; other values are for tests
    tlsalpn01_port: int = 443  # RFC 8737 §3: port 443; also the https port HTTP-01 redirects may use besides 443
    resolvers: tuple[tuple[str, int], ...] = ()  # (IP address, port); empty: the system's resolver (/etc/resolv.conf)
    deny_networks: tuple[Network, ...] = DEFAULT_DENY_NETWORKS
    allow_networks: tuple[Network, ...] = ()  # when non-empty, only these may be contacted
    connect_timeout: float = 5.0  # one TCP connect (and TLS handshake)
    total_timeout: float = 10.0  # whole validation: every lookup, connection and redirect
    dns_timeout: float = 5.0  # one DNS lookup, all resolvers and retries included
    max_redirects: int = 10
    max_body: int = 512  # bytes of a challenge response read at most

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolvers", tuple(_as_resolver(r) for r in self.resolvers))
        object.__setattr__(self, "deny_networks", tuple(_as_network(n) for n in self.deny_networks))
        object.__setattr__(self, "allow_networks", tuple(_as_network(n) for n in self.allow_networks))
        for name in ("http01_port", "tlsalpn01_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ValueError(f"{name}={getattr(self, name)} is not a port between 1 and 65535")
        for name in ("connect_timeout", "total_timeout", "dns_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive number of seconds")
        if self.max_redirects < 0 or self.max_body < 1:
            raise ValueError("max_redirects must be >= 0 and max_body >= 1")


@dataclass(frozen=True)
class ValidationRecord:
    """One step of a validation (one HTTP request, one lookup), kept with the challenge for the operator.

    RFC 8555 §8 leaves its shape open; the JSON follows Boulder's ``validationRecord`` entries.
    """

    url: str | None
    hostname: str
    port: int | None
    addresses_resolved: tuple[str, ...] = ()
    address_used: str | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"hostname": self.hostname, "addressesResolved": list(self.addresses_resolved)}
        if self.url is not None:
            document["url"] = self.url
        if self.port is not None:
            document["port"] = self.port
        if self.address_used is not None:
            document["addressUsed"] = self.address_used
        return document


class ValidationError(Exception):
    """A validation failed.

    ``problem_type`` is an RFC 8555 §6.7 error name without the ``urn:ietf:params:acme:error:`` prefix
    ("connection", "dns", "incorrectResponse", "unauthorized", "malformed" ...); ``detail`` is a sentence a person
    can act on, naming the address tried and what happened; ``records`` are the steps done before the failure.
    """

    def __init__(self, problem_type: str, detail: str, records: Sequence[ValidationRecord] = ()) -> None:
        super().__init__(detail)
        self.problem_type = problem_type
        self.detail = detail
        self.records: tuple[ValidationRecord, ...] = tuple(records)

    def __repr__(self) -> str:
        return f"ValidationError({self.problem_type!r}, {self.detail!r})"

