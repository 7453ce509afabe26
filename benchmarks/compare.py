"""Pebble and pki-server side by side: the same ACME load (benchmarks/acme_load.py) against each, in one run.

The servers (benchmarks/servers.py), all on loopback and in a temporary directory: Pebble (with
pebble-challtestsrv), pki-server ``embedded`` (SQLite, one ``serve`` with its in-process worker) and pki-server
``scaled`` (PostgreSQL + Redis, two ``serve --no-worker`` and one ``worker`` behind a round-robin balancer).

For each challenge (http-01, dns-01) and concurrency C (1, 4, 16) it runs N orders against Pebble and then each
pki-server topology (after a few warm-up orders against each), and prints one table with the ratios
pki-server / Pebble. Optional extras: ``--modes nonce,ocsp`` (requests only, see acme_load.py), ``--big-db``
(C=16 HTTP-01 on an embedded database filled with 100,000 orders and certificates, against the same on an
empty one) and ``--memory N`` (the embedded server's resident memory through N orders at C=16).

    python benchmarks/compare.py                                    # everything but the extras, N=100
    python benchmarks/compare.py -n 20 -c 16 --topology embedded --challenge dns-01
    python benchmarks/compare.py --topology none --big-db --memory 10000 --json results.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servers import Target, free_port, pebble, pki_embedded, pki_scaled, rss_bytes

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOAD = HERE / "acme_load.py"
TOPOLOGIES = ("embedded", "scaled")
CHALLENGES = ("http-01", "dns-01")
MODES = ("orders", "nonce", "ocsp")
MB = 1024 * 1024


class Bench:
    """The ports the load client listens on, the options, and every result line so far."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.http01_port, self.dns_port = free_port(), free_port(udp_too=True)
        self.lines: list[dict[str, Any]] = []

    def load(self, target: Target, count: int, concurrency: int, *extra: str, mode: str = "orders",
             challenge: str = "http-01", scenario: str = "", record: bool = True) -> dict[str, Any]:
        """One run of acme_load.py against ``target``; its JSON line (with ``scenario`` and ``server``)."""
        args = self.args
        command = [sys.executable, str(LOAD), target.directory, "-n", str(count), "-c", str(concurrency),
                   "--mode", mode, "--challenge", challenge, "--http01-port", str(self.http01_port),
                   "--timeout", str(args.timeout), "--poll-interval", str(args.poll_interval),
                   "--label", target.label, *target.load_args, *extra]
        for pid in target.pids:
            command += ["--server-pid", str(pid)]
        result = subprocess.run(command, capture_output=True, text=True,  # noqa: S603
                                timeout=args.timeout + 120, cwd=ROOT)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        data: dict[str, Any] = json.loads(lines[-1]) if lines else {
            "label": target.label, "error": f"no output (exit {result.returncode}): {result.stderr[-1000:]}"}
        data.update({"scenario": scenario, "server": target.label})
        if record:
            self.lines.append(data)
        rate = data.get("ordersPerSecond", data.get("requestsPerSecond", data.get("error")))
        print(f"# {scenario} {target.label}: {rate} per second, {data.get('failures', '?')} failures",
              file=sys.stderr, flush=True)
        return data

    def warm_up(self, target: Target) -> None:
        if self.args.warmup:
            for challenge in self.args.challenges:
                warm = self.load(target, self.args.warmup, 1, challenge=challenge, scenario="warm-up", record=False)
                if warm.get("completed") != self.args.warmup:
                    raise RuntimeError(f"warm-up against {target.label} failed: {json.dumps(warm)[:1500]}")


# --- the scenarios ----------------------------------------------------------------------------------------------


def main_scenarios(bench: Bench) -> None:
    """For each challenge and C: Pebble and each topology; then the request-only modes."""
    args = bench.args
    if not args.topologies and not args.pebble:
        return
    with contextlib.ExitStack() as stack:
        targets: list[Target] = []
        if args.pebble:
            targets.append(stack.enter_context(pebble(bench.workdir / "pebble", bench.http01_port)))
        if "embedded" in args.topologies:
            targets.append(stack.enter_context(
                pki_embedded(bench.workdir / "embedded", bench.http01_port, bench.dns_port)))
        if "scaled" in args.topologies:
            targets.append(stack.enter_context(pki_scaled(bench.workdir / "scaled", bench.http01_port,
                                                          bench.dns_port, per_request=args.balancer_per_request)))
        for target in targets:
            bench.warm_up(target)
        if "orders" in args.modes:
            for challenge in args.challenges:
                for concurrency in args.concurrencies:
                    for _ in range(args.repeat):  # rounds: every server once, so a slow minute hits all of them
                        for target in targets:
                            bench.load(target, args.orders, concurrency, challenge=challenge,
                                       scenario=f"{challenge} C={concurrency}")
        for mode in ("nonce", "ocsp"):
            if mode in args.modes:
                for concurrency in args.concurrencies:
                    for target in targets:
                        if mode == "ocsp" and target.label == "pebble":
                            continue  # our Pebble runs without an OCSP responder
                        bench.load(target, args.requests, concurrency, mode=mode, scenario=f"{mode} C={concurrency}")


def big_db(bench: Bench) -> None:
    """C=16 HTTP-01 on an empty embedded database and on one filled with --big-db-size orders, both
    servers up at once and run alternately (--repeat rounds), so that the machine's drift hits both."""
    args = bench.args
    results: dict[str, list[dict[str, Any]]] = {"embedded-empty": [], "embedded-big": []}
    with contextlib.ExitStack() as stack:
        targets = [stack.enter_context(pki_embedded(bench.workdir / label, bench.http01_port, bench.dns_port,
                                                    label=label, fill=fill))
                   for label, fill in (("embedded-empty", 0), ("embedded-big", args.big_db_size))]
        for target in targets:
            bench.warm_up(target)
        for _ in range(args.repeat):
            for target in targets:
                results[target.label].append(
                    bench.load(target, args.big_db_orders, 16, scenario="big-db http-01 C=16"))
    empty, big = results["embedded-empty"], results["embedded-big"]

    def ratio(value: Callable[[dict[str, Any]], Any]) -> float | None:
        return _ratio(_median(big, value), _median(empty, value))

    bench.lines.append({"scenario": "big-db", "mode": "big-db", "fill": args.big_db_size,
                        "orders": args.big_db_orders, "concurrency": 16, "rounds": args.repeat,
                        "ordersPerSecondRatio": ratio(lambda d: d.get("ordersPerSecond")),
                        "cpuPerOrderRatio": ratio(lambda d: d.get("serverCpuPerOrder")),
                        "p95FlowRatio": ratio(_p95)})


def memory(bench: Bench) -> None:
    """N orders at C=16 in 20 chunks against a fresh embedded server; its RSS after each chunk and at most."""
    args = bench.args
    total, chunks = args.memory, min(20, args.memory)
    with pki_embedded(bench.workdir / "embedded-memory", bench.http01_port, bench.dns_port,
                      label="embedded-memory") as target:
        pid = target.pids[0]
        bench.warm_up(target)
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                value = rss_bytes(pid)
                if value is not None:
                    samples.append(value)
                done.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        start_rss = rss_bytes(pid)
        sampler.start()
        after: list[dict[str, Any]] = []
        completed = failures = 0
        started = time.monotonic()
        try:
            for chunk in range(chunks):
                count = total // chunks + (1 if chunk < total % chunks else 0)
                data = bench.load(target, count, 16, scenario=f"memory chunk {chunk + 1}/{chunks}", record=False)
                completed += data.get("completed", 0)
                failures += data.get("failures", 1)
                rss = rss_bytes(pid)
                after.append({"orders": completed, "rssMb": round(rss / MB, 1) if rss else None,
                              "ordersPerSecond": data.get("ordersPerSecond")})
        finally:
            done.set()
            sampler.join(timeout=5)
    rss_values = [a["rssMb"] for a in after if a["rssMb"] is not None]
    half = rss_values[len(rss_values) // 2:]
    bench.lines.append({
        "scenario": "memory", "mode": "memory", "server": "embedded", "orders": total, "concurrency": 16,
        "completed": completed, "failures": failures, "seconds": round(time.monotonic() - started, 1),
        "startRssMb": round(start_rss / MB, 1) if start_rss else None,
        "maxRssMb": round(max(samples) / MB, 1) if samples else None, "afterChunks": after,
        "growthSecondHalfMb": round(half[-1] - half[0], 1) if len(half) > 1 else None,
    })


# --- the table ----------------------------------------------------------------------------------------------------


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if a and b else None


def _p95(data: dict[str, Any]) -> Any:
    return (data.get("flowMs") or {}).get("p95")


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


#: A table column: title, width, and the cell of one run's JSON line.
Column = tuple[str, int, Callable[[dict[str, Any]], str]]
_COUNTS: list[Column] = [("done", 5, lambda d: str(d["completed"])), ("fail", 4, lambda d: str(d["failures"]))]


def _percentiles(key: str, digits: int) -> list[Column]:
    return [(f"{p} ms", 8, lambda d, p=p: fmt(d[key][p], digits)) for p in ("p50", "p95", "p99")]


def _per(key: str, scale: float) -> Callable[[dict[str, Any]], Any]:
    return lambda d: d.get(key) * scale if d.get(key) else None


ORDER_COLUMNS: list[Column] = [
    *_COUNTS, ("orders/s", 9, lambda d: fmt(d["ordersPerSecond"], 2)),
    ("CPU ms/order", 12, lambda d: fmt(_per("serverCpuPerOrder", 1000)(d))),
    *_percentiles("flowMs", 1), ("badNonce", 8, lambda d: str(d["badNonceRetries"])),
]
REQUEST_COLUMNS: list[Column] = [
    *_COUNTS, ("req/s", 9, lambda d: fmt(d["requestsPerSecond"], 1)),
    ("CPU us/req", 12, lambda d: fmt(_per("serverCpuPerRequest", 1e6)(d), 0)),
    *_percentiles("latencyMs", 2),
]


def _print_runs(runs: list[dict[str, Any]], columns: list[Column]) -> None:
    if not runs:
        return
    header = " ".join([f"{'scenario':<22}", f"{'server':<15}", *(f"{title:>{width}}" for title, width, _ in columns)])
    print(header)
    print("-" * len(header))
    for data in runs:
        if "error" in data:
            print(f"{data['scenario']:<22} {data['server']:<15} error: {data['error'][:200]}")
            continue
        print(" ".join([f"{data['scenario']:<22}", f"{data['server']:<15}",
                        *(f"{cell(data):>{width}}" for _, width, cell in columns)]))
    print()


def print_table(lines: list[dict[str, Any]]) -> None:
    runs = [d for d in lines if "server" in d and d.get("mode") not in ("memory", "big-db")]  # not summaries
    _print_runs([d for d in runs if d.get("mode", "orders") == "orders"], ORDER_COLUMNS)
    _print_runs([d for d in runs if d.get("mode") in ("nonce", "ocsp")], REQUEST_COLUMNS)
    print_ratios(lines)


def _median(runs: list[dict[str, Any]], value: Callable[[dict[str, Any]], Any]) -> Any:
    values = sorted(v for v in map(value, runs) if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def print_ratios(lines: list[dict[str, Any]]) -> None:
    """Ratios to Pebble (or to the empty database) of each scenario; with --repeat, of the runs' medians."""
    by_scenario: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for data in lines:
        if "server" in data and "error" not in data and data.get("mode") not in ("memory", "big-db"):
            by_scenario.setdefault(data["scenario"], {}).setdefault(data["server"], []).append(data)
    rows = []
    repeated = False
    for scenario, servers in by_scenario.items():
        base_name = "pebble" if "pebble" in servers else "embedded-empty" if "embedded-empty" in servers else None
        if base_name is None:
            continue
        base = servers[base_name]
        for server, runs in servers.items():
            if server == base_name:
                continue
            repeated = repeated or len(runs) > 1 or len(base) > 1
            if runs[0].get("mode") in ("nonce", "ocsp"):
                metrics: list[Callable[[dict[str, Any]], Any]] = [
                    lambda d: d["requestsPerSecond"], lambda d: d["serverCpuPerRequest"],
                    lambda d: d["latencyMs"]["p95"]]
            else:
                metrics = [lambda d: d["ordersPerSecond"], lambda d: d["serverCpuPerOrder"], _p95]
            rows.append((scenario, f"{server}/{base_name}",
                         *(_ratio(_median(runs, metric), _median(base, metric)) for metric in metrics)))
    if rows:
        print("Ratios (rate: higher is better; CPU per order/request and p95: lower is better)"
              + ("; of each server's median over the rounds" if repeated else ""))
        print(f"{'scenario':<22} {'servers':<28} {'rate':>7} {'CPU':>7} {'p95':>7}")
        for scenario, servers_, rate, cpu, p95 in rows:
            print(f"{scenario:<22} {servers_:<28} {fmt(rate, 2):>7} {fmt(cpu, 2):>7} {fmt(p95, 2):>7}")
        print()
    for data in lines:
        if data.get("mode") == "big-db":
            print(f"Big database ({data['fill']} orders and certificates) / empty, C=16 HTTP-01: orders/s "
                  f"{fmt(data['ordersPerSecondRatio'], 2)}x, CPU per order {fmt(data['cpuPerOrderRatio'], 2)}x, "
                  f"p95 flow {fmt(data['p95FlowRatio'], 2)}x")
        if data.get("mode") == "memory":
            trail = ", ".join(f"{a['rssMb']}" for a in data["afterChunks"])
            print(f"Memory (embedded, {data['orders']} orders at C=16, {data['failures']} failures): RSS "
                  f"{data['startRssMb']} MB at the start, max {data['maxRssMb']} MB; after each chunk (MB): {trail}")


# --- main ---------------------------------------------------------------------------------------------------------


def _choices(text: str, allowed: tuple[str, ...], option: str, parser: argparse.ArgumentParser) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip() and v.strip() != "none"]
    for value in values:
        if value not in allowed:
            parser.error(f"{option}: {value!r} is not one of {', '.join(allowed)}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--orders", type=int, default=100, help="Orders per scenario (default: 100).")
    parser.add_argument("-c", "--concurrency", action="append",
                        help="Concurrencies, comma-separated or repeated (default: 1,4,16).")
    parser.add_argument("--topology", default="embedded,scaled",
                        help="pki-server topologies: embedded, scaled, or none (default: embedded,scaled).")
    parser.add_argument("--challenge", default="http-01,dns-01", help="Challenges (default: http-01,dns-01).")
    parser.add_argument("--modes", default="orders", help="orders, nonce, ocsp, comma-separated (default: orders).")
    parser.add_argument("--requests", type=int, default=2000, help="Requests per nonce/ocsp scenario (default: 2000).")
    parser.add_argument("--no-pebble", dest="pebble", action="store_false", help="Leave Pebble out.")
    parser.add_argument("--balancer-per-request", action="store_true",
                        help="scaled: balance every request, not every connection (one request per connection).")
    parser.add_argument("--big-db", action="store_true",
                        help="Also C=16 HTTP-01 on an embedded database of --big-db-size orders and certificates, "
                             "against the same on an empty one.")
    parser.add_argument("--big-db-size", type=int, default=100_000, help="Orders and certificates (default: 100000).")
    parser.add_argument("--big-db-orders", type=int, help="Orders of the --big-db runs (default: -n).")
    parser.add_argument("--memory", type=int, metavar="N", default=0,
                        help="Also N orders at C=16 against a fresh embedded server, watching its memory.")
    parser.add_argument("--repeat", type=int, default=1, metavar="K",
                        help="Run each order scenario K times, every server once per round; ratios of the medians.")
    parser.add_argument("--warmup", type=int, default=5, help="Orders run first against each server, not counted.")
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds for one load run (default: 120).")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="Passed to acme_load.py (default: 0.05).")
    parser.add_argument("--json", metavar="FILE", help="Also write every JSON line to FILE.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (logs, databases).")
    args = parser.parse_args(argv)
    try:
        args.concurrencies = [int(c) for text in (args.concurrency or ["1,4,16"]) for c in text.split(",") if c]
    except ValueError:
        parser.error("--concurrency takes whole numbers")
    args.topologies = _choices(args.topology, TOPOLOGIES, "--topology", parser)
    args.challenges = _choices(args.challenge, CHALLENGES, "--challenge", parser) or ["http-01"]
    args.modes = _choices(args.modes, MODES, "--modes", parser)
    args.big_db_orders = args.big_db_orders or args.orders
    if min(args.orders, args.requests, args.big_db_orders, args.repeat, *args.concurrencies) < 1 or args.warmup < 0:
        parser.error("--orders, --requests, --big-db-orders, --repeat and --concurrency must be at least 1, "
                     "--warmup at least 0")
    if args.big_db_size < 1 or args.memory < 0 or args.memory > 1_000_000:
        parser.error("--big-db-size must be at least 1 and --memory between 0 and 1000000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pki-bench-"))
    bench = Bench(args, workdir)
    started = time.monotonic()
    status = 0
    try:
        main_scenarios(bench)
        if args.big_db:
            big_db(bench)
        if args.memory:
            memory(bench)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        print(f"compare.py: {type(error).__name__}: {error}", file=sys.stderr)
        status = 1
    finally:
        if args.keep:
            print(f"# kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text("".join(json.dumps(line) + "\n" for line in bench.lines))
    print(f"{args.orders} orders per scenario (--big-db: {args.big_db_orders}), {args.repeat} round(s), "
          f"{os.cpu_count()} CPUs (client included), {time.monotonic() - started:.0f} s in all")
    print_table(bench.lines)
    if any("error" in d or d.get("failures") for d in bench.lines):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
