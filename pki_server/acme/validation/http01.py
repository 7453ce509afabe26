"""HTTP-01 validation (RFC 8555 §8.3; RFC 8738 for IP identifiers) with the rules of DESIGN.md.

How a request is made: every host name is resolved through :mod:`.resolver`, every address is checked against the
address policy, and the TCP connection goes to that checked address, never to a name a library would resolve again
(so DNS rebinding between the check and the connection is impossible). The HTTP/1.1 exchange is spoken with h11,
the sans-I/O parser httpx itself uses, over asyncio streams: that keeps the pinned address, the Host header and the
TLS SNI name under our control and lets us stop reading after ``config.max_body`` bytes instead of buffering what a
hostile server sends.

Redirects (RFC 8555 §8.3 "SHOULD follow redirects", §10.2 on their risks; Boulder's rules): at most
``config.max_redirects``, only 301/302/307/308, only to http or https, each hop re-resolved and re-checked, loops
detected. Ports: an http hop may use port 80 or ``config.http01_port``, an https hop port 443 or
``config.tlsalpn01_port`` (in production these are 80 and 443; tests move them to ephemeral ports). URLs mean what
they say: a redirect to ``http://host/`` goes to port 80. https hops do not verify the certificate: the key
authorization is what proves control (Boulder does the same).

Problem types (RFC 8555 §6.7): "connection" when no answer could be had (DNS aside: "dns"), refused, reset, timed
out, or a redirect broke the rules; "unauthorized" when the server answered with a status other than 200 (Boulder
and Pebble do the same); "incorrectResponse" when it answered 200 with a body that is not the key authorization
("Response received didn't match the challenge's requirements").
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import ssl
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import h11

from pki_server.acme.validation.base import Address, ValidationConfig, ValidationError, ValidationRecord
from pki_server.acme.validation.resolver import ip_literal, resolve_addresses, split_by_policy

USER_AGENT = "pki-server-validation/0.1"
REDIRECT_STATUSES = frozenset({301, 302, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
_READ_SIZE = 4096
_MAX_HEADER_BYTES = 8192  # status line and headers; a larger head is refused
_SHOWN_BODY = 100  # bytes of a wrong body quoted in an error detail
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")  # RFC 8555 §8.3: base64url, no padding
_HOST_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$)({_HOST_LABEL}\.)*{_HOST_LABEL}\.?")
_VISIBLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


@dataclass(frozen=True)
class _Target:
    """One URL to fetch, split into what the connection and the request need."""

    url: str  # as shown in details and records
    scheme: str
    host: str  # a DNS name or an IP literal without brackets
    port: int
    path: str  # path and query: the request target

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def key(self) -> tuple[str, str, int, str]:  # identity for loop detection
        return self.scheme, self.host.lower().rstrip("."), self.port, self.path


@dataclass
class _Progress:
    """Where the validation is, so that the total timeout can say what it interrupted."""

    url: str
    address: Address | None = None
    doing: str = "looking up the address"


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    location: str | None
    body: bytes


class _ConnectFailure(Exception):
    pass


async def validate_http01(identifier: str, token: str, key_authorization: str,
                          config: ValidationConfig) -> list[ValidationRecord]:
    """Fetch ``http://{identifier}:{http01_port}/.well-known/acme-challenge/{token}`` and compare the body.

    Returns the records of every request made (one per redirect hop) when the body, trailing whitespace ignored,
    equals ``key_authorization``; raises :class:`ValidationError` otherwise. ``identifier`` is a DNS name or an IP
    address (RFC 8738).
    """
    target = _first_target(identifier, token, config)
    records: list[ValidationRecord] = []
    progress = _Progress(target.url)
    try:
        async with asyncio.timeout(config.total_timeout):
            return await _follow(target, key_authorization, config, records, progress)
    except TimeoutError:
        where = f" from {progress.address}" if progress.address is not None else ""
        detail = (f"Fetching {progress.url}{where}: timed out {progress.doing} (a validation may take "
                  f"{config.total_timeout:g} s in all)")
        raise ValidationError("connection", detail, records) from None


def _first_target(identifier: str, token: str, config: ValidationConfig) -> _Target:
    if identifier.startswith("*."):
        # RFC 8555 §7.1.3 / §8.3: wildcard names are validated with dns-01 only.
        raise ValidationError("rejectedIdentifier", f"{identifier} is a wildcard name, which http-01 cannot validate: "
                                                    "use dns-01")
    if not _TOKEN.fullmatch(token):
        raise ValidationError("malformed", f"The token {token!r} is not base64url (RFC 8555 §8.3)")
    literal = ip_literal(identifier)
    if literal is not None:
        host = str(literal)
    elif _HOSTNAME.fullmatch(identifier):
        host = identifier.rstrip(".").lower()
    else:
        raise ValidationError("malformed", f"{identifier!r} is neither a DNS name nor an IP address")
    shown_host = f"[{host}]" if ":" in host else host
    path = f"/.well-known/acme-challenge/{token}"
    # The port is always spelled out, so a detail shows which port was tried even when it is a test's.
    return _Target(f"http://{shown_host}:{config.http01_port}{path}", "http", host, config.http01_port, path)


async def _follow(target: _Target, key_authorization: str, config: ValidationConfig,
                  records: list[ValidationRecord], progress: _Progress) -> list[ValidationRecord]:
    seen = {target.key}
    redirects = 0
    while True:
        response, address = await _fetch(target, config, records, progress)
        where = f"Fetching {target.url} from {address}"
        if response.status in REDIRECT_STATUSES:
            if response.location is None:
                raise ValidationError("connection", f"{where}: the server answered {response.status} without a "
                                                    "Location header", records)
            if redirects >= config.max_redirects:
                raise ValidationError("connection", f"{where}: too many redirects: stopped after "
                                                    f"{config.max_redirects}, at the redirect to "
                                                    f"{response.location}", records)
            following = _redirect_target(target, address, response.location, config, records)
            if following.key in seen:
                raise ValidationError("connection", f"{where}: redirect loop: {following.url} was fetched "
                                                    "before", records)
            seen.add(following.key)
            redirects += 1
            target = following
            continue
        if response.status != 200:
            status = f"{response.status} {response.reason}".strip()
            raise ValidationError("unauthorized", f"{where}: the server answered {status} instead of 200 with the "
                                                  f"key authorization (body: {_show(response.body)})", records)
        # RFC 8555 §8.3: "The server SHOULD ignore whitespace characters at the end of the body."
        if response.body.rstrip() != key_authorization.encode():
            raise ValidationError("incorrectResponse", f"{where}: the body is not the key authorization: expected "
                                                       f"{_show(key_authorization.encode())}, got "
                                                       f"{_show(response.body)}", records)
        return records


def _redirect_target(current: _Target, address: Address, location: str, config: ValidationConfig,
                     records: list[ValidationRecord]) -> _Target:
    """The next hop, or :class:`ValidationError` when the redirect breaks the rules (module docstring)."""
    url = urljoin(current.url, location.strip())
    where = f"Fetching {current.url} from {address}: redirect to {location}"
    try:
        parts = urlsplit(url)
        scheme, host, explicit_port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError as ex:
        raise ValidationError("connection", f"{where}: not a valid URL ({ex})", records) from ex
    if scheme not in DEFAULT_PORTS:
        raise ValidationError("connection", f"{where}: only http and https redirects are followed", records)
    if not host or not (ip_literal(host) is not None or (host.isascii() and _HOSTNAME.fullmatch(host))):
        raise ValidationError("connection", f"{where}: {host!r} is not a host name or an IP address", records)
    port = DEFAULT_PORTS[scheme] if explicit_port is None else explicit_port
    allowed = (80, config.http01_port) if scheme == "http" else (443, config.tlsalpn01_port)
    if port not in allowed:
        ports = " or ".join(str(p) for p in sorted(set(allowed)))
        raise ValidationError("connection", f"{where}: port {port} is not allowed; {scheme} redirects may only go "
                                            f"to port {ports}", records)
    path = quote(parts.path or "/", safe=_VISIBLE_ASCII)
    if parts.query:
        path += "?" + quote(parts.query, safe=_VISIBLE_ASCII)
    target = _Target("", scheme, host, port, path)
    return dataclasses.replace(target, url=f"{scheme}://{target.netloc}{path}")


async def _fetch(target: _Target, config: ValidationConfig, records: list[ValidationRecord],
                 progress: _Progress) -> tuple[_Response, Address]:
    """One GET of ``target``: resolve, apply the address policy, connect to the first address that answers."""
    progress.url, progress.address, progress.doing = target.url, None, "looking up the address"
    record = ValidationRecord(target.url, target.host, target.port)
    try:
        addresses = await resolve_addresses(target.host, config)
    except ValidationError as ex:
        records.append(record)
        raise ValidationError(ex.problem_type, f"Fetching {target.url}: {ex.detail}", records) from ex
    record = dataclasses.replace(record, addresses_resolved=tuple(str(a) for a in addresses))
    records.append(record)
    permitted, refusals = split_by_policy(addresses, config)
    if not permitted:
        raise ValidationError("connection", f"Fetching {target.url}: {'; '.join(refusals)}. No address was "
                                            "contacted", records)
    failures: list[str] = []
    for address in permitted:
        records[-1] = dataclasses.replace(record, address_used=str(address))
        progress.address, progress.doing = address, "connecting"
        try:
            reader, writer = await _connect(target, address, config)
        except _ConnectFailure as ex:
            failures.append(f"{address}: {ex}")
            continue
        try:
            progress.doing = "waiting for the response"
            return await _exchange(reader, writer, target, address, config, records), address
        finally:
            writer.transport.abort()  # Connection: close; nothing more to read or say
    if len(failures) == 1:
        raise ValidationError("connection", f"Fetching {target.url} from {failures[0]}", records)
    raise ValidationError("connection", f"Fetching {target.url}: no address could be reached: "
                                        f"{'; '.join(failures)}", records)


def _tls_context() -> ssl.SSLContext:
    # Certificates are not verified on https redirect hops (RFC 8555 §8.3 proves control with the key
    # authorization; Boulder does the same), so self-signed and internal certificates work.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


async def _connect(target: _Target, address: Address, config: ValidationConfig
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = _tls_context() if target.scheme == "https" else None
    # SNI carries the host name; an IP literal is not sent as SNI (RFC 6066 §3), "" tells asyncio so.
    server_hostname = (target.host if ip_literal(target.host) is None else "") if context else None
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(str(address), target.port, ssl=context, server_hostname=server_hostname,
                                    limit=_READ_SIZE * 4),
            config.connect_timeout,
        )
    except TimeoutError:
        raise _ConnectFailure(f"timed out connecting to port {target.port} after {config.connect_timeout:g} s"
                              ) from None
    except ConnectionRefusedError:
        raise _ConnectFailure(f"connection refused on port {target.port}") from None
    except ssl.SSLError as ex:
        raise _ConnectFailure(f"TLS handshake failed on port {target.port}: {ex.reason or ex}") from None
    except OSError as ex:
        raise _ConnectFailure(f"cannot connect to port {target.port}: {ex.strerror or ex}") from None


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: _Target,
                    address: Address, config: ValidationConfig, records: list[ValidationRecord]) -> _Response:
    """Send the GET and read the answer: the head, and at most ``config.max_body`` bytes of body."""
    where = f"Fetching {target.url} from {address}"
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEADER_BYTES)
    request = h11.Request(method="GET", target=target.path, headers=[
        ("Host", target.netloc),
        ("User-Agent", USER_AGENT),
        ("Accept", "*/*"),
        ("Accept-Encoding", "identity"),  # the body is compared byte for byte, and a compressed one could be a bomb
        ("Connection", "close"),
    ])
    response: h11.Response | None = None
    body = bytearray()
    received = 0
    try:
        writer.write(connection.send(request) + (connection.send(h11.EndOfMessage()) or b""))
        await writer.drain()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(_READ_SIZE)
                received += len(data)
                connection.receive_data(data)
            elif isinstance(event, h11.Response):
                response = event
                if event.status_code in REDIRECT_STATUSES:
                    break  # the body of a redirect is of no interest
                length = _content_length(event)
                if event.status_code == 200 and length is not None and length > config.max_body:
                    raise ValidationError("incorrectResponse", f"{where}: the response body is {length} bytes "
                                                               f"long; a key authorization is at most "
                                                               f"{config.max_body} bytes", records)
            elif isinstance(event, h11.Data) and response is not None:
                body += event.data
                if len(body) > config.max_body:
                    if response.status_code == 200:
                        raise ValidationError("incorrectResponse", f"{where}: the response body is longer than "
                                                                   f"{config.max_body} bytes, the most a key "
                                                                   "authorization may be", records)
                    break  # an error page: its beginning is enough for the detail
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
            # h11.InformationalResponse (1xx) is skipped: the final response follows.
    except h11.RemoteProtocolError as ex:
        problem = "answered" if received else "closed the connection"
        raise ValidationError("connection", f"{where}: the server {problem} without a valid HTTP/1.1 response "
                                            f"({ex})", records) from None
    except ConnectionResetError:
        raise ValidationError("connection", f"{where}: the connection was reset by the server", records) from None
    except ssl.SSLError as ex:
        raise ValidationError("connection", f"{where}: TLS error: {ex.reason or ex}", records) from None
    except OSError as ex:
        raise ValidationError("connection", f"{where}: {ex.strerror or ex}", records) from None
    if response is None:  # h11 raises before this can happen; kept so that no assert guards a network result
        raise ValidationError("connection", f"{where}: the server sent no HTTP response", records)
    location = _header(response, b"location")
    return _Response(response.status_code, response.reason.decode("latin-1") or "", location, bytes(body))


def _header(response: h11.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _content_length(response: h11.Response) -> int | None:
    value = _header(response, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


def _show(body: bytes) -> str:
    """A body as quoted text for a detail, cut after a hundred bytes."""
    text = json.dumps(body[:_SHOWN_BODY].decode("utf-8", "replace"), ensure_ascii=False)
    return text + " (cut)" if len(body) > _SHOWN_BODY else text
