"""A change against a baseline, in one run: pki-server from two checkouts, alternately, under the same load.

    git worktree add /tmp/baseline main
    python benchmarks/paired.py /tmp/baseline . --rounds 4 -n 200 -c 16

Each round starts a fresh server (servers.py, embedded or scaled) from each checkout in turn and
runs acme_load.py against it: 20 orders to warm up, then ``-n`` measured. The servers take turns so
that a slow spell of the machine hits both; the medians over the rounds are compared. This is the
tool for a change worth a few per cent, which the noise between separate compare.py runs on a
shared machine would hide. Prints one line per run and the ratios (second/first); ``--json`` writes
the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import servers  # noqa: E402
from compare import Bench  # noqa: E402

WARM_UP = 20


def run_once(bench: Bench, root: Path, workdir: Path, label: str) -> dict[str, Any]:
    """A fresh server from ``root``: WARM_UP orders, then ``-n`` measured (compare.py's runs, same client)."""
    args = bench.args
    servers.ROOT = root  # the checkout put on the server's PYTHONPATH (servers._pki_env)
    start = servers.pki_scaled if args.topology == "scaled" else servers.pki_embedded
    with start(workdir, bench.http01_port, bench.dns_port) as target:
        bench.load(target, WARM_UP, args.concurrency, challenge=args.challenge, scenario="warm-up", record=False)
        data = bench.load(target, args.orders, args.concurrency, challenge=args.challenge, scenario=label,
                          record=False)
    if data.get("failures") or data.get("completed") != args.orders:
        raise RuntimeError(f"the run against {root} had failures: {json.dumps(data)[:1500]}")
    return data


def figures(data: dict[str, Any]) -> tuple[float, float, float]:
    """CPU ms per order, orders/s, p95 flow ms."""
    return data["serverCpuPerOrder"] * 1000, data["ordersPerSecond"], data["flowMs"]["p95"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path, help="The checkout measured first in each round.")
    parser.add_argument("change", type=Path, help="The checkout measured second.")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("-n", "--orders", type=int, default=200)
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--challenge", choices=["http-01", "dns-01"], default="http-01")
    parser.add_argument("--topology", choices=["embedded", "scaled"], default="embedded")
    parser.add_argument("--timeout", type=float, default=300, help="Seconds for one load run.")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="Passed to acme_load.py (default: 0.05).")
    parser.add_argument("--json", type=Path, help="Also write every run's JSON line here.")
    args = parser.parse_args(argv)
    for name in ("baseline", "change"):
        root = getattr(args, name).resolve()
        if not (root / "pki_server" / "__init__.py").is_file():
            parser.error(f"{name}: {root} is not a pki-server checkout (no pki_server/__init__.py).")
        setattr(args, name, root)
    if args.rounds < 1 or args.orders < 1 or args.concurrency < 1:
        parser.error("--rounds, -n and -c take numbers of at least 1.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs: dict[str, list[tuple[float, float, float]]] = {"baseline": [], "change": []}
    with tempfile.TemporaryDirectory(prefix="pki-paired-") as tmp:
        bench = Bench(args, Path(tmp))
        for round_ in range(args.rounds):
            for name in ("baseline", "change"):
                label = f"round {round_ + 1} {name}"
                data = run_once(bench, getattr(args, name), Path(tmp) / f"{name}-{round_}", label)
                data.update({"checkout": name, "round": round_})
                if args.json:
                    with args.json.open("a") as out:
                        out.write(json.dumps(data) + "\n")
                runs[name].append(figures(data))
                cpu, rate, p95 = runs[name][-1]
                print(f"round {round_ + 1} {name:8} {cpu:6.2f} ms CPU/order {rate:6.1f} orders/s p95 {p95:7.1f} ms",
                      flush=True)
    medians = {name: [statistics.median(run[index] for run in values) for index in range(3)]
               for name, values in runs.items()}
    print(f"{args.topology}, {args.challenge}, C={args.concurrency}, {args.orders} orders, {args.rounds} rounds; "
          "medians, change/baseline:")
    for index, label in enumerate(("CPU ms/order", "orders/s", "p95 flow ms")):
        before, after = medians["baseline"][index], medians["change"][index]
        print(f"  {label:13} {before:8.2f} -> {after:8.2f}  ({after / before:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
