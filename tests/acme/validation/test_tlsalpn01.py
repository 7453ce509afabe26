"""TLS-ALPN-01 validation against the TLS responder (tests/acme/tlsalpn_responder.py) and the test DNS responder."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator

import pytest
from cryptography import x509

from pki_server.acme.validation import (
    ValidationConfig,
    ValidationError,
    acme_identifier_value,
    parse_networks,
    validate_tlsalpn01,
)
from tests.acme.dnsserver import DNSServer
from tests.acme.tlsalpn_responder import TLSALPNResponder, TLSALPNThread

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHORIZATION = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
DIGEST = hashlib.sha256(KEY_AUTHORIZATION.encode()).digest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def dns_server() -> AsyncIterator[DNSServer]:
    async with DNSServer() as server:
        server.records[("a.example", "A")] = ["127.0.0.1"]
        yield server


@pytest.fixture
async def responder() -> AsyncIterator[TLSALPNResponder]:
    async with TLSALPNResponder() as server:
        yield server


@pytest.fixture
def config(responder: TLSALPNResponder, dns_server: DNSServer) -> ValidationConfig:
    """Loopback allowed (the default denies it), small timeouts, the test DNS server, the responder's port."""
    return ValidationConfig(tlsalpn01_port=responder.port, resolvers=(dns_server.address,), deny_networks=(),
                            connect_timeout=1.0, total_timeout=3.0, dns_timeout=1.0)


async def fails(identifier: str, config: ValidationConfig) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        await validate_tlsalpn01(identifier, TOKEN, KEY_AUTHORIZATION, config)
    return info.value


def where(port: int, identifier: str = "a.example", sni: str = "a.example", address: str = "127.0.0.1") -> str:
    return f"Connecting to {address}:{port} for {identifier} (SNI {sni})"


def test_extension_value() -> None:
    assert acme_identifier_value(KEY_AUTHORIZATION) == bytes([0x04, 0x20]) + DIGEST


# --- success ----------------------------------------------------------------------------------------------------------

async def test_success(responder: TLSALPNResponder, config: ValidationConfig, dns_server: DNSServer) -> None:
    responder.add("a.example", KEY_AUTHORIZATION)
    records = await validate_tlsalpn01("a.example", TOKEN, KEY_AUTHORIZATION, config)
    assert [r.to_json() for r in records] == [{"hostname": "a.example", "port": responder.port,
                                               "addressesResolved": ["127.0.0.1"], "addressUsed": "127.0.0.1"}]
    assert responder.handshakes == [("a.example", "acme-tls/1")]
    assert ("a.example", "A") in dns_server.queries


async def test_identifier_case(responder: TLSALPNResponder, config: ValidationConfig) -> None:
    responder.add("a.example", KEY_AUTHORIZATION)
    assert await validate_tlsalpn01("A.EXAMPLE", TOKEN, KEY_AUTHORIZATION, config)
    assert responder.sni_seen == ["a.example"]


async def test_ipv4_identifier_uses_reverse_dns_sni(responder: TLSALPNResponder, config: ValidationConfig,
                                                    dns_server: DNSServer) -> None:
    """RFC 8738 §6: SNI is the in-addr.arpa name, the certificate names the address as an iPAddress."""
    responder.add("127.0.0.1", KEY_AUTHORIZATION)
    [record] = await validate_tlsalpn01("127.0.0.1", TOKEN, KEY_AUTHORIZATION, config)
    assert record.address_used == "127.0.0.1"
    assert responder.handshakes == [("1.0.0.127.in-addr.arpa", "acme-tls/1")]
    assert dns_server.queries == []


async def test_ipv6_identifier_uses_reverse_dns_sni(config: ValidationConfig) -> None:
    try:
        responder = await TLSALPNResponder(host="::1").start()
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        responder.add("::1", KEY_AUTHORIZATION)
        config = dataclasses.replace(config, tlsalpn01_port=responder.port)
        [record] = await validate_tlsalpn01("::1", TOKEN, KEY_AUTHORIZATION, config)
        assert record.address_used == "::1"
        assert responder.handshakes == [("1." + "0." * 31 + "ip6.arpa", "acme-tls/1")]
    finally:
        await responder.stop()


async def test_next_address_after_refusal(responder: TLSALPNResponder, config: ValidationConfig,
                                          dns_server: DNSServer) -> None:
    responder.add("multi.example", KEY_AUTHORIZATION)
    dns_server.records[("multi.example", "A")] = ["127.0.0.2", "127.0.0.1"]  # nothing listens on 127.0.0.2
    [record] = await validate_tlsalpn01("multi.example", TOKEN, KEY_AUTHORIZATION, config)
    assert record.address_used == "127.0.0.1"


async def test_cname_followed(responder: TLSALPNResponder, config: ValidationConfig, dns_server: DNSServer) -> None:
    dns_server.records[("www.b.example", "CNAME")] = ["a.example"]
    responder.add("www.b.example", KEY_AUTHORIZATION)
    assert await validate_tlsalpn01("www.b.example", TOKEN, KEY_AUTHORIZATION, config)
    assert responder.sni_seen == ["www.b.example"]  # the SNI is the identifier, not the CNAME's target


def test_thread_responder_for_sync_tests(config: ValidationConfig) -> None:
    """The thread wrapper later end-to-end tests use with a pki-server subprocess."""
    with TLSALPNThread() as thread:
        thread.add("127.0.0.1", KEY_AUTHORIZATION)
        config = dataclasses.replace(config, tlsalpn01_port=thread.port)
        assert asyncio.run(validate_tlsalpn01("127.0.0.1", TOKEN, KEY_AUTHORIZATION, config))


# --- wrong ALPN -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpn", [[], ["http/1.1"]])
async def test_server_does_not_negotiate_acme_tls(responder: TLSALPNResponder, config: ValidationConfig,
                                                  alpn: list[str]) -> None:
    responder.add("a.example", KEY_AUTHORIZATION, alpn=alpn)
    error = await fails("a.example", config)
    assert error.problem_type == "unauthorized"
    assert error.detail == (f'{where(responder.port)}: the server did not negotiate the ALPN protocol "acme-tls/1" '
                            "(it chose no protocol)")
    assert error.records[0].address_used == "127.0.0.1"


# --- wrong certificates -----------------------------------------------------------------------------------------------

async def test_no_acme_identifier_extension(responder: TLSALPNResponder, config: ValidationConfig) -> None:
    responder.add("a.example", KEY_AUTHORIZATION, extension=False)
    error = await fails("a.example", config)
    assert error.problem_type == "incorrectResponse"
    assert error.detail == (f"{where(responder.port)}: incorrect validation certificate: it has no acmeIdentifier "
                            "extension (1.3.6.1.5.5.7.1.31)")


async def test_extension_not_critical(responder: TLSALPNResponder, config: ValidationConfig) -> None:
    responder.add("a.example", KEY_AUTHORIZATION, critical=False)
    error = await fails("a.example", config)
    assert error.problem_type == "incorrectResponse"
    assert error.detail.endswith("incorrect validation certificate: its acmeIdentifier extension is not marked "
                                 "critical")


async def test_wrong_digest(responder: TLSALPNResponder, config: ValidationConfig) -> None:
    wrong = hashlib.sha256(b"another key authorization").digest()
    responder.add("a.example", KEY_AUTHORIZATION, digest=wrong)
    error = await fails("a.example", config)
    assert error.problem_type == "incorrectResponse"
    assert error.detail.endswith(f"its acmeIdentifier extension holds the digest {wrong.hex()}, but SHA-256 of the "
                                 f"key authorization is {DIGEST.hex()}")


@pytest.mark.parametrize("value", [
    DIGEST,  # the digest without the OCTET STRING around it
    b"\x0c\x20" + DIGEST,  # a UTF8String, not an OCTET STRING
    b"\x04\x40" + hashlib.sha512(KEY_AUTHORIZATION.encode()).digest(),  # another hash
    b"\x04\x21" + DIGEST + b"\x00",  # trailing byte
])
async def test_extension_value_not_a_sha256_octet_string(responder: TLSALPNResponder, config: ValidationConfig,
                                                         value: bytes) -> None:
    responder.add("a.example", KEY_AUTHORIZATION, extension_value=value)
    error = await fails("a.example", config)
    assert error.problem_type == "incorrectResponse"
    assert "its acmeIdentifier extension is not a DER OCTET STRING of a SHA-256 digest (32 bytes)" in error.detail


async def test_two_sans(responder: TLSALPNResponder, config: ValidationConfig) -> None:
    responder.add("a.example", KEY_AUTHORIZATION,
                  sans=[x509.DNSName("a.example"), x509.DNSName("other.example")])
    error = await fails("a.example", config)
    assert error.problem_type == "incorrectResponse"
    assert error.detail.endswith("incorrect validation certificate: its subjectAltName must hold exactly one entry, "
                                 "DNS:a.example, but holds 2: DNS:a.example, DNS:other.example")


async def test_san_names_another_host(responder: TLSALPNResponder, config: ValidationConfig) -> None:
    responder.add("a.example", KEY_AUTHORIZATION, sans=[x509.DNSName("other.example")])
    error = await fails("a.example", config)
    assert error.detail.endswith("but holds 1: DNS:other.example")


async def test_no_san(responder: TLSALPNResponder, config: ValidationConfig) -> None:
    responder.add("a.example", KEY_AUTHORIZATION, sans=[])
    error = await fails("a.example", config)
    assert error.problem_type == "incorrectResponse"
    assert error.detail.endswith("incorrect validation certificate: it has no subjectAltName extension")


async def test_ip_identifier_needs_an_ip_san(responder: TLSALPNResponder, config: ValidationConfig) -> None:
    responder.add("127.0.0.1", KEY_AUTHORIZATION, sans=[x509.DNSName("127.0.0.1")])
    error = await fails("127.0.0.1", config)
    assert error.problem_type == "incorrectResponse"
    assert error.detail == (f"{where(responder.port, '127.0.0.1', '1.0.0.127.in-addr.arpa')}: incorrect validation "
                            "certificate: its subjectAltName must hold exactly one entry, IP:127.0.0.1, but holds 1: "
                            "DNS:127.0.0.1")


async def test_dns_identifier_with_an_ip_san(responder: TLSALPNResponder, config: ValidationConfig) -> None:
    responder.add("a.example", KEY_AUTHORIZATION, sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    error = await fails("a.example", config)
    assert error.detail.endswith("exactly one entry, DNS:a.example, but holds 1: IP:127.0.0.1")


async def test_unknown_sni_gets_default_certificate(responder: TLSALPNResponder, config: ValidationConfig) -> None:
    responder.add("b.example", KEY_AUTHORIZATION)  # the certificate for another name is not presented
    error = await fails("a.example", config)
    assert error.problem_type == "incorrectResponse"
    assert "DNS:unknown.invalid" in error.detail
    assert responder.sni_seen == ["a.example"]


# --- connections and DNS ----------------------------------------------------------------------------------------------

async def test_connection_refused(config: ValidationConfig) -> None:
    port = free_port()
    config = dataclasses.replace(config, tlsalpn01_port=port)
    error = await fails("a.example", config)
    assert error.problem_type == "connection"
    assert error.detail == f"{where(port)}: connection refused"
    assert error.records[0].address_used == "127.0.0.1"


async def test_all_addresses_refused(config: ValidationConfig, dns_server: DNSServer) -> None:
    port = free_port()
    config = dataclasses.replace(config, tlsalpn01_port=port)
    dns_server.records[("multi.example", "A")] = ["127.0.0.2", "127.0.0.3"]
    error = await fails("multi.example", config)
    assert error.problem_type == "connection"
    prefix = f"No address of multi.example could be reached on port {port}: "
    assert error.detail.startswith(prefix)
    assert sorted(error.detail.removeprefix(prefix).split("; ")) == [
        f"{where(port, 'multi.example', 'multi.example', a)}: connection refused" for a in ("127.0.0.2", "127.0.0.3")]


async def test_plain_tcp_server_is_a_failed_handshake(config: ValidationConfig) -> None:
    async def not_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_tls, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        error = await fails("a.example", dataclasses.replace(config, tlsalpn01_port=port))
        assert error.problem_type == "connection"
        assert error.detail.startswith(f"{where(port)}: TLS handshake failed: ")
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_handshake_timeout(config: ValidationConfig) -> None:
    """A server that accepts and never answers the ClientHello: bounded by connect_timeout."""
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.wait_for(done.wait(), 10)
        writer.transport.abort()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        config = dataclasses.replace(config, tlsalpn01_port=port, connect_timeout=0.5)
        started = time.monotonic()
        error = await fails("a.example", config)
        assert time.monotonic() - started < 2
        assert error.problem_type == "connection"
        assert error.detail == f"{where(port)}: timed out connecting and completing the TLS handshake after 0.5 s"
    finally:
        done.set()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_total_timeout(config: ValidationConfig, dns_server: DNSServer) -> None:
    dns_server.silent.add("slow.example")
    config = dataclasses.replace(config, dns_timeout=5.0, total_timeout=0.5)
    started = time.monotonic()
    error = await fails("slow.example", config)
    assert time.monotonic() - started < 2
    assert error.problem_type == "connection"
    assert error.detail == ("Validating slow.example: timed out looking up the address (a validation may take 0.5 s "
                            "in all)")


async def test_nxdomain(responder: TLSALPNResponder, config: ValidationConfig, dns_server: DNSServer) -> None:
    error = await fails("missing.example", config)
    assert error.problem_type == "dns"
    assert error.detail == (f"DNS problem: NXDOMAIN looking up A and AAAA for missing.example with resolver "
                            f"127.0.0.1:{dns_server.port}: the name does not exist")
    assert [r.to_json() for r in error.records] == [
        {"hostname": "missing.example", "port": responder.port, "addressesResolved": []}]
    assert responder.sni_seen == []


async def test_default_policy_denies_loopback(responder: TLSALPNResponder, dns_server: DNSServer) -> None:
    responder.add("a.example", KEY_AUTHORIZATION)
    config = ValidationConfig(tlsalpn01_port=responder.port, resolvers=(dns_server.address,))
    error = await fails("a.example", config)
    assert error.problem_type == "connection"
    assert error.detail == (f"Connecting to port {responder.port} for a.example: 127.0.0.1 is in the denied network "
                            "127.0.0.0/8, which validation never contacts (PKI_ACME_VALIDATION_DENY_NETWORKS). No "
                            "address was contacted")
    assert responder.sni_seen == []


async def test_denied_address_is_skipped(responder: TLSALPNResponder, config: ValidationConfig,
                                         dns_server: DNSServer) -> None:
    responder.add("mixed.example", KEY_AUTHORIZATION)
    dns_server.records[("mixed.example", "A")] = ["169.254.169.254", "127.0.0.1"]
    config = dataclasses.replace(config, deny_networks=parse_networks("169.254.0.0/16"))
    [record] = await validate_tlsalpn01("mixed.example", TOKEN, KEY_AUTHORIZATION, config)
    assert sorted(record.addresses_resolved) == ["127.0.0.1", "169.254.169.254"]
    assert record.address_used == "127.0.0.1"


@pytest.mark.parametrize(("identifier", "problem"), [
    ("*.a.example", "rejectedIdentifier"),
    ("a..example", "malformed"),
    ("a.example/path", "malformed"),
])
async def test_bad_identifiers(responder: TLSALPNResponder, config: ValidationConfig, dns_server: DNSServer,
                               identifier: str, problem: str) -> None:
    error = await fails(identifier, config)
    assert error.problem_type == problem
    assert dns_server.queries == [] and responder.sni_seen == []
