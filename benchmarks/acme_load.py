"""An async ACME load client: N full orders at concurrency C against any directory URL, on loopback.

``--mode orders`` (the default): each of C worker coroutines registers one account (ES256), then
takes orders from a shared count until N are done or ``--timeout`` is up: newOrder (one DNS name),
authz, the challenge (``--challenge http-01``: answered by this process's own responder on
``--http01-port``; ``dns-01``: a TXT record published at ``_acme-challenge.<name>``), poll the
authorization, finalize (a fresh P-256 key per order), poll the order, download the chain. Every
certificate is checked: it parses, its only name is the ordered one, its key is the CSR's, and its
chain verifies up to the server's root when ``--root-file``/``--root-url`` gives one.

``--mode nonce``: N ``HEAD newNonce`` at concurrency C (every nonce must be new). ``--mode ocsp``:
first ``--ocsp-certs`` certificates are issued as above, then N OCSP POSTs at concurrency C to the
URL of each certificate's AIA; every response must parse, be signed-successful, name the serial
asked and say good.

The server under test must validate against ``--http01-port`` and resolve the names to 127.0.0.1:
``--dns-port`` runs a DNS responder (tests/acme/dnsserver.py) in this process on that port, which
answers each ordered name with 127.0.0.1 and serves the dns-01 TXT records (pki-server:
PKI_ACME_DNS_RESOLVERS=127.0.0.1:<port>). Pebble uses pebble-challtestsrv, which answers every name
with 127.0.0.1 anyway; for dns-01 the TXT records go to its management API (``--challtestsrv``).

Output: ONE JSON line on standard output (see README.md for the fields). Exit status 0 when every
order (request) succeeded, 1 when some failed or the time ran out, 2 on bad arguments.

    python benchmarks/acme_load.py http://127.0.0.1:8000/acme/directory -n 100 -c 16 \\
        --http01-port 5002 --dns-port 5353 --server-pid 1234
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import itertools
import json
import os
import resource
import socket
import ssl
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[1]
JOSE = "application/jose+json"
URN = "urn:ietf:params:acme:error:"
STEPS = ("newOrder", "authz", "publish", "challenge", "pollAuthz", "finalize", "pollOrder", "download")
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


# --- small helpers -------------------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_loopback(url: str) -> None:
    if not is_loopback_host(urlsplit(url).hostname):
        raise LoadError(f"refusing a request to {url!r}: this client talks to loopback addresses only")


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50/p95/p99 (nearest rank) and mean, in milliseconds."""
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "mean": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))
        return round(ordered[index] * 1000, 2)

    return {"count": len(ordered), "p50": rank(50), "p95": rank(95), "p99": rank(99),
            "mean": round(statistics.fmean(ordered) * 1000, 2)}


class LoadError(Exception):
    """One order (or the setup) failed; the message says where."""


# --- server CPU from /proc -----------------------------------------------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on; the name may hold spaces


def _children(pids: set[int]) -> set[int]:
    """Every live descendant of ``pids``."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(fields[1])].append(int(entry))
    found: set[int] = set()
    todo = list(pids)
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found and child not in pids:
                found.add(child)
                todo.append(child)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of ``pids`` and their live descendants, plus the reaped children's (cutime+cstime)."""
    ticks = 0
    for pid in set(pids) | _children(set(pids)):
        fields = _stat_fields(pid)
        if fields is not None:  # utime, stime, cutime, cstime are fields 14-17 (here 11-14)
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


# --- the HTTP-01 responder and the DNS responder -------------------------------------------------------------------


class Http01Responder:
    """Answers GET /.well-known/acme-challenge/<token> from ``tokens`` (HTTP/1.1, one request per connection)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.tokens: dict[str, str] = {}
        self.hits = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.rpartition(" ")[0] or rest
            body = None
            if method == "GET" and path.startswith(CHALLENGE_PREFIX):
                body = self.tokens.get(path[len(CHALLENGE_PREFIX):])
            self.hits += 1
            status = "200 OK" if body is not None else "404 Not Found"
            data = (body or "").encode("ascii")
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
                         f"Connection: close\r\n\r\n".encode("ascii") + data)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def make_dns_server(port: int) -> Any:
    """tests/acme/dnsserver.py's DNSServer, bound to a given port on 127.0.0.1 (UDP and TCP)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.acme import dnsserver

    class FixedPortDNSServer(dnsserver.DNSServer):
        async def start(self) -> FixedPortDNSServer:
            loop = asyncio.get_running_loop()
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: dnsserver._UDPProtocol(self), local_addr=(self.host, port))
            self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port, reuse_address=True)
            self.port = port
            return self

    return FixedPortDNSServer("127.0.0.1")


# --- JWS --------------------------------------------------------------------------------------------------------


class AccountKey:
    """An ES256 account key: its JWK, thumbprint (RFC 7638) and JWS signatures (RFC 7515, 7518 §3.4)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        self.jwk = {"crv": "P-256", "kty": "EC", "x": b64(numbers.x.to_bytes(32, "big")),
                    "y": b64(numbers.y.to_bytes(32, "big"))}
        canonical = json.dumps(self.jwk, sort_keys=True, separators=(",", ":")).encode("ascii")
        self.thumbprint = b64(hashlib.sha256(canonical).digest())

    def jws(self, url: str, nonce: str, payload: Any, kid: str | None) -> bytes:
        protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
        if kid is None:
            protected["jwk"] = self.jwk
        else:
            protected["kid"] = kid
        protected_b64 = b64(json.dumps(protected).encode("utf-8"))
        payload_b64 = "" if payload is None else b64(json.dumps(payload).encode("utf-8"))
        r, s = decode_dss_signature(self.key.sign(f"{protected_b64}.{payload_b64}".encode("ascii"),
                                                  ec.ECDSA(hashes.SHA256())))
        signature = b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        return json.dumps({"protected": protected_b64, "payload": payload_b64, "signature": signature}).encode()


# --- the run -----------------------------------------------------------------------------------------------------


@dataclass
class Stats:
    steps: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    flows: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    failure_samples: list[str] = field(default_factory=list)
    bad_nonce_retries: int = 0
    polls: int = 0
    requests: int = 0
    completed: int = 0

    def fail(self, message: str) -> None:
        kind = message.split(":", 1)[0]
        self.failures[kind] += 1
        if len(self.failure_samples) < 5:
            self.failure_samples.append(message[:500])


class Run:
    def __init__(self, args: argparse.Namespace, directory: dict[str, Any], http: httpx.AsyncClient,
                 responder: Http01Responder, dns: Any, roots: list[x509.Certificate]) -> None:
        self.args = args
        self.directory = directory
        self.http = http
        self.responder = responder
        self.dns = dns
        self.roots = roots
        self.stats = Stats()
        self.next_index = 0
        self.run_id = uuid.uuid4().hex[:8]
        self.deadline = 0.0
        self.issued: list[tuple[x509.Certificate, x509.Certificate]] = []  # (leaf, issuer), for --mode ocsp
        self.challtestsrv: httpx.AsyncClient | None = None

    # --- dns-01 records ---

    async def publish_txt(self, name: str, value: str) -> None:
        """The TXT record ``name`` = ``value``: in our DNS responder, or through pebble-challtestsrv's API."""
        if self.args.challtestsrv:
            await self._challtestsrv("set-txt", {"host": name + ".", "value": value})
        else:
            self.dns.records[(name, "TXT")] = [value]

    async def clear_txt(self, name: str) -> None:
        if self.args.challtestsrv:
            await self._challtestsrv("clear-txt", {"host": name + "."})
        else:
            self.dns.records.pop((name, "TXT"), None)

    async def _challtestsrv(self, command: str, body: dict[str, str]) -> None:
        assert self.challtestsrv is not None
        url = f"{self.args.challtestsrv.rstrip('/')}/{command}"
        check_loopback(url)
        response = await self.challtestsrv.post(url, json=body)
        if response.status_code != 200:
            raise LoadError(f"publish: pebble-challtestsrv {command}: status {response.status_code}")

    # --- requests ---

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        check_loopback(url)
        self.stats.requests += 1
        return await self.http.request(method, url, **kwargs)

    async def new_nonce(self) -> str:
        response = await self.request("HEAD", self.directory["newNonce"])
        nonce = response.headers.get("Replay-Nonce")
        if response.status_code not in (200, 204) or not nonce:
            raise LoadError(f"newNonce: status {response.status_code}, no Replay-Nonce")
        return nonce


class Worker:
    """One account, orders one after another."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.key = AccountKey()
        self.kid: str | None = None
        self.nonce: str | None = None

    async def post(self, step: str, url: str, payload: Any, expect: tuple[int, ...] = (200,)) -> httpx.Response:
        """A signed POST (payload None: POST-as-GET), retried on badNonce with the nonce the error carried."""
        run = self.run
        for _attempt in range(10):
            nonce = self.nonce
            self.nonce = None
            if nonce is None:
                started = time.perf_counter()
                nonce = await run.new_nonce()
                run.stats.steps["newNonce"].append(time.perf_counter() - started)
            body = self.key.jws(url, nonce, payload, self.kid)
            response = await run.request("POST", url, content=body, headers={"Content-Type": JOSE})
            self.nonce = response.headers.get("Replay-Nonce")
            if response.status_code == 400 and _problem_type(response) == URN + "badNonce":
                run.stats.bad_nonce_retries += 1
                continue
            if response.status_code not in expect:
                raise LoadError(f"{step}: status {response.status_code}: {response.text[:300]}")
            return response
        raise LoadError(f"{step}: badNonce ten times in a row")

    async def register(self) -> None:
        started = time.perf_counter()
        response = await self.post("newAccount", self.run.directory["newAccount"],
                                   {"termsOfServiceAgreed": True}, expect=(200, 201))
        self.kid = response.headers.get("Location")
        if not self.kid:
            raise LoadError("newAccount: no Location header")
        self.run.stats.steps["newAccount"].append(time.perf_counter() - started)

    async def poll(self, step: str, url: str, waiting: tuple[str, ...], wanted: str) -> dict[str, Any]:
        while True:
            if time.monotonic() > self.run.deadline:
                raise LoadError(f"{step}: the run's time ran out while polling")
            await asyncio.sleep(self.run.args.poll_interval)
            self.run.stats.polls += 1
            resource_ = (await self.post(step, url, None)).json()
            if resource_.get("status") == wanted:
                return resource_
            if resource_.get("status") not in waiting:
                raise LoadError(f"{step}: status {resource_.get('status')!r}: {json.dumps(resource_)[:300]}")

    async def order(self, index: int) -> None:
        run = self.run
        name = f"{run.run_id}-{index}.bench.internal"
        if run.dns is not None:
            run.dns.records[(name, "A")] = ["127.0.0.1"]
        timings: dict[str, float] = {}
        token: str | None = None  # the HTTP-01 token, or the dns-01 record, to remove at the end
        txt_name: str | None = None
        started = last = time.perf_counter()

        def lap(step: str) -> None:
            nonlocal last
            now = time.perf_counter()
            timings[step], last = now - last, now

        try:
            response = await self.post("newOrder", run.directory["newOrder"],
                                       {"identifiers": [{"type": "dns", "value": name}]}, expect=(201,))
            order_url = response.headers.get("Location")
            order = response.json()
            if not order_url or len(order.get("authorizations", [])) != 1:
                raise LoadError(f"newOrder: no Location or not one authorization: {response.text[:300]}")
            lap("newOrder")
            authz_url = order["authorizations"][0]
            authz = (await self.post("authz", authz_url, None)).json()
            lap("authz")
            if authz.get("status") != "valid":
                kind = run.args.challenge
                challenge = next((c for c in authz.get("challenges", []) if c.get("type") == kind), None)
                if challenge is None:
                    raise LoadError(f"authz: no {kind} challenge: {json.dumps(authz)[:300]}")
                key_authorization = f"{challenge['token']}.{self.key.thumbprint}"
                if kind == "http-01":
                    token = challenge["token"]
                    run.responder.tokens[token] = key_authorization
                else:
                    txt_name = f"_acme-challenge.{name}"
                    await run.publish_txt(txt_name, b64(hashlib.sha256(key_authorization.encode()).digest()))
                lap("publish")
                await self.post("challenge", challenge["url"], {})
                lap("challenge")
                await self.poll("pollAuthz", authz_url, ("pending",), "valid")
                lap("pollAuthz")
            cert_key = ec.generate_private_key(ec.SECP256R1())
            csr = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                   .sign(cert_key, hashes.SHA256()))
            response = await self.post("finalize", order["finalize"],
                                       {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
            order = response.json()
            lap("finalize")
            if order.get("status") != "valid":
                order = await self.poll("pollOrder", order_url, ("processing", "ready"), "valid")
            lap("pollOrder")
            if not order.get("certificate"):
                raise LoadError(f"pollOrder: a valid order without a certificate URL: {json.dumps(order)[:300]}")
            pem = (await self.post("download", order["certificate"], None)).content
            lap("download")
            chain = verify_chain(pem, name, cert_key.public_key(), run.roots)
            finished = time.perf_counter()
            if run.args.mode == "ocsp" and len(chain) > 1:
                run.issued.append((chain[0], chain[1]))
        except (LoadError, httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            message = str(error) if isinstance(error, LoadError) else f"{type(error).__name__}: {error}"
            run.stats.fail(message)
            return
        finally:
            if run.dns is not None:
                run.dns.records.pop((name, "A"), None)
            if token is not None:
                run.responder.tokens.pop(token, None)
            if txt_name is not None:
                try:
                    await run.clear_txt(txt_name)
                except (LoadError, httpx.HTTPError) as error:
                    run.stats.fail(f"clearTxt: {error}")
        run.stats.flows.append(finished - started)
        for step, seconds in timings.items():
            run.stats.steps[step].append(seconds)
        run.stats.completed += 1


def _problem_type(response: httpx.Response) -> str | None:
    try:
        return str(response.json().get("type"))
    except ValueError:
        return None


def verify_chain(pem: bytes, name: str, public_key: ec.EllipticCurvePublicKey,
                 roots: list[x509.Certificate]) -> list[x509.Certificate]:
    """The leaf names ``name`` only and holds ``public_key``; each certificate is signed by the next, the last
    by one of ``roots`` (when given), and all are valid now."""
    try:
        chain = x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise LoadError(f"verify: the download is not a PEM chain: {error}") from None
    leaf = chain[0]
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        raise LoadError("verify: the certificate has no subjectAltName") from None
    if sans != [name]:
        raise LoadError(f"verify: the certificate names {sans}, not [{name!r}]")
    if leaf.public_key() != public_key:
        raise LoadError("verify: the certificate's key is not the CSR's")
    now = time.time()
    for cert in chain:
        if not cert.not_valid_before_utc.timestamp() - 300 <= now <= cert.not_valid_after_utc.timestamp():
            raise LoadError(f"verify: {cert.subject.rfc4514_string()} is not valid now")
    try:
        for cert, issuer in itertools.pairwise(chain):
            cert.verify_directly_issued_by(issuer)
        if roots:
            last = chain[-1]
            if not any(_issued_by(last, root) for root in roots):
                raise LoadError(f"verify: the chain does not lead to the given root ({last.issuer.rfc4514_string()})")
    except (ValueError, TypeError) as error:
        raise LoadError(f"verify: the chain does not verify: {error}") from None
    return chain


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    if cert == root:
        return True
    try:
        cert.verify_directly_issued_by(root)
    except Exception:  # any failure means: not this root
        return False
    return True


async def run_load(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    check_loopback(args.directory)
    verify: ssl.SSLContext | bool = True
    if args.ca_file:
        verify = ssl.create_default_context(cafile=args.ca_file)
    limits = httpx.Limits(max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency * 2)
    async with httpx.AsyncClient(verify=verify, timeout=args.request_timeout, limits=limits,
                                 trust_env=False) as http:
        roots = await load_roots(args, http)
        response = await http.get(args.directory)
        if response.status_code != 200:
            raise LoadError(f"directory: status {response.status_code}")
        directory = response.json()
        for key in ("newNonce", "newAccount", "newOrder"):
            check_loopback(directory[key])
        if args.mode == "nonce":
            return await run_nonces(args, directory, http)
        responder = Http01Responder(args.http01_host, args.http01_port)
        if args.http01_port:
            await responder.start()
        dns = make_dns_server(args.dns_port) if args.dns_port else None
        if dns is not None:
            await dns.start()
        run = Run(args, directory, http, responder, dns, roots)
        try:
            async with httpx.AsyncClient(timeout=args.request_timeout, trust_env=False) as challtestsrv:
                run.challtestsrv = challtestsrv
                result, ok = await _run(args, run)
                if args.mode == "ocsp":
                    return await run_ocsp(args, run, result, ok)
                return result, ok
        finally:
            await responder.stop()
            if dns is not None:
                await dns.stop()


async def load_roots(args: argparse.Namespace, http: httpx.AsyncClient) -> list[x509.Certificate]:
    roots: list[x509.Certificate] = []
    for path in args.root_file:
        roots += x509.load_pem_x509_certificates(Path(path).read_bytes())
    for url in args.root_url:
        check_loopback(url)
        response = await http.get(url)
        if response.status_code != 200:
            raise LoadError(f"root {url}: status {response.status_code}")
        roots += x509.load_pem_x509_certificates(response.content)
    return roots


async def _run(args: argparse.Namespace, run: Run) -> tuple[dict[str, Any], bool]:
    started_run = time.monotonic()
    run.deadline = started_run + args.timeout
    workers = [Worker(run) for _ in range(args.concurrency)]
    accounts = await asyncio.wait_for(asyncio.gather(*(w.register() for w in workers), return_exceptions=True),
                                      max(1.0, run.deadline - time.monotonic()))
    account_errors = [str(a) for a in accounts if isinstance(a, BaseException)]
    workers = [w for w, a in zip(workers, accounts, strict=True) if not isinstance(a, BaseException)]
    for error in account_errors:
        run.stats.fail(f"newAccount: {error}" if not error.startswith("newAccount") else error)

    orders = args.ocsp_certs if args.mode == "ocsp" else args.orders

    async def work(worker: Worker) -> None:
        while run.next_index < orders and time.monotonic() < run.deadline:
            index = run.next_index
            run.next_index += 1
            await worker.order(index)

    cpu_before = cpu_seconds(args.server_pid) if args.server_pid else None
    client_before = _client_cpu()
    started = time.perf_counter()
    timed_out = False
    tasks = [asyncio.create_task(work(w)) for w in workers]
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=max(0.0, run.deadline - time.monotonic()) + 1)
        for task in pending:
            timed_out = True
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(args.server_pid) if args.server_pid else None
    client_cpu = _client_cpu() - client_before

    stats = run.stats
    unfinished = orders - stats.completed - sum(v for k, v in stats.failures.items() if k not in
                                                ("newAccount", "clearTxt"))
    if unfinished > 0:
        timed_out = True
        stats.failures["notFinished"] += unfinished
    server_cpu = None if cpu_before is None or cpu_after is None else round(cpu_after - cpu_before, 3)
    result = {
        "label": args.label,
        "mode": "orders",
        "challenge": args.challenge,
        "directory": args.directory,
        "orders": orders,
        "concurrency": args.concurrency,
        "completed": stats.completed,
        "failures": sum(stats.failures.values()),
        "failuresBy": dict(stats.failures),
        "failureSamples": stats.failure_samples,
        "timedOut": timed_out,
        "seconds": round(elapsed, 3),
        "ordersPerSecond": round(stats.completed / elapsed, 3) if elapsed > 0 else None,
        "flowMs": percentiles(stats.flows),
        "stepsMs": {step: percentiles(stats.steps[step]) for step in ("newNonce", "newAccount", *STEPS)},
        "badNonceRetries": stats.bad_nonce_retries,
        "polls": stats.polls,
        "requests": stats.requests,
        "http01Hits": run.responder.hits,
        "serverPids": args.server_pid,
        "serverCpuSeconds": server_cpu,
        "serverCpuPerOrder": round(server_cpu / stats.completed, 5) if server_cpu is not None and stats.completed
        else None,
        "clientCpuSeconds": round(client_cpu, 3),
        "pollInterval": args.poll_interval,
        "chainVerified": bool(run.roots),
    }
    return result, stats.completed == orders and not stats.failures


# --- --mode nonce and --mode ocsp -----------------------------------------------------------------------------------


async def _measure_requests(args: argparse.Namespace, count: int, one: Any) -> dict[str, Any]:
    """``count`` calls of ``await one(index)`` by ``args.concurrency`` coroutines: timings, failures, server CPU.
    ``one`` raises LoadError (or an httpx error) for a failed request."""
    stats = Stats()
    latencies: list[float] = []
    next_index = 0
    deadline = time.monotonic() + args.timeout

    async def work() -> None:
        nonlocal next_index
        while next_index < count and time.monotonic() < deadline:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            try:
                await one(index)
            except (LoadError, httpx.HTTPError, ValueError) as error:
                stats.fail(str(error) if isinstance(error, LoadError) else f"request: {type(error).__name__}: "
                           f"{error}")
                continue
            latencies.append(time.perf_counter() - started)
            stats.completed += 1

    cpu_before = cpu_seconds(args.server_pid) if args.server_pid else None
    client_before = _client_cpu()
    started = time.perf_counter()
    tasks = [asyncio.create_task(work()) for _ in range(args.concurrency)]
    _done, pending = await asyncio.wait(tasks, timeout=args.timeout + 1)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(args.server_pid) if args.server_pid else None
    client_cpu = _client_cpu() - client_before
    unfinished = count - stats.completed - sum(stats.failures.values())
    if unfinished > 0:
        stats.failures["notFinished"] += unfinished
    server_cpu = None if cpu_before is None or cpu_after is None else round(cpu_after - cpu_before, 3)
    return {
        "measured": count,
        "concurrency": args.concurrency,
        "completed": stats.completed,
        "failures": sum(stats.failures.values()),
        "failuresBy": dict(stats.failures),
        "failureSamples": stats.failure_samples,
        "timedOut": bool(pending) or unfinished > 0,
        "seconds": round(elapsed, 3),
        "requestsPerSecond": round(stats.completed / elapsed, 3) if elapsed > 0 else None,
        "latencyMs": percentiles(latencies),
        "serverPids": args.server_pid,
        "serverCpuSeconds": server_cpu,
        "serverCpuPerRequest": round(server_cpu / stats.completed, 6) if server_cpu is not None and stats.completed
        else None,
        "clientCpuSeconds": round(client_cpu, 3),
    }


async def run_nonces(args: argparse.Namespace, directory: dict[str, Any],
                     http: httpx.AsyncClient) -> tuple[dict[str, Any], bool]:
    """N HEAD newNonce at concurrency C; each must answer 200 with a Replay-Nonce never seen before."""
    url = directory["newNonce"]
    seen: set[str] = set()

    async def one(_index: int) -> None:
        check_loopback(url)
        response = await http.head(url)
        nonce = response.headers.get("Replay-Nonce")
        if response.status_code not in (200, 204) or not nonce:
            raise LoadError(f"newNonce: status {response.status_code}, Replay-Nonce {nonce!r}")
        if nonce in seen:
            raise LoadError(f"newNonce: the nonce {nonce!r} came twice")
        seen.add(nonce)

    measured = await _measure_requests(args, args.orders, one)
    result = {"label": args.label, "mode": "nonce", "directory": args.directory, **measured}
    return result, measured["completed"] == args.orders


def ocsp_request(leaf: x509.Certificate, issuer: x509.Certificate) -> tuple[str, bytes]:
    """The OCSP URL of the leaf's AIA and a DER OCSP request for it (SHA-1 CertID, as OpenSSL sends)."""
    from cryptography.x509 import ocsp

    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        raise LoadError("ocsp: the certificate has no AIA extension") from None
    urls = [d.access_location.value for d in aia if d.access_method == x509.AuthorityInformationAccessOID.OCSP]
    if not urls:
        raise LoadError("ocsp: the certificate's AIA names no OCSP responder")
    check_loopback(urls[0])
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()  # noqa: S303
    return urls[0], request.public_bytes(serialization.Encoding.DER)


def check_ocsp_response(der: bytes, serial: int) -> None:
    from cryptography.x509 import ocsp

    try:
        answer = ocsp.load_der_ocsp_response(der)
    except ValueError as error:
        raise LoadError(f"ocsp: the response does not parse: {error}") from None
    if answer.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise LoadError(f"ocsp: response status {answer.response_status.name}")
    if answer.serial_number != serial:
        raise LoadError(f"ocsp: the response is for serial {answer.serial_number:x}, not {serial:x}")
    if answer.certificate_status != ocsp.OCSPCertStatus.GOOD:
        raise LoadError(f"ocsp: certificate status {answer.certificate_status.name}, not GOOD")


async def run_ocsp(args: argparse.Namespace, run: Run, issuance: dict[str, Any],
                   issued_ok: bool) -> tuple[dict[str, Any], bool]:
    """After the orders of ``_run`` (``--ocsp-certs`` of them): N OCSP POSTs, round robin over the certificates."""
    summary = {key: issuance[key] for key in ("completed", "failures", "failuresBy", "failureSamples", "seconds")}
    if not run.issued:
        return {"label": args.label, "mode": "ocsp", "directory": args.directory, "issuance": summary,
                "error": "no certificate was issued"}, False
    requests = [(*ocsp_request(leaf, issuer), leaf.serial_number) for leaf, issuer in run.issued]

    async def one(index: int) -> None:
        url, body, serial = requests[index % len(requests)]
        response = await run.http.post(url, content=body, headers={"Content-Type": "application/ocsp-request"})
        if response.status_code != 200:
            raise LoadError(f"ocsp: status {response.status_code}")
        check_ocsp_response(response.content, serial)

    measured = await _measure_requests(args, args.orders, one)
    result = {"label": args.label, "mode": "ocsp", "directory": args.directory, "ocspUrl": requests[0][0],
              "certificates": len(requests), "issuance": summary, **measured}
    return result, issued_ok and measured["completed"] == args.orders


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="The ACME directory URL (loopback only).")
    parser.add_argument("--mode", choices=("orders", "nonce", "ocsp"), default="orders",
                        help="orders: full ACME orders (default); nonce: HEAD newNonce only; ocsp: OCSP POSTs for "
                             "certificates issued first.")
    parser.add_argument("-n", "--orders", type=int, default=100,
                        help="Orders to run (default: 100); requests with --mode nonce/ocsp.")
    parser.add_argument("--challenge", choices=("http-01", "dns-01"), default="http-01",
                        help="The challenge answered (default: http-01). dns-01 needs --dns-port or --challtestsrv.")
    parser.add_argument("--challtestsrv", metavar="URL",
                        help="pebble-challtestsrv's management URL: dns-01 TXT records are set there (set-txt, "
                             "clear-txt) instead of in --dns-port's responder.")
    parser.add_argument("--ocsp-certs", type=int, default=4,
                        help="--mode ocsp: certificates issued first, then asked for round robin (default: 4).")
    parser.add_argument("-c", "--concurrency", type=int, default=4, help="Worker coroutines, one account each.")
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds for the whole run (default: 120).")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="Seconds for one HTTP request.")
    parser.add_argument("--poll-interval", type=float, default=0.05,
                        help="Seconds between polls of an authorization or order (default: 0.05; Retry-After is "
                             "not followed, so that every server is polled alike).")
    parser.add_argument("--http01-port", type=int, default=0,
                        help="Port of this client's HTTP-01 responder (needed for http-01 orders).")
    parser.add_argument("--http01-host", default="127.0.0.1", help="Address of the HTTP-01 responder.")
    parser.add_argument("--dns-port", type=int, default=0,
                        help="Run a DNS responder on 127.0.0.1:PORT (UDP+TCP) answering the ordered names.")
    parser.add_argument("--ca-file", help="CA bundle for the server's HTTPS listener (e.g. pebble.minica.pem).")
    parser.add_argument("--root-file", action="append", default=[], help="PEM root(s) to verify chains against.")
    parser.add_argument("--root-url", action="append", default=[], help="URL of a PEM root (Pebble: /roots/0).")
    parser.add_argument("--server-pid", type=int, action="append", default=[],
                        help="A server process whose CPU time (with its children) is measured; repeatable.")
    parser.add_argument("--label", default="", help="A name for the server in the output.")
    args = parser.parse_args(argv)
    for name in ("orders", "concurrency", "ocsp_certs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.orders > 1_000_000 or args.concurrency > 1000 or args.ocsp_certs > 1000:
        parser.error("--orders is at most 1000000, --concurrency and --ocsp-certs at most 1000")
    if args.mode != "nonce" and args.challenge == "http-01" and not 0 < args.http01_port < 65536:
        parser.error("http-01 orders need --http01-port")
    if args.mode != "nonce" and args.challenge == "dns-01" and not (args.dns_port or args.challtestsrv):
        parser.error("dns-01 orders need --dns-port (our DNS responder) or --challtestsrv (Pebble's)")
    if args.challtestsrv and not is_loopback_host(urlsplit(args.challtestsrv).hostname):
        parser.error(f"--challtestsrv {args.challtestsrv!r} is not on a loopback address")
    if args.timeout <= 0 or args.timeout > 3600:
        parser.error("--timeout must be between 0 and 3600 seconds")
    if not is_loopback_host(args.http01_host):
        parser.error("--http01-host must be a loopback address")
    if not is_loopback_host(urlsplit(args.directory).hostname):
        parser.error(f"the directory {args.directory!r} is not on a loopback address")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result, ok = asyncio.run(run_load(args))
    except (LoadError, httpx.HTTPError, OSError, ValueError, KeyError) as error:
        print(json.dumps({"label": args.label, "directory": args.directory, "error": f"{type(error).__name__}: "
                          f"{error}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    sys.exit(main())
