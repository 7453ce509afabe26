"""CAA checking (RFC 8659; RFC 8657 for the ``accounturi`` and ``validationmethods`` parameters).

:func:`check_caa` finds the relevant CAA RRset (RFC 8659 §3): it asks for CAA at the name, then at its parent, and so
on up to the top-level domain (the root is never asked); the first name with a CAA RRset wins. CNAMEs are followed
as any resolution follows them (the resolver returns the target's CAA records); the climb goes on from the parent of
the name asked, not of the CNAME's target (RFC 8659 §3 dropped RFC 6844's climbing of targets). No CAA record
anywhere: any CA may issue.

In the relevant RRset (RFC 8659 §4):

- a property with the critical flag (128) whose tag this server does not know refuses issuance outright;
- for a wildcard name, ``issuewild`` properties govern when there are any, else ``issue``; for other names only
  ``issue`` counts; when no property governs, any CA may issue (an RRset of ``iodef`` records only, say);
- a property authorizes this CA when its issuer-domain-name is one of ``identities`` (compared case-insensitively)
  and its parameters allow it: ``accounturi`` must equal the ACME account URL, ``validationmethods`` must list
  the challenge type (RFC 8657 §3, §4); other parameters are ignored. An empty issuer (``issue ";"``), a value that
  does not parse, or a parameter given twice authorizes nobody.

A DNS failure (SERVFAIL, a timeout ...) is not permission (RFC 8659 §3): it raises a "dns" problem. A refusal raises
a "caa" problem whose detail quotes the relevant records and says where they were found. IP addresses have no CAA
(RFC 8738 §9 leaves it undefined; Boulder skips them): they are always allowed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver

from pki_server.acme.validation.base import ValidationConfig, ValidationError
from pki_server.acme.validation.resolver import _failure, describe_resolvers, ip_literal, query

KNOWN_TAGS = frozenset({"issue", "issuewild", "iodef", "issuemail"})  # RFC 8659 §4, RFC 9495
_SHOWN_RECORDS = 5  # records quoted in an error detail
# RFC 8659 §4.2: issuer-domain-name = label *("." label); label = (ALPHA / DIGIT) *( *("-") (ALPHA / DIGIT))
_LABEL = r"[A-Za-z0-9](?:-*[A-Za-z0-9])*"
_ISSUER = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PARAMETER = re.compile(r"([A-Za-z0-9](?:-*[A-Za-z0-9])*)[ \t]*=[ \t]*([\x21-\x3a\x3c-\x7e]*)")


@dataclass(frozen=True)
class _Property:
    flags: int
    tag: str  # lower case
    value: str
    text: str  # as in a zone file: 0 issue "ca.example"


async def check_caa(identifier: str, *, wildcard: bool, identities: Sequence[str], account_uri: str | None,
                    method: str | None, config: ValidationConfig) -> None:
    """Raise :class:`ValidationError` ("caa", or "dns") unless CAA allows this CA to issue for ``identifier``.

    ``identifier`` is the DNS name without the wildcard label (a leading ``*.`` is removed and counts as
    ``wildcard=True``); ``identities`` are the issuer domain names this CA answers to (the CA's CAA identities);
    ``account_uri`` is the ACME account URL and ``method`` the challenge type ("dns-01" ...) for RFC 8657.
    """
    if identifier.startswith("*."):
        identifier, wildcard = identifier[2:], True
    if ip_literal(identifier) is not None:
        return
    found_at, properties = await _relevant_rrset(identifier.rstrip(".").lower(), config)
    if not properties:
        return
    shown = _show(properties)
    where = f"at {found_at}" + ("" if found_at == identifier.rstrip(".").lower() else
                                f" (the closest CAA records to {identifier})")
    for prop in properties:
        if prop.flags & 128 and prop.tag not in KNOWN_TAGS:
            raise ValidationError("caa", f"CAA record {prop.text} {where} has the critical flag and a tag this CA "
                                         f"does not know, which forbids issuance (RFC 8659 §4.1); the records: "
                                         f"{shown}")
    governing = [p for p in properties if p.tag == "issuewild"] if wildcard else []
    governing = governing or [p for p in properties if p.tag == "issue"]
    if not governing:
        return
    wanted = {name.rstrip(".").lower() for name in identities}
    reasons: list[str] = []
    for prop in governing:
        refusal = _refusal(prop, wanted, account_uri, method)
        if refusal is None:
            return
        if refusal:
            reasons.append(refusal)
    kind = "issuewild" if governing[0].tag == "issuewild" else "issue"
    names = ", ".join(sorted(wanted)) or "none"
    detail = (f"CAA records {where} do not authorize this CA (CAA identities: {names}) to issue for "
              f"{'*.' if wildcard else ''}{identifier.rstrip('.')}: the {kind} records are {_show(governing)}")
    if reasons:
        detail += "; " + "; ".join(reasons)
    raise ValidationError("caa", detail)


def _refusal(prop: _Property, wanted: set[str], account_uri: str | None, method: str | None) -> str | None:
    """None when the property authorizes this CA; else why not ("" when it names another CA or nobody)."""
    issuer, _, parameter_text = prop.value.partition(";")
    issuer = issuer.strip(" \t")
    if not issuer or not _ISSUER.fullmatch(issuer) or issuer.lower() not in wanted:
        return ""
    parameters: dict[str, str] = {}
    for part in parameter_text.split(";") if parameter_text.strip(" \t") else []:
        match = _PARAMETER.fullmatch(part.strip(" \t"))
        if match is None:
            return f"{prop.text} cannot be parsed, so it authorizes nobody (RFC 8659 §4.2)"
        tag = match.group(1).lower()
        if tag in parameters:
            return f"{prop.text} gives the parameter {tag} twice, so it authorizes nobody"
        parameters[tag] = match.group(2)
    uri = parameters.get("accounturi")
    if uri is not None and uri != account_uri:
        return f"{prop.text} allows only the account {uri}, not {account_uri or 'this request'} (RFC 8657 §3)"
    methods = parameters.get("validationmethods")
    if methods is not None and (method is None or method not in methods.split(",")):
        return f"{prop.text} allows only the validation methods {methods}, not {method or 'this one'} (RFC 8657 §4)"
    return None


async def _relevant_rrset(name: str, config: ValidationConfig) -> tuple[str, list[_Property]]:
    """The first name from ``name`` up to the top-level domain that has CAA records, with those records.

    Every name of the climb is looked up at once (as Boulder does), and the answers are read from
    ``name`` upwards exactly as a climb one lookup at a time reads them: the first with records
    wins, a failure counts only when every name below it had none, and lookups above the winner
    are cancelled, their answers unread. A validation waits for one round trip instead of one per
    label; lookups above a name with records are sent for nothing.
    """
    try:
        qname = dns.name.from_text(name + ".")
    except dns.exception.DNSException as ex:
        raise ValidationError("malformed", f"{name!r} is not a valid DNS name: {ex}") from ex
    names = []
    current = qname
    while current != dns.name.root:
        names.append(current)
        current = current.parent()
    lookups = [asyncio.ensure_future(_lookup_caa(n, config)) for n in names]
    try:
        async with asyncio.timeout(config.total_timeout):
            for current, lookup in zip(names, lookups, strict=True):
                properties = await lookup
                if properties:
                    return current.to_text(omit_final_dot=True), properties
    except TimeoutError:
        raise ValidationError("dns", f"DNS problem: looking up CAA for {name} and its parents with "
                                     f"{describe_resolvers(config)}: no answer within {config.total_timeout:g} s"
                              ) from None
    finally:
        for lookup in lookups:
            if lookup.done():
                if not lookup.cancelled():
                    lookup.exception()  # read: an unread failure above the winner is no error
            else:
                lookup.cancel()
    return "", []


async def _lookup_caa(qname: dns.name.Name, config: ValidationConfig) -> list[_Property]:
    shown = qname.to_text(omit_final_dot=True)
    try:
        rrset = await query(qname, "CAA", config)
    except dns.resolver.NXDOMAIN:
        return []
    except dns.exception.DNSException as ex:
        raise ValidationError("dns", f"DNS problem: looking up CAA for {shown} with {describe_resolvers(config)}: "
                                     f"{_failure(ex)}; a CAA lookup that fails does not allow issuance "
                                     "(RFC 8659 §3)") from ex
    properties = []
    for rdata in rrset or []:
        tag = rdata.tag.decode("ascii", "replace").lower()
        value = rdata.value.decode("utf-8", "replace")
        properties.append(_Property(rdata.flags, tag, value, rdata.to_text()))
    return properties


def _show(properties: Sequence[_Property]) -> str:
    shown = ", ".join(p.text for p in properties[:_SHOWN_RECORDS])
    more = len(properties) - _SHOWN_RECORDS
    return shown + (f" and {more} more" if more > 0 else "")
