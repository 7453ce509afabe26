"""Pebble and pki-server side by side: the same ACME load (benchmarks/acme_load.py) against both, in one run.

It starts, on loopback only and each in a temporary directory:

- Pebble (Debian package ``pebble``) with a TLS certificate made here for its listener (its CA is
  written to ``pebble.minica.pem``), PEBBLE_VA_NOSLEEP=1 and PEBBLE_WFE_NONCEREJECT=0, and
  ``pebble-challtestsrv`` as its DNS server (every name is 127.0.0.1; its HTTP-01 listeners are off);
- pki-server embedded: its own PKI_DATA_DIR, ``pki-server init``, ``pki-server serve`` (SQLite, the ACME
  worker in the same process), validating against the load client's HTTP-01 responder and resolving
  through the load client's DNS responder (PKI_ACME_DNS_RESOLVERS).

Then for each concurrency (default 1, 4, 16) it runs N HTTP-01 orders against Pebble, then against
pki-server (a few warm-up orders first), and prints a table and the ratios pki-server / Pebble.

    python benchmarks/compare.py                 # N=100 per scenario, C = 1, 4, 16
    python benchmarks/compare.py -n 50 -c 4 -c 16 --json results.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOAD = HERE / "acme_load.py"


def free_port(udp_too: bool = False) -> int:
    for _attempt in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port on 127.0.0.1")


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, verify: Any = True, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited ({process.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, verify=verify, timeout=1, trust_env=False).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {seconds:.0f} s: {log.read_text()[-2000:]}")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def make_minica(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for 127.0.0.1/localhost signed by it: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "benchmark minica")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "pebble.minica.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class Target:
    """A running server and what the load client needs to know about it."""
    label: str
    directory: str
    pids: list[int]
    load_args: list[str] = field(default_factory=list)


@contextlib.contextmanager
def pebble(workdir: Path, http01_port: int) -> Iterator[Target]:
    tools = {tool: shutil.which(tool) for tool in ("pebble", "pebble-challtestsrv")}
    for tool, path in tools.items():
        if path is None:
            raise RuntimeError(f"{tool} is not installed (Debian: apt-get install -y pebble)")
    workdir.mkdir()
    ca_file, cert_file, key_file = make_minica(workdir)
    port, management, dns_port, challtest_management = free_port(), free_port(), free_port(True), free_port()
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{port}", "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert_file), "privateKey": str(key_file),
        "httpPort": http01_port, "tlsPort": free_port(), "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}
    (workdir / "pebble-config.json").write_text(json.dumps(config, indent=2))
    env = {key: value for key, value in os.environ.items() if not key.startswith("PEBBLE_")}
    env.update({"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
    challtest_log, pebble_log = workdir / "challtestsrv.log", workdir / "pebble.log"
    challtest = server = None
    try:
        with challtest_log.open("wb") as log:
            challtest = subprocess.Popen(  # noqa: S603 (our own argument list)
                [str(tools["pebble-challtestsrv"]), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-http01", "",
                 "-https01", "", "-tlsalpn01", "", "-dns01", f"127.0.0.1:{dns_port}",
                 "-management", f"127.0.0.1:{challtest_management}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
        with pebble_log.open("wb") as log:
            server = subprocess.Popen(  # noqa: S603
                [str(tools["pebble"]), "-config", str(workdir / "pebble-config.json"),
                 "-dnsserver", f"127.0.0.1:{dns_port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
        directory = f"https://127.0.0.1:{port}/dir"
        wait_for(directory, server, pebble_log, verify=str(ca_file))
        yield Target("pebble", directory, [server.pid],
                     ["--ca-file", str(ca_file), "--root-url", f"https://127.0.0.1:{management}/roots/0"])
    finally:
        stop(server)
        stop(challtest)


@contextlib.contextmanager
def pki_server(workdir: Path, http01_port: int, dns_port: int) -> Iterator[Target]:
    workdir.mkdir()
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PKI_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update({
        "PKI_DATA_DIR": str(workdir),
        "PKI_PORT": str(port),
        "PKI_ACME_HTTP01_PORT": str(http01_port),
        "PKI_ACME_DNS_RESOLVERS": f"127.0.0.1:{dns_port}",
        "PKI_ACME_VALIDATION_DENY_NETWORKS": "none",  # loopback is denied by default; we validate on loopback
    })
    command = [sys.executable, "-m", "pki_server"]
    subprocess.run([*command, "init"], env=env, cwd=workdir, check=True,  # noqa: S603
                   capture_output=True, timeout=120)
    subprocess.run([*command, "dump_ca", "root", str(workdir / "root.pem")],  # noqa: S603
                   env=env, cwd=workdir, check=True, capture_output=True, timeout=60)
    log_path = workdir / "serve.log"
    server = None
    try:
        with log_path.open("wb") as log:
            server = subprocess.Popen([*command, "serve", "--port", str(port)],  # noqa: S603
                                      env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        directory = f"http://127.0.0.1:{port}/acme/directory"
        wait_for(directory, server, log_path)
        yield Target("pki-server", directory, [server.pid],
                     ["--dns-port", str(dns_port), "--root-file", str(workdir / "root.pem")])
    finally:
        stop(server)


def run_load(target: Target, orders: int, concurrency: int, http01_port: int, timeout: float,
             poll_interval: float) -> dict[str, Any]:
    command = [sys.executable, str(LOAD), target.directory, "-n", str(orders), "-c", str(concurrency),
               "--http01-port", str(http01_port), "--timeout", str(timeout), "--poll-interval", str(poll_interval),
               "--label", target.label, *target.load_args]
    for pid in target.pids:
        command += ["--server-pid", str(pid)]
    result = subprocess.run(command, capture_output=True, text=True,  # noqa: S603
                            timeout=timeout + 60, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"label": target.label, "error": f"no output (exit {result.returncode}): {result.stderr[-1000:]}"}
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ratio(a: Any, b: Any) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def print_table(results: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> None:
    header = (f"{'C':>3} {'server':<11} {'done':>5} {'fail':>4} {'orders/s':>9} {'CPU ms/order':>12} "
              f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'badNonce':>8}")
    print(header)
    print("-" * len(header))
    for concurrency, peb, pki in results:
        for data in (peb, pki):
            if "error" in data:
                print(f"{concurrency:>3} {data['label']:<11} error: {data['error']}")
                continue
            cpu = data.get("serverCpuPerOrder")
            flow = data["flowMs"]
            print(f"{concurrency:>3} {data['label']:<11} {data['completed']:>5} {data['failures']:>4} "
                  f"{fmt(data['ordersPerSecond'], 2):>9} {fmt(cpu * 1000 if cpu else None):>12} "
                  f"{fmt(flow['p50']):>8} {fmt(flow['p95']):>8} {fmt(flow['p99']):>8} "
                  f"{data['badNonceRetries']:>8}")
    print()
    print("Ratios pki-server / Pebble (orders/s: higher is better; CPU/order and p95: lower is better)")
    print(f"{'C':>3} {'orders/s':>9} {'CPU/order':>10} {'p95 flow':>9}")
    for concurrency, peb, pki in results:
        if "error" in peb or "error" in pki:
            print(f"{concurrency:>3} {'-':>9} {'-':>10} {'-':>9}")
            continue
        print(f"{concurrency:>3} {ratio(pki['ordersPerSecond'], peb['ordersPerSecond']):>9} "
              f"{ratio(pki['serverCpuPerOrder'], peb['serverCpuPerOrder']):>10} "
              f"{ratio(pki['flowMs']['p95'], peb['flowMs']['p95']):>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--orders", type=int, default=100, help="Orders per scenario (default: 100).")
    parser.add_argument("-c", "--concurrency", type=int, action="append",
                        help="Concurrency of a scenario; repeatable (default: 1, 4, 16).")
    parser.add_argument("--warmup", type=int, default=5, help="Orders run first against each server, not counted.")
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds for one scenario (default: 120).")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="Passed to acme_load.py (default: 0.05).")
    parser.add_argument("--json", metavar="FILE", help="Also write every scenario's JSON line to FILE.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (logs, databases).")
    args = parser.parse_args(argv)
    concurrencies = args.concurrency or [1, 4, 16]
    if args.orders < 1 or any(c < 1 for c in concurrencies) or args.warmup < 0:
        parser.error("--orders and --concurrency must be at least 1, --warmup at least 0")

    workdir = Path(tempfile.mkdtemp(prefix="pki-bench-"))
    http01_port, dns_port = free_port(), free_port(udp_too=True)
    results: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    lines: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        with pebble(workdir / "pebble", http01_port) as peb, \
                pki_server(workdir / "pki-server", http01_port, dns_port) as pki:
            for target in (peb, pki):
                if args.warmup:
                    warm = run_load(target, args.warmup, 1, http01_port, args.timeout, args.poll_interval)
                    if warm.get("completed") != args.warmup:
                        print(f"warm-up against {target.label} failed: {json.dumps(warm)[:1500]}", file=sys.stderr)
                        return 1
            for concurrency in concurrencies:
                pair = []
                for target in (peb, pki):
                    data = run_load(target, args.orders, concurrency, http01_port, args.timeout, args.poll_interval)
                    lines.append(data)
                    pair.append(data)
                    print(f"# C={concurrency} {target.label}: {data.get('ordersPerSecond', data.get('error'))} "
                          f"orders/s, {data.get('failures', '?')} failures", file=sys.stderr, flush=True)
                results.append((concurrency, pair[0], pair[1]))
    finally:
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(f"HTTP-01, {args.orders} orders per scenario, {os.cpu_count()} CPUs (client included), "
          f"{time.monotonic() - started:.0f} s in all")
    print_table(results)
    failed = any("error" in d or d.get("failures") for pair in results for d in pair[1:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
