"""DNS-01 validation against the real test DNS responder (tests/acme/dnsserver.py)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import time

import dns.rcode
import pytest

from pki_server.acme.validation import ValidationConfig, ValidationError, dns01_txt_value, validate_dns01
from tests.acme.dnsserver import DNSServer

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHORIZATION = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
OTHER_KEY_AUTHORIZATION = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
# RFC 8555 §8.4 computed independently of the code under test: base64url(SHA-256), no "=" padding.
EXPECTED = base64.urlsafe_b64encode(hashlib.sha256(KEY_AUTHORIZATION.encode()).digest()).decode().rstrip("=")


@pytest.fixture
def config(dns_server: DNSServer) -> ValidationConfig:
    return ValidationConfig(resolvers=(dns_server.address,), deny_networks=(), connect_timeout=1.0,
                            total_timeout=3.0, dns_timeout=1.0)


async def fails(identifier: str, config: ValidationConfig,
                key_authorization: str = KEY_AUTHORIZATION) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        await validate_dns01(identifier, TOKEN, key_authorization, config)
    return info.value


def test_txt_value() -> None:
    assert dns01_txt_value(KEY_AUTHORIZATION) == EXPECTED
    assert len(EXPECTED) == 43 and "=" not in EXPECTED


# --- success ----------------------------------------------------------------------------------------------------------

async def test_success(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("_acme-challenge.a.example", "TXT")] = [EXPECTED]
    records = await validate_dns01("a.example", TOKEN, KEY_AUTHORIZATION, config)
    assert [r.to_json() for r in records] == [{"hostname": "a.example", "addressesResolved": []}]
    assert dns_server.queries == [("_acme-challenge.a.example", "TXT")]


async def test_identifier_case_and_final_dot(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("_acme-challenge.a.example", "TXT")] = [EXPECTED]
    [record] = await validate_dns01("A.Example.", TOKEN, KEY_AUTHORIZATION, config)
    assert record.hostname == "a.example"


async def test_wildcard_and_base_name_share_the_name(dns_server: DNSServer, config: ValidationConfig) -> None:
    """RFC 8555 §8.4: *.a.example and a.example both validate at _acme-challenge.a.example, two TXT values."""
    other = dns01_txt_value(OTHER_KEY_AUTHORIZATION)
    dns_server.records[("_acme-challenge.a.example", "TXT")] = [other, EXPECTED]
    assert await validate_dns01("a.example", TOKEN, KEY_AUTHORIZATION, config)
    assert await validate_dns01("a.example", TOKEN, OTHER_KEY_AUTHORIZATION, config)
    # The caller passes the base name; a "*." left on it is removed all the same.
    assert await validate_dns01("*.a.example", TOKEN, OTHER_KEY_AUTHORIZATION, config)
    assert set(dns_server.queries) == {("_acme-challenge.a.example", "TXT")}


async def test_multi_string_record_is_joined(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("_acme-challenge.a.example", "TXT")] = [(EXPECTED[:20], EXPECTED[20:])]
    assert await validate_dns01("a.example", TOKEN, KEY_AUTHORIZATION, config)


async def test_cname_chain_followed(dns_server: DNSServer, config: ValidationConfig) -> None:
    """A delegated _acme-challenge name (a common setup: CNAME to a zone the ACME client may update)."""
    dns_server.records[("_acme-challenge.a.example", "CNAME")] = ["a.acme-delegation.example"]
    dns_server.records[("a.acme-delegation.example", "CNAME")] = ["final.validation.example."]
    dns_server.records[("final.validation.example", "TXT")] = ["unrelated", EXPECTED]
    assert await validate_dns01("a.example", TOKEN, KEY_AUTHORIZATION, config)


async def test_every_attempt_is_a_fresh_lookup(dns_server: DNSServer, config: ValidationConfig) -> None:
    error = await fails("a.example", config)  # nothing published yet: NXDOMAIN, which must not be cached
    assert error.problem_type == "unauthorized"
    dns_server.records[("_acme-challenge.a.example", "TXT")] = ["stale"]
    assert "stale" in (await fails("a.example", config)).detail
    dns_server.records[("_acme-challenge.a.example", "TXT")] = [EXPECTED]
    assert await validate_dns01("a.example", TOKEN, KEY_AUTHORIZATION, config)
    assert dns_server.queries == [("_acme-challenge.a.example", "TXT")] * 3


async def test_many_values_one_matches(dns_server: DNSServer, config: ValidationConfig) -> None:
    """Forty values make the answer too large for UDP: the resolver retries over TCP."""
    dns_server.records[("_acme-challenge.a.example", "TXT")] = [f"old-value-{i:02}-" + "x" * 30 for i in range(40)]
    dns_server.records[("_acme-challenge.a.example", "TXT")].append(EXPECTED)
    assert await validate_dns01("a.example", TOKEN, KEY_AUTHORIZATION, config)


# --- failures ---------------------------------------------------------------------------------------------------------

async def test_no_record(dns_server: DNSServer, config: ValidationConfig) -> None:
    error = await fails("a.example", config)
    assert error.problem_type == "unauthorized"
    assert error.detail == "No TXT record found at _acme-challenge.a.example"
    assert [r.hostname for r in error.records] == ["a.example"]


async def test_name_exists_without_txt(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("_acme-challenge.a.example", "A")] = ["192.0.2.1"]
    error = await fails("a.example", config)
    assert (error.problem_type, error.detail) == ("unauthorized", "No TXT record found at _acme-challenge.a.example")


async def test_wrong_value(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("_acme-challenge.a.example", "TXT")] = [dns01_txt_value(OTHER_KEY_AUTHORIZATION)]
    error = await fails("a.example", config)
    assert error.problem_type == "unauthorized"
    assert error.detail == (f'Incorrect TXT record "{dns01_txt_value(OTHER_KEY_AUTHORIZATION)}" found at '
                            f'_acme-challenge.a.example (expected "{EXPECTED}")')


async def test_the_key_authorization_itself_is_not_the_value(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("_acme-challenge.a.example", "TXT")] = [KEY_AUTHORIZATION, EXPECTED + "="]
    assert (await fails("a.example", config)).problem_type == "unauthorized"


async def test_long_value_is_quoted_cut(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("_acme-challenge.a.example", "TXT")] = ["a" * 150]
    error = await fails("a.example", config)
    assert error.detail == (f'Incorrect TXT record "{"a" * 100}" (cut) found at _acme-challenge.a.example '
                            f'(expected "{EXPECTED}")')


async def test_many_wrong_values_are_counted(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("_acme-challenge.a.example", "TXT")] = ["b", "c", "d", "e", "f"]
    error = await fails("a.example", config)
    quoted, _, rest = error.detail.removeprefix("Incorrect TXT record ").partition(" and 2 more found at ")
    assert rest == f'_acme-challenge.a.example (expected "{EXPECTED}")'
    shown = quoted.split(", ")  # a TXT RRset has no order: which three are quoted varies
    assert len(shown) == 3 and set(shown) <= {'"b"', '"c"', '"d"', '"e"', '"f"'}


async def test_servfail(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.rcodes["_acme-challenge.a.example"] = dns.rcode.SERVFAIL
    error = await fails("a.example", config)
    assert error.problem_type == "dns"
    assert error.detail.startswith(f"DNS problem: looking up TXT for _acme-challenge.a.example with resolver "
                                   f"127.0.0.1:{dns_server.port}: ")
    assert "SERVFAIL" in error.detail
    assert [r.hostname for r in error.records] == ["a.example"]


async def test_timeout(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.silent.add("_acme-challenge.a.example")
    config = dataclasses.replace(config, dns_timeout=0.5)
    started = time.monotonic()
    error = await fails("a.example", config)
    assert time.monotonic() - started < 2
    assert error.problem_type == "dns"
    assert "_acme-challenge.a.example" in error.detail and "timed out" in error.detail


async def test_total_timeout_bounds_the_lookup(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.silent.add("_acme-challenge.a.example")
    config = dataclasses.replace(config, dns_timeout=5.0, total_timeout=0.5)
    started = time.monotonic()
    error = await fails("a.example", config)
    assert time.monotonic() - started < 2
    assert error.problem_type == "dns"
    assert error.detail == (f"DNS problem: looking up TXT for _acme-challenge.a.example with resolver "
                            f"127.0.0.1:{dns_server.port}: no answer within 0.5 s")


async def test_ip_address_is_rejected(dns_server: DNSServer, config: ValidationConfig) -> None:
    error = await fails("192.0.2.1", config)
    assert error.problem_type == "rejectedIdentifier"
    assert dns_server.queries == []
