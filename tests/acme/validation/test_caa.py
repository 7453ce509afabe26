"""CAA checking (RFC 8659, RFC 8657) against the real test DNS responder (tests/acme/dnsserver.py)."""

from __future__ import annotations

import dataclasses
import time

import dns.rcode
import pytest

from pki_server.acme.validation import ValidationConfig, ValidationError, check_caa
from tests.acme.dnsserver import DNSServer

IDENTITIES = ("pki.example",)
ACCOUNT = "https://ca.test/acme/intermediate/acct/Zb3kT1"


@pytest.fixture
def config(dns_server: DNSServer) -> ValidationConfig:
    return ValidationConfig(resolvers=(dns_server.address,), deny_networks=(), total_timeout=3.0, dns_timeout=1.0)


async def allowed(identifier: str, config: ValidationConfig, *, wildcard: bool = False, method: str | None = "http-01",
                  account_uri: str | None = ACCOUNT, identities: tuple[str, ...] = IDENTITIES) -> bool:
    await check_caa(identifier, wildcard=wildcard, identities=identities, account_uri=account_uri, method=method,
                    config=config)
    return True


async def refused(identifier: str, config: ValidationConfig, *, wildcard: bool = False,
                  method: str | None = "http-01", account_uri: str | None = ACCOUNT,
                  identities: tuple[str, ...] = IDENTITIES) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        await check_caa(identifier, wildcard=wildcard, identities=identities, account_uri=account_uri,
                        method=method, config=config)
    return info.value


def caa(dns_server: DNSServer, name: str, *records: str) -> None:
    dns_server.records[(name, "CAA")] = list(records)


# --- finding the relevant RRset ---------------------------------------------------------------------------------------

async def test_no_caa_anywhere_allows_and_climbs_to_the_tld(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("www.shop.example", "A")] = ["192.0.2.1"]
    assert await allowed("www.shop.example", config)
    assert sorted(dns_server.queries) == [("example", "CAA"), ("shop.example", "CAA"), ("www.shop.example", "CAA")]


async def test_record_at_the_name(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "pki.example"')
    caa(dns_server, "example", '0 issue "other-ca.example"')  # above the closest records: not read
    assert await allowed("a.example", config)
    assert dns_server.queries[0] == ("a.example", "CAA")  # the whole climb is asked at once


async def test_the_climb_is_one_round_trip(dns_server: DNSServer, config: ValidationConfig) -> None:
    """Every name is asked at once: slow answers overlap instead of adding up."""
    dns_server.delays = {name: 0.3 for name in ("www.dept.corp.example", "dept.corp.example", "corp.example",
                                                "example")}
    started = time.monotonic()
    assert await allowed("www.dept.corp.example", config)
    assert time.monotonic() - started < 0.9  # one after the other: 1.2 s
    assert len(dns_server.queries) == 4


async def test_what_fails_above_the_closest_records_does_not_count(dns_server: DNSServer,
                                                                   config: ValidationConfig) -> None:
    """As in a climb one lookup at a time, which never asks above the closest records: a failure or
    silence there neither refuses nor delays."""
    caa(dns_server, "www.corp.example", '0 issue "pki.example"')
    dns_server.rcodes[("corp.example", "CAA")] = dns.rcode.SERVFAIL
    dns_server.silent.add(("example", "CAA"))
    started = time.monotonic()
    assert await allowed("www.corp.example", dataclasses.replace(config, dns_timeout=5.0, total_timeout=5.0))
    assert time.monotonic() - started < 1


async def test_record_at_a_parent_naming_another_ca(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "corp.example", '0 issue "other-ca.example"', '0 iodef "mailto:security@corp.example"')
    error = await refused("www.dept.corp.example", config)
    assert error.problem_type == "caa"
    assert error.detail == ('CAA records at corp.example (the closest CAA records to www.dept.corp.example) do not '
                            'authorize this CA (CAA identities: pki.example) to issue for www.dept.corp.example: the '
                            'issue records are 0 issue "other-ca.example"')
    assert ("www.dept.corp.example", "CAA") in dns_server.queries


async def test_record_at_a_parent_naming_this_ca(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "corp.example", '0 issue "other-ca.example"', '0 issue "pki.example"')
    assert await allowed("www.corp.example", config)


async def test_closest_rrset_wins(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "corp.example", '0 issue "other-ca.example"')
    caa(dns_server, "www.corp.example", '0 issue "pki.example"')
    assert await allowed("www.corp.example", config)
    caa(dns_server, "corp.example", '0 issue "pki.example"')
    caa(dns_server, "www.corp.example", '0 issue "other-ca.example"')
    error = await refused("www.corp.example", config)
    assert error.detail.startswith("CAA records at www.corp.example do not authorize this CA")


async def test_identity_is_case_insensitive(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "PKI.Example"')
    assert await allowed("a.example", config)
    assert await allowed("a.example", config, identities=("other.example", "pki.EXAMPLE."))


async def test_no_identities_never_match(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "pki.example"')
    error = await refused("a.example", config, identities=())
    assert "(CAA identities: none)" in error.detail


async def test_cname_followed(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.records[("www.a.example", "CNAME")] = ["cdn.hosting.example"]
    caa(dns_server, "cdn.hosting.example", '0 issue "other-ca.example"')
    error = await refused("www.a.example", config)
    assert error.detail.startswith("CAA records at www.a.example do not authorize")
    assert '0 issue "other-ca.example"' in error.detail


async def test_cname_target_parent_is_not_climbed(dns_server: DNSServer, config: ValidationConfig) -> None:
    """RFC 8659 §3: the climb goes from the name's parent, not from the CNAME target's parent."""
    dns_server.records[("www.a.example", "CNAME")] = ["cdn.hosting.example"]
    dns_server.records[("cdn.hosting.example", "A")] = ["192.0.2.1"]
    caa(dns_server, "hosting.example", '0 issue "other-ca.example"')
    assert await allowed("www.a.example", config)
    assert ("hosting.example", "CAA") not in dns_server.queries
    assert ("a.example", "CAA") in dns_server.queries


async def test_ip_address_has_no_caa(dns_server: DNSServer, config: ValidationConfig) -> None:
    assert await allowed("192.0.2.1", config)
    assert await allowed("2001:db8::1", config)
    assert dns_server.queries == []


# --- issue and issuewild ----------------------------------------------------------------------------------------------

async def test_issuewild_governs_wildcards(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "pki.example"', '0 issuewild "other-ca.example"')
    assert await allowed("a.example", config)
    error = await refused("a.example", config, wildcard=True, method="dns-01")
    assert error.detail == ('CAA records at a.example do not authorize this CA (CAA identities: pki.example) to issue '
                            'for *.a.example: the issuewild records are 0 issuewild "other-ca.example"')
    # A "*." on the identifier means a wildcard too.
    assert (await refused("*.a.example", config, method="dns-01")).problem_type == "caa"


async def test_issuewild_allows_wildcards_only(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "other-ca.example"', '0 issuewild "pki.example"')
    assert await allowed("a.example", config, wildcard=True)
    assert (await refused("a.example", config)).problem_type == "caa"


async def test_without_issuewild_wildcards_follow_issue(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "other-ca.example"')
    error = await refused("a.example", config, wildcard=True)
    assert "the issue records are" in error.detail
    caa(dns_server, "b.example", '0 issue "pki.example"')
    assert await allowed("b.example", config, wildcard=True)


async def test_only_issuewild_leaves_other_names_unrestricted(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issuewild "other-ca.example"')
    assert await allowed("a.example", config)


async def test_empty_issue_forbids(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue ";"')
    error = await refused("a.example", config)
    assert error.problem_type == "caa"
    assert error.detail.endswith('the issue records are 0 issue ";"')
    caa(dns_server, "b.example", '0 issue ";"', '0 issue "pki.example"')  # another record may still allow
    assert await allowed("b.example", config)


async def test_issuewild_empty_forbids_wildcards(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "pki.example"', '0 issuewild ";"')
    assert (await refused("a.example", config, wildcard=True)).problem_type == "caa"
    assert await allowed("a.example", config)


async def test_only_iodef_allows(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 iodef "mailto:security@a.example"')
    caa(dns_server, "example", '0 issue "other-ca.example"')  # not relevant: a.example has an RRset
    assert await allowed("a.example", config)


async def test_malformed_issuer_authorizes_nobody(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "pki.example; =oops"')
    error = await refused("a.example", config)
    assert error.detail.endswith('0 issue "pki.example; =oops" cannot be parsed, so it authorizes nobody '
                                 "(RFC 8659 §4.2)")
    caa(dns_server, "b.example", '0 issue "pki..example"')
    assert (await refused("b.example", config)).problem_type == "caa"


# --- critical flag ----------------------------------------------------------------------------------------------------

async def test_unknown_critical_tag_refuses(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "pki.example"', '128 tbs "unknown"')
    error = await refused("a.example", config)
    assert error.problem_type == "caa"
    assert error.detail.startswith('CAA record 128 tbs "unknown" at a.example has the critical flag and a tag this CA '
                                   "does not know, which forbids issuance (RFC 8659 §4.1); the records: ")


async def test_unknown_critical_tag_at_a_parent(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "example", '128 future "x"')
    error = await refused("www.a.example", config)
    assert "at example (the closest CAA records to www.a.example) has the critical flag" in error.detail


async def test_unknown_tag_without_critical_flag_is_ignored(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "pki.example"', '0 tbs "unknown"')
    assert await allowed("a.example", config)
    caa(dns_server, "b.example", '0 tbs "unknown"')
    assert await allowed("b.example", config)


async def test_known_tag_with_critical_flag(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '128 issue "pki.example"', '128 iodef "mailto:x@a.example"')
    assert await allowed("a.example", config)


# --- RFC 8657 parameters ----------------------------------------------------------------------------------------------

async def test_accounturi(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", f'0 issue "pki.example; accounturi={ACCOUNT}"')
    assert await allowed("a.example", config)
    other = ACCOUNT.replace("Zb3kT1", "Other1")
    error = await refused("a.example", config, account_uri=other)
    assert error.problem_type == "caa"
    assert error.detail.endswith(f'; 0 issue "pki.example; accounturi={ACCOUNT}" allows only the account {ACCOUNT}, '
                                 f"not {other} (RFC 8657 §3)")
    assert (await refused("a.example", config, account_uri=None)).problem_type == "caa"


async def test_accounturi_in_one_record_of_several(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", f'0 issue "pki.example; accounturi={ACCOUNT}"',
        '0 issue "pki.example; accounturi=https://ca.test/acme/intermediate/acct/Other1"')
    assert await allowed("a.example", config)


async def test_validationmethods(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "pki.example; validationmethods=dns-01,tls-alpn-01"')
    assert await allowed("a.example", config, method="dns-01")
    assert await allowed("a.example", config, method="tls-alpn-01")
    error = await refused("a.example", config, method="http-01")
    assert error.detail.endswith('0 issue "pki.example; validationmethods=dns-01,tls-alpn-01" allows only the '
                                 "validation methods dns-01,tls-alpn-01, not http-01 (RFC 8657 §4)")
    assert (await refused("a.example", config, method=None)).problem_type == "caa"
    assert (await refused("a.example", config, method="dns")).problem_type == "caa"  # whole names, not prefixes


async def test_both_parameters_and_spacing(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", f'0 issue "pki.example ; accounturi = {ACCOUNT} ;validationmethods=http-01"')
    assert await allowed("a.example", config, method="http-01")
    assert (await refused("a.example", config, method="dns-01")).problem_type == "caa"
    assert (await refused("a.example", config, account_uri=ACCOUNT + "x")).problem_type == "caa"


async def test_unknown_parameter_is_ignored(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "pki.example; policy=ev; x-custom=1"')
    assert await allowed("a.example", config)


async def test_parameter_given_twice_authorizes_nobody(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", '0 issue "pki.example; validationmethods=http-01; validationmethods=dns-01"')
    error = await refused("a.example", config, method="http-01")
    assert "gives the parameter validationmethods twice" in error.detail


async def test_parameters_of_another_ca_are_not_ours(dns_server: DNSServer, config: ValidationConfig) -> None:
    caa(dns_server, "a.example", f'0 issue "other-ca.example; accounturi={ACCOUNT}"')
    error = await refused("a.example", config)
    assert error.detail.endswith(f'the issue records are 0 issue "other-ca.example; accounturi={ACCOUNT}"')


# --- DNS failures -----------------------------------------------------------------------------------------------------

async def test_servfail_is_not_permission(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.rcodes["a.example"] = dns.rcode.SERVFAIL
    error = await refused("a.example", config)
    assert error.problem_type == "dns"
    assert error.detail.startswith(f"DNS problem: looking up CAA for a.example with resolver "
                                   f"127.0.0.1:{dns_server.port}: ")
    assert "SERVFAIL" in error.detail
    assert error.detail.endswith("a CAA lookup that fails does not allow issuance (RFC 8659 §3)")


async def test_servfail_at_a_parent(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.rcodes[("corp.example", "CAA")] = dns.rcode.SERVFAIL
    error = await refused("www.corp.example", config)
    assert error.problem_type == "dns"
    assert "looking up CAA for corp.example" in error.detail


async def test_timeout(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.silent.add(("a.example", "CAA"))
    config = dataclasses.replace(config, dns_timeout=0.5)
    started = time.monotonic()
    error = await refused("a.example", config)
    assert time.monotonic() - started < 2
    assert error.problem_type == "dns"
    assert "looking up CAA for a.example" in error.detail and "timed out" in error.detail


async def test_total_timeout_bounds_the_climb(dns_server: DNSServer, config: ValidationConfig) -> None:
    dns_server.silent.add(("corp.example", "CAA"))
    config = dataclasses.replace(config, dns_timeout=5.0, total_timeout=0.5)
    started = time.monotonic()
    error = await refused("www.corp.example", config)
    assert time.monotonic() - started < 2
    assert error.problem_type == "dns"
    assert error.detail == (f"DNS problem: looking up CAA for www.corp.example and its parents with resolver "
                            f"127.0.0.1:{dns_server.port}: no answer within 0.5 s")
