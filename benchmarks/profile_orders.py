"""Where an embedded pki-server spends its CPU per ACME order: py-spy samples of `serve` while
acme_load.py runs HTTP-01 orders, added up by what the sampled code was doing.

    python benchmarks/profile_orders.py -n 300 -c 16

It starts an embedded server (benchmarks/servers.py), runs a warm-up, then samples the server with
``py-spy record --format raw`` (100 Hz by default, py-spy pausing the process for each sample)
during the measured run. Each sample is put in the first bucket of BUCKETS whose marker appears in
its stack; samples of the event loop waiting in libuv (the bare ``Runner.run`` frame) are idle
time, and left out. A bucket's share of the non-idle samples, times the run's CPU per order
(measured from /proc, as acme_load.py does), gives its milliseconds per order. Needs py-spy
(``pip install py-spy``); output: a table, and with --json the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from servers import free_port, pki_embedded, pki_scaled  # noqa: E402

LOAD = HERE / "acme_load.py"

# (bucket, markers): the first bucket one of whose markers is in a sample's stack takes the sample.
# Issuance is matched before the finalize request that runs it; validation before the worker.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("issuance: sign and store the certificate (create_cert)", ("CertificateManager.create_cert",)),
    ("issuance: the order's rows (issue, claim)", ("issue (pki_server/acme/orders.py",)),
    ("finalize: CSR checks, order update", ("FinalizeHandler.post",)),
    ("newOrder: authorizations, challenges, order rows", ("NewOrderHandler.post",)),
    ("authz and challenge requests (incl. polls)", ("AuthorizationHandler.post", "ChallengeHandler.post")),
    ("certificate download", ("CertificateHandler.post",)),
    ("nonce: spend it (one INSERT)", ("redeem_in_database",)),
    ("JWS: signature check", ("verify (pki_server/acme/jose.py",)),
    ("JWS: parse, account lookup", ("AcmeHandler.authenticate", "jose.py")),
    ("other request work in the database thread", ("AcmeHandler._process",)),
    ("validation: CAA lookups (DNS)", ("check_caa",)),
    ("validation: address lookups (DNS)", ("_addresses", "resolve_addresses")),
    ("validation: HTTP-01 fetch", ("validate_http01",)),
    ("validation: claim and record the result (database)", ("_claim_challenge", "finish_validation")),
    ("worker: sweeper, CRL/OCSP refresh", ("_sweep",)),
    ("HTTP server: parse, route, respond (uvicorn, channels)", (
        "httptools_impl.py", "AcmeHandler.send", "AcmeHandler.run", "URLRouter", "ProtocolTypeRouter")),
    ("thread hops (dbthread, asgiref)", ("pki_server/dbthread.py", "asgiref/sync.py")),
    ("dashboard events", ("dashboard/events.py",)),
]
# Leaf frames of a thread with nothing to do: the event loop waiting in libuv, a thread-pool thread
# waiting for work (py-spy does not always tell that wait from running).
IDLE = ("Runner.run (asyncio/runners.py", "_worker (concurrent/futures/thread.py:81)")
# Not a real call chain: redis-py's _send_packed_command is only ever awaited by send_packed_command,
# so it cannot be the outermost coroutine under the event loop. py-spy reports this stack, always at
# the same line, for a loop waiting in libuv after its last step wrote to Redis (about as many
# samples in the mostly idle worker as in each web process): counted as idle.
STALE = ("Runner.run (asyncio/runners.py", "AbstractConnection._send_packed_command (redis/asyncio/connection.py")


def is_idle(frames: list[str]) -> bool:
    if frames[-1].startswith(IDLE):
        return True
    return len(frames) >= 3 and frames[-3].startswith(STALE[0]) and frames[-2].startswith(STALE[1])


def bucket_of(stack: str) -> str:
    for name, markers in BUCKETS:
        if any(marker in stack for marker in markers):
            return name
    return "other (event loop, logging, ...)"


def read_samples(raw: Path) -> tuple[Counter[str], int]:
    buckets: Counter[str] = Counter()
    idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        if is_idle(stack.split(";")):
            idle += int(count)
        else:
            buckets[bucket_of(stack)] += int(count)
    return buckets, idle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--orders", type=int, default=300)
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second (default: 100)")
    parser.add_argument("--json", type=Path, help="also write the figures as one JSON line to FILE")
    parser.add_argument("--topology", choices=["embedded", "scaled"], default="embedded",
                        help="scaled: two web processes and a worker on PostgreSQL and Redis, each sampled")
    parser.add_argument("--gil", action="store_true",
                        help="only samples holding the GIL (py-spy --gil): Python's own CPU, without waits on "
                             "sockets or the disk, and without C code that lets the GIL go (SQLite, libpq)")
    parser.add_argument("--raw", type=Path, help="also copy py-spy's raw samples (collapsed stacks) to FILE")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        parser.error("py-spy is not installed (pip install py-spy)")

    http01, dns = free_port(), free_port(udp_too=True)
    with tempfile.TemporaryDirectory(prefix="pki-profile-") as tmp:
        server = (pki_embedded(Path(tmp) / "server", http01, dns) if args.topology == "embedded"
                  else pki_scaled(Path(tmp) / "server", http01, dns))
        with server as target:
            def load(count: int) -> dict[str, object]:
                command = [sys.executable, str(LOAD), target.directory, "-n", str(count), "-c", str(args.concurrency),
                           "--http01-port", str(http01), *target.load_args,
                           *(arg for pid in target.pids for arg in ("--server-pid", str(pid)))]
                output = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
                lines = [line for line in output.stdout.splitlines() if line.startswith("{")]
                if not lines:
                    raise SystemExit(f"acme_load.py gave no result: {output.stderr[-2000:]}")
                return dict(json.loads(lines[-1]))

            load(20)  # warm-up
            raws = [Path(tmp) / f"samples-{pid}.txt" for pid in target.pids]
            spy_args = ["-r", str(args.rate), "-f", "raw", *(["--gil"] if args.gil else [])]
            spies = [subprocess.Popen([py_spy, "record", "-p", str(pid), *spy_args, "-o", str(raw)],  # noqa: S603
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for pid, raw in zip(target.pids, raws, strict=True)]
            try:
                result = load(args.orders)
            finally:
                for spy in spies:
                    spy.send_signal(signal.SIGINT)
                for spy in spies:
                    spy.wait(timeout=60)
        buckets, idle = Counter(), 0
        for raw in raws:
            more, more_idle = read_samples(raw)
            buckets.update(more)
            idle += more_idle
        if args.raw:
            with args.raw.open("w") as out:
                for raw in raws:
                    out.write(raw.read_text())

    busy = sum(buckets.values())
    cpu_ms = float(result["serverCpuPerOrder"]) * 1000  # type: ignore[arg-type]
    rows = [(name, count / busy, count / busy * cpu_ms) for name, count in buckets.most_common()]
    print(f"{result['completed']} orders at C={args.concurrency}: {result['ordersPerSecond']} orders/s, "
          f"{cpu_ms:.1f} ms of server CPU per order (py-spy attached: it slows the server, not the shares); "
          f"{busy} busy samples, {idle} idle")
    print(f"{'where':<58} {'share':>6} {'ms/order':>9}")
    for name, share, ms in rows:
        print(f"{name:<58} {share * 100:>5.1f}% {ms:>9.2f}")
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps({"cpuMsPerOrder": cpu_ms, "buckets": {n: round(s, 4) for n, s, _ in rows},
                                  "load": result}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
