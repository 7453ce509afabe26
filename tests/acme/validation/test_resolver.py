"""DNS lookups and the address policy, against the real DNS responder in tests/acme/dnsserver.py."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from pki_server.acme.validation import (
    DEFAULT_DENY_NETWORKS,
    ValidationConfig,
    ValidationError,
    ValidationRecord,
    check_address,
    lookup_txt,
    make_resolver,
    parse_networks,
    parse_resolvers,
    resolve_addresses,
)
from tests.acme.dnsserver import DNSServer


@pytest.fixture
def config(dns_server: DNSServer) -> ValidationConfig:
    return ValidationConfig(resolvers=(dns_server.address,), dns_timeout=1.0, deny_networks=())


def resolver_text(dns_server: DNSServer) -> str:
    return f"127.0.0.1:{dns_server.port}"


# --- resolve_addresses ------------------------------------------------------------------------------------------------

async def test_a_and_aaaa_ipv6_first(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("a.example", "A")] = ["192.0.2.1", "192.0.2.2"]
    dns_server.records[("a.example", "AAAA")] = ["2001:db8::1"]
    addresses = await resolve_addresses("a.example", config)
    assert addresses[0] == ipaddress.ip_address("2001:db8::1")  # IPv6 first; within a family, DNS order (shuffled)
    assert sorted(addresses[1:]) == [ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")]
    assert sorted(dns_server.queries) == [("a.example", "A"), ("a.example", "AAAA")]


async def test_name_is_case_insensitive_and_may_end_with_dot(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("A.Example", "A")] = ["192.0.2.1"]
    assert await resolve_addresses("a.EXAMPLE.", config) == [ipaddress.ip_address("192.0.2.1")]


async def test_only_one_family(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("v4.example", "A")] = ["192.0.2.7"]
    dns_server.records[("v6.example", "AAAA")] = ["2001:db8::7"]
    assert await resolve_addresses("v4.example", config) == [ipaddress.ip_address("192.0.2.7")]
    assert await resolve_addresses("v6.example", config) == [ipaddress.ip_address("2001:db8::7")]


async def test_cname_followed(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("www.a.example", "CNAME")] = ["web.a.example"]
    dns_server.records[("web.a.example", "CNAME")] = ["host.b.example."]
    dns_server.records[("host.b.example", "A")] = ["192.0.2.9"]
    assert await resolve_addresses("www.a.example", config) == [ipaddress.ip_address("192.0.2.9")]


async def test_ip_literal_returns_itself_without_a_query(dns_server: DNSServer, config: ValidationConfig) -> None:
    assert await resolve_addresses("192.0.2.5", config) == [ipaddress.ip_address("192.0.2.5")]
    assert await resolve_addresses("2001:db8::5", config) == [ipaddress.ip_address("2001:db8::5")]
    assert await resolve_addresses("[2001:db8::6]", config) == [ipaddress.ip_address("2001:db8::6")]
    assert dns_server.queries == []


async def test_every_lookup_is_fresh(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("a.example", "A")] = ["192.0.2.1"]
    assert await resolve_addresses("a.example", config) == [ipaddress.ip_address("192.0.2.1")]
    dns_server.records[("a.example", "A")] = ["192.0.2.2"]
    assert await resolve_addresses("a.example", config) == [ipaddress.ip_address("192.0.2.2")]
    assert dns_server.queries.count(("a.example", "A")) == 2


async def test_nxdomain(dns_server: DNSServer, config: ValidationConfig) -> None:
    with pytest.raises(ValidationError) as info:
        await resolve_addresses("missing.example", config)
    assert info.value.problem_type == "dns"
    assert "NXDOMAIN" in info.value.detail
    assert "missing.example" in info.value.detail
    assert resolver_text(dns_server) in info.value.detail


async def test_no_address_records(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("text-only.example", "TXT")] = ["hello"]
    with pytest.raises(ValidationError) as info:
        await resolve_addresses("text-only.example", config)
    assert info.value.problem_type == "dns"
    assert info.value.detail == (f"DNS problem: no A or AAAA records found for text-only.example with resolver "
                                 f"{resolver_text(dns_server)}")


async def test_servfail(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.rcodes["broken.example"] = dns.rcode.SERVFAIL
    with pytest.raises(ValidationError) as info:
        await resolve_addresses("broken.example", config)
    assert info.value.problem_type == "dns"
    assert "SERVFAIL" in info.value.detail
    assert "broken.example" in info.value.detail
    assert resolver_text(dns_server) in info.value.detail


async def test_one_family_failing_does_not_matter(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("half.example", "A")] = ["192.0.2.3"]
    dns_server.rcodes[("half.example", "AAAA")] = dns.rcode.SERVFAIL
    assert await resolve_addresses("half.example", config) == [ipaddress.ip_address("192.0.2.3")]


async def test_both_families_failing(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.rcodes[("half.example", "A")] = dns.rcode.REFUSED
    dns_server.rcodes[("half.example", "AAAA")] = dns.rcode.SERVFAIL
    with pytest.raises(ValidationError) as info:
        await resolve_addresses("half.example", config)
    assert info.value.detail == (f"DNS problem: looking up A for half.example with resolver "
                                 f"{resolver_text(dns_server)}: REFUSED")


async def test_timeout(dns_server: DNSServer, dns_config_fast: ValidationConfig) -> None:
    dns_server.silent.add("slow.example")
    with pytest.raises(ValidationError) as info:
        await resolve_addresses("slow.example", dns_config_fast)
    assert info.value.problem_type == "dns"
    assert "timed out" in info.value.detail
    assert "slow.example" in info.value.detail
    assert resolver_text(dns_server) in info.value.detail


@pytest.fixture
def dns_config_fast(dns_server: DNSServer) -> ValidationConfig:
    return ValidationConfig(resolvers=(dns_server.address,), dns_timeout=0.3, deny_networks=())


async def test_the_next_resolver_answers_when_one_fails_or_is_silent(dns_server: DNSServer) -> None:
    """As dnspython's resolver: resolvers in order; one answering SERVFAIL is not asked again, a silent one costs
    its try (half the lookup's time) and the next is asked within the rest."""
    async with DNSServer() as second:
        second.records[("twice.example", "A")] = ["192.0.2.9"]
        dns_server.rcodes["twice.example"] = dns.rcode.SERVFAIL
        config = ValidationConfig(resolvers=(dns_server.address, second.address), dns_timeout=1.0, deny_networks=())
        assert await resolve_addresses("twice.example", config) == [ipaddress.ip_address("192.0.2.9")]
        dns_server.silent.add("twice.example")
        assert await resolve_addresses("twice.example", config) == [ipaddress.ip_address("192.0.2.9")]
        assert ("twice.example", "A") in [(name.rstrip(".").lower(), kind) for name, kind in dns_server.queries]


async def test_every_resolver_failing_names_each_answer(dns_server: DNSServer) -> None:
    async with DNSServer() as second:
        dns_server.rcodes["bad.example"] = dns.rcode.SERVFAIL
        second.rcodes["bad.example"] = dns.rcode.REFUSED
        config = ValidationConfig(resolvers=(dns_server.address, second.address), dns_timeout=1.0, deny_networks=())
        with pytest.raises(ValidationError) as info:
            await lookup_txt("bad.example", config)
    assert info.value.detail.endswith(": REFUSED, SERVFAIL"), info.value.detail


def test_the_query_is_what_dnspython_would_send() -> None:
    from pki_server.acme.validation import resolver

    for name, rdtype in (("a.example.", "A"), ("Mixed.Case.example.", "AAAA"), ("example.", "CAA"), (".", "TXT")):
        qname, qtype = dns.name.from_text(name), dns.rdatatype.from_text(rdtype)
        qid, wire = resolver._query_wire(qname, qtype)
        assert wire == dns.message.make_query(qname, qtype, id=qid).to_wire()
    assert len({resolver._query_wire(qname, qtype)[0] for _ in range(50)}) > 40  # a random ID each time


async def test_only_the_answer_to_this_query_is_taken() -> None:
    """Datagrams with another ID, another question, no QR flag or garbage are ignored; the real answer counts."""
    import asyncio

    async def handle(sock: socket.socket) -> None:
        for _ in range(2):  # the AAAA and the A query
            await handle_one(sock)

    async def handle_one(sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        data, peer = await loop.sock_recvfrom(sock, 512)
        query = dns.message.from_wire(data)
        if query.question[0].rdtype != dns.rdatatype.A:  # no AAAA records
            await loop.sock_sendto(sock, dns.message.make_response(query).to_wire(), peer)
            return

        def answer(qname: str, *, qid: int | None = None, address: str = "192.0.2.66", qr: bool = True) -> bytes:
            message = dns.message.make_response(dns.message.make_query(qname, "A", id=query.id))
            if qid is not None:
                message.id = qid
            if not qr:
                message.flags &= ~dns.flags.QR
            message.answer.append(dns.rrset.from_text(qname, 60, "IN", "A", address))
            return message.to_wire()

        for datagram in (b"\x00", answer("spoof.example.", qid=(query.id + 1) % 65536, address="192.0.2.1"),
                         answer("other.example.", address="192.0.2.2"),
                         answer("spoof.example.", qr=False, address="192.0.2.3"),
                         data[:2] + b"garbage", answer("spoof.example.")):
            await loop.sock_sendto(sock, datagram, peer)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        server = asyncio.ensure_future(handle(sock))
        config = ValidationConfig(resolvers=(sock.getsockname(),), dns_timeout=2.0, deny_networks=())
        try:
            assert await resolve_addresses("spoof.example", config) == [ipaddress.ip_address("192.0.2.66")]
        finally:
            server.cancel()


async def test_unreachable_resolver() -> None:
    closed = DNSServer()
    await closed.start()
    await closed.stop()  # nothing listens there any more
    config = ValidationConfig(resolvers=(closed.address,), dns_timeout=0.3)
    with pytest.raises(ValidationError) as info:
        await resolve_addresses("a.example", config)
    assert info.value.problem_type == "dns"
    assert f"127.0.0.1:{closed.port}" in info.value.detail


async def test_malformed_name(config: ValidationConfig) -> None:
    with pytest.raises(ValidationError) as info:
        await resolve_addresses("a..example", config)
    assert info.value.problem_type == "malformed"
    assert "a..example" in info.value.detail


# --- lookup_txt -------------------------------------------------------------------------------------------------------

async def test_txt_values(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("_acme-challenge.a.example", "TXT")] = ["first", ("sec", "ond"), "thi rd"]
    assert sorted(await lookup_txt("_acme-challenge.a.example", config)) == ["first", "second", "thi rd"]


async def test_txt_through_cname(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("_acme-challenge.a.example", "CNAME")] = ["a.validation.example"]
    dns_server.records[("a.validation.example", "TXT")] = ["delegated"]
    assert await lookup_txt("_acme-challenge.a.example", config) == ["delegated"]


async def test_txt_nxdomain_and_nodata_are_empty(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("a.example", "A")] = ["192.0.2.1"]
    assert await lookup_txt("missing.example", config) == []
    assert await lookup_txt("a.example", config) == []
    assert ("missing.example", "TXT") in dns_server.queries


async def test_txt_too_big_for_udp_comes_over_tcp(dns_server: DNSServer, config: ValidationConfig) -> None:
    values = [f"{i:02d}" + "x" * 198 for i in range(20)]  # ~4 kB: truncated over UDP whatever the EDNS size
    dns_server.records[("big.example", "TXT")] = list(values)
    assert sorted(await lookup_txt("big.example", config)) == values


async def test_txt_servfail(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.rcodes["_acme-challenge.broken.example"] = dns.rcode.SERVFAIL
    with pytest.raises(ValidationError) as info:
        await lookup_txt("_acme-challenge.broken.example", config)
    assert info.value.problem_type == "dns"
    assert "SERVFAIL" in info.value.detail
    assert "TXT for _acme-challenge.broken.example" in info.value.detail


# --- make_resolver ----------------------------------------------------------------------------------------------------

def test_make_resolver_uses_configured_servers_without_cache() -> None:
    resolver = make_resolver(ValidationConfig(resolvers=(("10.0.0.53", 5353), ("fd00::53", 53)), dns_timeout=2.0))
    assert resolver.cache is None
    assert [(ns.address, ns.port) for ns in resolver.nameservers
            if isinstance(ns, dns.nameserver.Do53Nameserver)] == [("10.0.0.53", 5353), ("fd00::53", 53)]
    assert resolver.lifetime == 2.0
    assert resolver.search == []


# --- check_address ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "::1", "169.254.169.254", "169.254.1.1", "fe80::1", "0.0.0.0", "::", "224.0.0.1",
    "ff02::1", "fd00:ec2::254", "100.100.100.200", "::ffff:169.254.169.254", "::ffff:127.0.0.1",
])
def test_default_policy_denies(address: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_address(address, ValidationConfig())
    assert info.value.problem_type == "connection"
    assert info.value.detail.startswith(f"{ipaddress.ip_address(address)} is in the denied network ")


def test_default_policy_detail() -> None:
    with pytest.raises(ValidationError) as info:
        check_address(ipaddress.ip_address("169.254.169.254"), ValidationConfig())
    assert info.value.detail == ("169.254.169.254 is in the denied network 169.254.0.0/16, which validation never "
                                 "contacts (PKI_ACME_VALIDATION_DENY_NETWORKS)")


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.0.10", "172.16.0.1", "192.0.2.1", "fd12::1", "2001:db8::1"])
def test_default_policy_allows_private_and_public(address: str) -> None:
    check_address(address, ValidationConfig())  # internal PKI must reach private networks


def test_explicit_deny_replaces_default() -> None:
    config = ValidationConfig(deny_networks=parse_networks("10.0.0.0/8"))
    check_address("127.0.0.1", config)
    with pytest.raises(ValidationError, match=r"^10\.9\.9\.9 is in the denied network 10\.0\.0\.0/8"):
        check_address("10.9.9.9", config)


def test_allow_networks() -> None:
    config = ValidationConfig(allow_networks=parse_networks("10.0.0.0/8, fd00::/8"))
    check_address("10.20.30.40", config)
    check_address("fd00::1", config)
    with pytest.raises(ValidationError) as info:
        check_address("192.0.2.1", config)
    assert info.value.problem_type == "connection"
    assert info.value.detail == ("192.0.2.1 is outside the allowed networks (10.0.0.0/8, fd00::/8), the only ones "
                                 "validation contacts")
    # The deny list still applies inside the allowed networks.
    with pytest.raises(ValidationError, match=r"denied network 127\.0\.0\.0/8"):
        check_address("127.0.0.1", ValidationConfig(allow_networks=parse_networks("127.0.0.0/8")))


# --- configuration and records ----------------------------------------------------------------------------------------

def test_default_deny_networks_cover_metadata() -> None:
    assert ipaddress.ip_network("169.254.0.0/16") in DEFAULT_DENY_NETWORKS
    assert ipaddress.ip_network("fd00:ec2::254/128") in DEFAULT_DENY_NETWORKS
    assert ipaddress.ip_network("100.100.100.200/32") in DEFAULT_DENY_NETWORKS


def test_config_parses_strings() -> None:
    config = ValidationConfig(resolvers=("10.0.0.53", "[fd00::53]:5353", ("10.0.0.54", "54")),  # type: ignore[arg-type]
                              deny_networks=["10.0.0.0/8"])  # type: ignore[arg-type]
    assert config.resolvers == (("10.0.0.53", 53), ("fd00::53", 5353), ("10.0.0.54", 54))
    assert config.deny_networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert parse_resolvers(" 10.0.0.53:53, ::1 ,") == (("10.0.0.53", 53), ("::1", 53))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"deny_networks": ("10.0.0.1/8",)}, "'10.0.0.1/8' is not a network in CIDR notation"),
    ({"resolvers": ("dns.example",)}, "'dns.example' is not an IP address"),
    ({"resolvers": ("10.0.0.53:99999",)}, "the port 99999 is not between 1 and 65535"),
    ({"http01_port": 0}, "http01_port=0 is not a port"),
    ({"total_timeout": 0}, "total_timeout=0 must be a positive number"),
])
def test_config_refuses_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ValidationConfig(**kwargs)  # type: ignore[arg-type]


def test_record_json() -> None:
    record = ValidationRecord("http://a.example/.well-known/acme-challenge/T", "a.example", 80,
                              ("::1", "127.0.0.1"), "127.0.0.1")
    assert record.to_json() == {
        "url": "http://a.example/.well-known/acme-challenge/T", "hostname": "a.example", "port": 80,
        "addressesResolved": ["::1", "127.0.0.1"], "addressUsed": "127.0.0.1",
    }
    assert ValidationRecord(None, "a.example", None).to_json() == {"hostname": "a.example", "addressesResolved": []}


def test_the_system_resolvers_are_read_again_only_when_resolv_conf_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pki_server.acme.validation import resolver

    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.0.2.53\n")
    monkeypatch.setattr(resolver, "RESOLV_CONF", str(conf))
    monkeypatch.setattr(resolver, "_system", None)
    parsed: list[int] = []
    real = resolver.make_resolver

    def counting(config: ValidationConfig) -> Any:
        parsed.append(1)
        return real(config)

    monkeypatch.setattr(resolver, "make_resolver", counting)
    system = ValidationConfig(dns_timeout=1.0)
    assert [resolver._nameservers(system) for _ in range(3)] == [[("192.0.2.53", 53)]] * 3
    assert len(parsed) == 1
    conf.write_text("nameserver 198.51.100.53\nnameserver 2001:db8::53\n")  # another size: seen at once
    assert resolver._nameservers(system) == [("198.51.100.53", 53), ("2001:db8::53", 53)]
    assert len(parsed) == 2
    conf.unlink()  # no file: the error every time, nothing kept
    for _ in range(2):
        with pytest.raises(ValidationError, match="no DNS resolver is configured"):
            resolver._nameservers(system)
    assert resolver._nameservers(ValidationConfig(resolvers=(("127.0.0.1", 5353),))) == [("127.0.0.1", 5353)]
