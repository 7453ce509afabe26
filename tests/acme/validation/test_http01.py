"""HTTP-01 validation against real HTTP servers on loopback and the real test DNS responder."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki_server.acme.validation import ValidationConfig, ValidationError, parse_networks, validate_http01
from tests.acme.dnsserver import DNSServer

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHORIZATION = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
CHALLENGE_PATH = f"/.well-known/acme-challenge/{TOKEN}"


# --- a small HTTP/1.1 server ------------------------------------------------------------------------------------------

@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]


Handler = Callable[[asyncio.StreamWriter], Awaitable[None]]


def respond(status: int, body: bytes | str = b"", headers: Iterable[tuple[str, str]] = (),
            reason: str = "") -> Handler:
    """A handler answering with a complete response (Content-Length set)."""
    data = body.encode() if isinstance(body, str) else body
    reasons = {200: "OK", 301: "Moved Permanently", 302: "Found", 303: "See Other", 307: "Temporary Redirect",
               308: "Permanent Redirect", 404: "Not Found"}

    async def handler(writer: asyncio.StreamWriter) -> None:
        head = [f"HTTP/1.1 {status} {reason or reasons.get(status, 'Status')}", f"Content-Length: {len(data)}",
                "Connection: close", *(f"{name}: {value}" for name, value in headers)]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()

    return handler


def redirect(location: str, status: int = 302) -> Handler:
    return respond(status, b"moved", [("Location", location)])


async def hang(writer: asyncio.StreamWriter) -> None:
    """Accept the request and never answer (the server's stop() ends it)."""
    await asyncio.sleep(30)


async def endless_body(writer: asyncio.StreamWriter) -> None:
    """A 200 whose body never ends (no Content-Length: the body runs until the connection closes)."""
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    for _ in range(100_000):  # 100 MB at most; the client is expected to hang up long before
        writer.write(KEY_AUTHORIZATION.encode() * 10)
        await writer.drain()


class HTTPServer:
    """Serves ``routes`` (path -> handler; other paths get 404) on one port of one or more loopback addresses."""

    def __init__(self, hosts: tuple[str, ...] = ("127.0.0.1",), tls: ssl.SSLContext | None = None) -> None:
        self.hosts = hosts
        self.tls = tls
        self.port = 0
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> HTTPServer:
        for _attempt in range(20):  # the port the first address got may be taken on another
            port, servers = 0, []
            try:
                for host in self.hosts:
                    server = await asyncio.start_server(self._serve, host, port, ssl=self.tls)
                    servers.append(server)
                    port = server.sockets[0].getsockname()[1]
            except OSError:
                for server in servers:
                    server.close()
                continue
            self.port, self._servers = port, servers
            return self
        raise RuntimeError(f"no port free on all of {self.hosts}")

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ")
            headers = {}
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            self.requests.append(Request(method, target, headers))
            await self.routes.get(target, respond(404, "not found"))(writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError):
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)  # type: ignore[arg-type]


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tls_context(tmp_path: Path, names: list[str], sni_seen: list[str | None]) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate; records the SNI name of every handshake."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    context.sni_callback = lambda _sock, name, _ctx: sni_seen.append(name)  # type: ignore[assignment,misc]
    return context


# --- fixtures ---------------------------------------------------------------------------------------------------------

@pytest.fixture
async def dns_server() -> AsyncIterator[DNSServer]:
    async with DNSServer() as server:
        server.records[("a.example", "A")] = ["127.0.0.1"]
        server.records[("b.example", "A")] = ["127.0.0.1"]
        yield server


@pytest.fixture
async def web() -> AsyncIterator[HTTPServer]:
    server = await HTTPServer().start()
    yield server
    await server.stop()


@pytest.fixture
def config(web: HTTPServer, dns_server: DNSServer) -> ValidationConfig:
    """Loopback allowed (the default denies it), small timeouts, the test DNS server, the test server's port."""
    return ValidationConfig(http01_port=web.port, tlsalpn01_port=free_port(), resolvers=(dns_server.address,),
                            deny_networks=(), connect_timeout=1.0, total_timeout=3.0, dns_timeout=1.0)


def url(host: str, port: int, path: str = CHALLENGE_PATH) -> str:
    return f"http://{host}:{port}{path}"


async def fails(identifier: str, config: ValidationConfig, token: str = TOKEN) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        await validate_http01(identifier, token, KEY_AUTHORIZATION, config)
    return info.value


# --- success ----------------------------------------------------------------------------------------------------------

async def test_success_through_dns(web: HTTPServer, config: ValidationConfig, dns_server: DNSServer) -> None:
    web.routes[CHALLENGE_PATH] = respond(200, KEY_AUTHORIZATION)
    records = await validate_http01("a.example", TOKEN, KEY_AUTHORIZATION, config)
    assert [r.to_json() for r in records] == [{
        "url": url("a.example", web.port), "hostname": "a.example", "port": web.port,
        "addressesResolved": ["127.0.0.1"], "addressUsed": "127.0.0.1",
    }]
    assert ("a.example", "A") in dns_server.queries
    [request] = web.requests
    assert (request.method, request.target) == ("GET", CHALLENGE_PATH)
    assert request.headers["host"] == f"a.example:{web.port}"
    assert request.headers["user-agent"] == "pki-server-validation/0.1"
    assert request.headers["connection"] == "close"
    assert "cookie" not in request.headers


async def test_success_with_ip_identifier(web: HTTPServer, config: ValidationConfig, dns_server: DNSServer) -> None:
    web.routes[CHALLENGE_PATH] = respond(200, KEY_AUTHORIZATION)
    [record] = await validate_http01("127.0.0.1", TOKEN, KEY_AUTHORIZATION, config)
    assert record.url == url("127.0.0.1", web.port)
    assert record.address_used == "127.0.0.1"
    assert dns_server.queries == []
    assert web.requests[0].headers["host"] == f"127.0.0.1:{web.port}"


@pytest.mark.parametrize("body", [KEY_AUTHORIZATION + "\n", KEY_AUTHORIZATION + "\r\n", KEY_AUTHORIZATION + " \t\n\n"])
async def test_trailing_whitespace_is_ignored(web: HTTPServer, config: ValidationConfig, body: str) -> None:
    web.routes[CHALLENGE_PATH] = respond(200, body)
    assert await validate_http01("a.example", TOKEN, KEY_AUTHORIZATION, config)


async def test_body_of_exactly_max_body_bytes(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = respond(200, KEY_AUTHORIZATION.ljust(config.max_body))
    assert await validate_http01("a.example", TOKEN, KEY_AUTHORIZATION, config)


async def test_name_resolving_to_denied_and_allowed_addresses_uses_the_allowed_one(
        web: HTTPServer, config: ValidationConfig, dns_server: DNSServer) -> None:
    web.routes[CHALLENGE_PATH] = respond(200, KEY_AUTHORIZATION)
    dns_server.records[("mixed.example", "A")] = ["169.254.169.254", "127.0.0.1"]
    config = dataclasses.replace(config, deny_networks=parse_networks("169.254.0.0/16"))
    [record] = await validate_http01("mixed.example", TOKEN, KEY_AUTHORIZATION, config)
    assert sorted(record.addresses_resolved) == ["127.0.0.1", "169.254.169.254"]
    assert record.address_used == "127.0.0.1"


async def test_next_address_after_refusal(web: HTTPServer, config: ValidationConfig, dns_server: DNSServer) -> None:
    web.routes[CHALLENGE_PATH] = respond(200, KEY_AUTHORIZATION)
    dns_server.records[("multi.example", "A")] = ["127.0.0.2", "127.0.0.1"]  # nothing listens on 127.0.0.2
    [record] = await validate_http01("multi.example", TOKEN, KEY_AUTHORIZATION, config)
    assert record.address_used == "127.0.0.1"


# --- wrong answers ----------------------------------------------------------------------------------------------------

async def test_wrong_content(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = respond(200, "something else\n")
    error = await fails("a.example", config)
    assert error.problem_type == "incorrectResponse"
    assert error.detail == (f'Fetching {url("a.example", web.port)} from 127.0.0.1: the body is not the key '
                            f'authorization: expected "{KEY_AUTHORIZATION}", got "something else\\n"')
    assert [r.address_used for r in error.records] == ["127.0.0.1"]


async def test_leading_whitespace_is_not_ignored(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = respond(200, " " + KEY_AUTHORIZATION)
    assert (await fails("a.example", config)).problem_type == "incorrectResponse"


async def test_404(web: HTTPServer, config: ValidationConfig) -> None:
    error = await fails("a.example", config)
    assert error.problem_type == "unauthorized"
    assert error.detail == (f'Fetching {url("a.example", web.port)} from 127.0.0.1: the server answered 404 Not '
                            f'Found instead of 200 with the key authorization (body: "not found")')


async def test_body_announced_too_long_is_not_read(web: HTTPServer, config: ValidationConfig) -> None:
    async def announce_and_hang(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100)
        await writer.drain()
        await asyncio.sleep(30)

    web.routes[CHALLENGE_PATH] = announce_and_hang
    started = time.monotonic()
    error = await fails("a.example", config)
    assert time.monotonic() - started < 2
    assert error.problem_type == "incorrectResponse"
    assert error.detail == (f"Fetching {url('a.example', web.port)} from 127.0.0.1: the response body is 100000 "
                            "bytes long; a key authorization is at most 512 bytes")


async def test_endless_body_is_cut(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = endless_body
    started = time.monotonic()
    error = await fails("a.example", config)
    assert time.monotonic() - started < 2
    assert error.problem_type == "incorrectResponse"
    assert "from 127.0.0.1: the response body is longer than 512 bytes" in error.detail


async def test_invalid_http(web: HTTPServer, config: ValidationConfig) -> None:
    async def garbage(writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    web.routes[CHALLENGE_PATH] = garbage
    error = await fails("a.example", config)
    assert error.problem_type == "connection"
    assert error.detail.startswith(f"Fetching {url('a.example', web.port)} from 127.0.0.1: the server answered "
                                   "without a valid HTTP/1.1 response")


async def test_closed_without_answer(web: HTTPServer, config: ValidationConfig) -> None:
    async def close(writer: asyncio.StreamWriter) -> None:
        return None

    web.routes[CHALLENGE_PATH] = close
    error = await fails("a.example", config)
    assert error.problem_type == "connection"
    assert "from 127.0.0.1: the server closed the connection without a valid HTTP/1.1 response" in error.detail


# --- connections and DNS ----------------------------------------------------------------------------------------------

async def test_connection_refused(config: ValidationConfig) -> None:
    port = free_port()
    config = dataclasses.replace(config, http01_port=port)
    error = await fails("127.0.0.1", config)
    assert error.problem_type == "connection"
    assert error.detail == (f"Fetching http://127.0.0.1:{port}{CHALLENGE_PATH} from 127.0.0.1: connection refused "
                            f"on port {port}")
    assert error.records[0].address_used == "127.0.0.1"


async def test_all_addresses_refused(config: ValidationConfig, dns_server: DNSServer) -> None:
    port = free_port()
    config = dataclasses.replace(config, http01_port=port)
    dns_server.records[("multi.example", "A")] = ["127.0.0.2", "127.0.0.3"]
    error = await fails("multi.example", config)
    assert error.problem_type == "connection"
    prefix = f"Fetching {url('multi.example', port)}: no address could be reached: "
    assert error.detail.startswith(prefix)
    assert sorted(error.detail.removeprefix(prefix).split("; ")) == [
        f"127.0.0.2: connection refused on port {port}", f"127.0.0.3: connection refused on port {port}"]


async def test_timeout(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = hang
    config = dataclasses.replace(config, total_timeout=0.5)
    started = time.monotonic()
    error = await fails("a.example", config)
    assert time.monotonic() - started < 2
    assert error.problem_type == "connection"
    assert error.detail == (f"Fetching {url('a.example', web.port)} from 127.0.0.1: timed out waiting for the "
                            "response (a validation may take 0.5 s in all)")
    assert error.records[0].address_used == "127.0.0.1"


async def test_nxdomain(web: HTTPServer, config: ValidationConfig, dns_server: DNSServer) -> None:
    error = await fails("missing.example", config)
    assert error.problem_type == "dns"
    assert error.detail == (f"Fetching {url('missing.example', web.port)}: DNS problem: NXDOMAIN looking up A and "
                            f"AAAA for missing.example with resolver 127.0.0.1:{dns_server.port}: the name does not "
                            "exist")
    assert [r.to_json() for r in error.records] == [
        {"url": url("missing.example", web.port), "hostname": "missing.example", "port": web.port,
         "addressesResolved": []}]
    assert web.requests == []


async def test_default_policy_denies_loopback(web: HTTPServer, dns_server: DNSServer) -> None:
    web.routes[CHALLENGE_PATH] = respond(200, KEY_AUTHORIZATION)
    config = ValidationConfig(http01_port=web.port, resolvers=(dns_server.address,))
    error = await fails("a.example", config)
    assert error.problem_type == "connection"
    assert error.detail == (f"Fetching {url('a.example', web.port)}: 127.0.0.1 is in the denied network "
                            "127.0.0.0/8, which validation never contacts (PKI_ACME_VALIDATION_DENY_NETWORKS). No "
                            "address was contacted")
    assert web.requests == []


async def test_default_policy_denies_metadata_address(dns_server: DNSServer) -> None:
    dns_server.records[("metadata.example", "A")] = ["169.254.169.254"]
    error = await fails("metadata.example", ValidationConfig(resolvers=(dns_server.address,)))
    assert error.problem_type == "connection"
    assert "169.254.169.254 is in the denied network 169.254.0.0/16" in error.detail
    error = await fails("169.254.169.254", ValidationConfig())
    assert "169.254.169.254 is in the denied network 169.254.0.0/16" in error.detail


async def test_allow_networks(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = respond(200, KEY_AUTHORIZATION)
    outside = dataclasses.replace(config, allow_networks=parse_networks("10.0.0.0/8"))
    error = await fails("a.example", outside)
    assert "127.0.0.1 is outside the allowed networks (10.0.0.0/8)" in error.detail
    assert web.requests == []
    inside = dataclasses.replace(config, allow_networks=parse_networks("127.0.0.0/8"))
    assert await validate_http01("a.example", TOKEN, KEY_AUTHORIZATION, inside)


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
async def test_ipv6_identifier_and_preference(config: ValidationConfig, dns_server: DNSServer) -> None:
    server = await HTTPServer(hosts=("127.0.0.1", "::1")).start()
    try:
        server.routes[CHALLENGE_PATH] = respond(200, KEY_AUTHORIZATION)
        config = dataclasses.replace(config, http01_port=server.port)
        [record] = await validate_http01("::1", TOKEN, KEY_AUTHORIZATION, config)
        assert record.url == f"http://[::1]:{server.port}{CHALLENGE_PATH}"
        assert server.requests[-1].headers["host"] == f"[::1]:{server.port}"
        dns_server.records[("dual.example", "A")] = ["127.0.0.1"]
        dns_server.records[("dual.example", "AAAA")] = ["::1"]
        [record] = await validate_http01("dual.example", TOKEN, KEY_AUTHORIZATION, config)
        assert record.addresses_resolved == ("::1", "127.0.0.1")
        assert record.address_used == "::1"  # IPv6 first
    finally:
        await server.stop()


async def test_ipv4_fallback(web: HTTPServer, config: ValidationConfig, dns_server: DNSServer) -> None:
    web.routes[CHALLENGE_PATH] = respond(200, KEY_AUTHORIZATION)
    dns_server.records[("dual.example", "A")] = ["127.0.0.1"]
    dns_server.records[("dual.example", "AAAA")] = ["::1"]  # nothing listens on [::1]:port
    [record] = await validate_http01("dual.example", TOKEN, KEY_AUTHORIZATION, config)
    assert record.addresses_resolved == ("::1", "127.0.0.1")
    assert record.address_used == "127.0.0.1"


async def test_refuses_wildcard_and_bad_token(config: ValidationConfig) -> None:
    error = await fails("*.a.example", config)
    assert error.problem_type == "rejectedIdentifier"
    assert "*.a.example is a wildcard name" in error.detail
    error = await fails("a.example", config, token="../../etc/passwd")
    assert error.problem_type == "malformed"
    error = await fails("a example", config)
    assert error.problem_type == "malformed"


# --- redirects --------------------------------------------------------------------------------------------------------

async def test_redirect_chain(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = redirect(f"http://b.example:{web.port}/one", 302)
    web.routes["/one"] = redirect("/two?x=1", 301)  # relative
    web.routes["/two?x=1"] = redirect(f"http://127.0.0.1:{web.port}/three", 307)
    web.routes["/three"] = redirect("four", 308)
    web.routes["/four"] = respond(200, KEY_AUTHORIZATION)
    records = await validate_http01("a.example", TOKEN, KEY_AUTHORIZATION, config)
    assert [r.url for r in records] == [
        url("a.example", web.port), url("b.example", web.port, "/one"), url("b.example", web.port, "/two?x=1"),
        url("127.0.0.1", web.port, "/three"), url("127.0.0.1", web.port, "/four")]
    assert [r.hostname for r in records] == ["a.example", "b.example", "b.example", "127.0.0.1", "127.0.0.1"]
    assert [r.headers["host"] for r in web.requests] == [
        f"a.example:{web.port}", f"b.example:{web.port}", f"b.example:{web.port}", f"127.0.0.1:{web.port}",
        f"127.0.0.1:{web.port}"]


async def test_redirect_to_https_does_not_verify(web: HTTPServer, config: ValidationConfig, tmp_path: Path) -> None:
    sni_seen: list[str | None] = []
    secure = await HTTPServer(tls=tls_context(tmp_path, ["b.example"], sni_seen)).start()
    try:
        secure.routes["/secure"] = respond(200, KEY_AUTHORIZATION)
        config = dataclasses.replace(config, tlsalpn01_port=secure.port)
        web.routes[CHALLENGE_PATH] = redirect(f"https://b.example:{secure.port}/secure")
        records = await validate_http01("a.example", TOKEN, KEY_AUTHORIZATION, config)
        assert records[-1].url == f"https://b.example:{secure.port}/secure"
        assert sni_seen == ["b.example"]
        assert secure.requests[0].headers["host"] == f"b.example:{secure.port}"
    finally:
        await secure.stop()


async def test_redirect_to_denied_address(web: HTTPServer, config: ValidationConfig, dns_server: DNSServer) -> None:
    config = dataclasses.replace(config, deny_networks=parse_networks("169.254.0.0/16"))
    web.routes[CHALLENGE_PATH] = redirect("http://169.254.169.254/latest/meta-data/")
    error = await fails("a.example", config)
    assert error.problem_type == "connection"
    assert error.detail == ("Fetching http://169.254.169.254/latest/meta-data/: 169.254.169.254 is in the denied "
                            "network 169.254.0.0/16, which validation never contacts "
                            "(PKI_ACME_VALIDATION_DENY_NETWORKS). No address was contacted")
    assert [r.hostname for r in error.records] == ["a.example", "169.254.169.254"]
    # The same through a name: each hop is re-resolved and re-checked.
    dns_server.records[("metadata.example", "A")] = ["169.254.169.254"]
    web.routes[CHALLENGE_PATH] = redirect("http://metadata.example/latest/meta-data/")
    error = await fails("a.example", config)
    assert "169.254.169.254 is in the denied network 169.254.0.0/16" in error.detail


async def test_redirect_to_other_port(web: HTTPServer, config: ValidationConfig) -> None:
    other = await HTTPServer().start()
    try:
        other.routes["/x"] = respond(200, KEY_AUTHORIZATION)
        web.routes[CHALLENGE_PATH] = redirect(f"http://a.example:{other.port}/x")
        error = await fails("a.example", config)
        assert error.problem_type == "connection"
        assert error.detail == (f"Fetching {url('a.example', web.port)} from 127.0.0.1: redirect to "
                                f"http://a.example:{other.port}/x: port {other.port} is not allowed; http redirects "
                                f"may only go to port {min(80, web.port)} or {max(80, web.port)}")
        assert other.requests == []
        # https to the http port is refused too.
        web.routes[CHALLENGE_PATH] = redirect(f"https://a.example:{web.port}/x")
        assert f"port {web.port} is not allowed; https redirects" in (await fails("a.example", config)).detail
    finally:
        await other.stop()


@pytest.mark.parametrize("location", ["ftp://a.example/file", "file:///etc/passwd", "gopher://a.example:70/"])
async def test_redirect_to_other_scheme(web: HTTPServer, config: ValidationConfig, location: str) -> None:
    web.routes[CHALLENGE_PATH] = redirect(location)
    error = await fails("a.example", config)
    assert error.problem_type == "connection"
    assert error.detail == (f"Fetching {url('a.example', web.port)} from 127.0.0.1: redirect to {location}: only "
                            "http and https redirects are followed")


async def test_redirect_loop(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = redirect("/a")
    web.routes["/a"] = redirect("/b")
    web.routes["/b"] = redirect(f"http://A.example:{web.port}/a")
    error = await fails("a.example", config)
    assert error.problem_type == "connection"
    assert error.detail == (f"Fetching {url('a.example', web.port, '/b')} from 127.0.0.1: redirect loop: "
                            f"{url('a.example', web.port, '/a')} was fetched before")
    assert len(web.requests) == 3


async def test_redirect_to_itself(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = redirect(CHALLENGE_PATH)
    assert "redirect loop" in (await fails("a.example", config)).detail
    assert len(web.requests) == 1


async def test_ten_redirects_are_followed_eleven_are_not(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = redirect("/r1")
    for hop in range(1, 11):
        web.routes[f"/r{hop}"] = redirect(f"/r{hop + 1}")
    web.routes["/r10"] = respond(200, KEY_AUTHORIZATION)
    assert len(await validate_http01("a.example", TOKEN, KEY_AUTHORIZATION, config)) == 11  # 10 redirects
    web.routes["/r10"] = redirect("/r11")
    web.routes["/r11"] = respond(200, KEY_AUTHORIZATION)
    error = await fails("a.example", config)
    assert error.problem_type == "connection"
    assert error.detail == (f"Fetching {url('a.example', web.port, '/r10')} from 127.0.0.1: too many redirects: "
                            "stopped after 10, at the redirect to /r11")
    assert "/r11" not in [r.target for r in web.requests]


async def test_other_3xx_is_not_followed(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = redirect("/elsewhere", 303)
    web.routes["/elsewhere"] = respond(200, KEY_AUTHORIZATION)
    error = await fails("a.example", config)
    assert error.problem_type == "unauthorized"
    assert "the server answered 303 See Other instead of 200" in error.detail
    assert len(web.requests) == 1


async def test_redirect_without_location(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = respond(302)
    error = await fails("a.example", config)
    assert error.problem_type == "connection"
    assert error.detail == (f"Fetching {url('a.example', web.port)} from 127.0.0.1: the server answered 302 without "
                            "a Location header")


async def test_redirect_to_name_that_does_not_resolve(web: HTTPServer, config: ValidationConfig,
                                                      dns_server: DNSServer) -> None:
    web.routes[CHALLENGE_PATH] = redirect(f"http://gone.example:{web.port}/x")
    error = await fails("a.example", config)
    assert error.problem_type == "dns"
    assert error.detail.startswith(f"Fetching http://gone.example:{web.port}/x: DNS problem: NXDOMAIN")
    assert [r.address_used for r in error.records] == ["127.0.0.1", None]


def slow_redirect(location: str, delay: float) -> Handler:
    async def handler(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        await redirect(location)(writer)

    return handler


async def test_timeout_covers_all_redirects(web: HTTPServer, config: ValidationConfig) -> None:
    web.routes[CHALLENGE_PATH] = redirect("/s0")
    for i in range(10):
        web.routes[f"/s{i}"] = slow_redirect(f"/s{i + 1}", 0.2)  # each hop well within any per-hop limit
    config = dataclasses.replace(config, total_timeout=0.7)
    started = time.monotonic()
    error = await fails("a.example", config)
    assert time.monotonic() - started < 2
    assert error.problem_type == "connection"
    assert "timed out waiting for the response (a validation may take 0.7 s in all)" in error.detail
    assert 3 <= len(error.records) <= 5


def test_default_ports() -> None:
    config = ValidationConfig()
    assert (config.http01_port, config.tlsalpn01_port, config.max_redirects, config.max_body) == (80, 443, 10, 512)
    assert ipaddress.ip_network("127.0.0.0/8") in config.deny_networks

