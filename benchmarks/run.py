"""Command line of the benchmark suite: ``python -m benchmarks [options]``.

Writes ``latest.json`` (everything measured, machine and versions), ``latest.md`` (tables,
ratios against the floor and the peer, the issue's targets met or missed) and ``latest.png``
(the chart) into ``--out`` (``benchmarks/results`` by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

from benchmarks._harness import WORKLOADS, Config, Suite
from benchmarks._machine import (
    background_share,
    busy_cpu_seconds,
    machine_info,
    own_cpu_seconds,
)
from benchmarks._report import compute_ratios, evaluate_targets, render_markdown
from benchmarks._systems import SYSTEM_NAMES

logger = logging.getLogger("benchmarks")

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _system_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SYSTEM_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEM_NAMES)}"
        )
    return names


def _workload_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Benchmark kernelbox against direct jupyter_client over ZMQ (the floor)"
            " and ipybox 0.9.2 (the peer)."
        ),
    )
    parser.add_argument(
        "--systems",
        type=_system_list,
        default=list(SYSTEM_NAMES),
        help=f"comma-separated, from {','.join(SYSTEM_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--workloads",
        type=_workload_list,
        help=f"comma-separated, from {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes for a smoke run (seconds, not minutes)"
    )
    parser.add_argument("--runs", type=int, help="1+1 round trips per system (default 200)")
    parser.add_argument("--cold-runs", type=int, help="cold starts per system (default 5)")
    parser.add_argument(
        "--connect-runs", type=int, help="new-kernel connects per system (default 10)"
    )
    parser.add_argument("--warm-runs", type=int, help="warm pool connects per system (default 20)")
    parser.add_argument(
        "--pool-size", type=int, help="warm pool size for the pool workload (default 2)"
    )
    parser.add_argument(
        "--lines", type=int, help="lines printed by the streaming workload (default 100000)"
    )
    parser.add_argument("--stream-runs", type=int, help="streaming runs per system (default 5)")
    parser.add_argument("--figure-runs", type=int, help="figure runs per system (default 10)")
    parser.add_argument(
        "--concurrency", type=_int_list, help="kernel counts, comma-separated (default 1,4,16)"
    )
    parser.add_argument(
        "--executions", type=int, help="short executions per kernel when concurrent (default 50)"
    )
    parser.add_argument(
        "--concurrent-runs", type=int, help="repetitions of each concurrency level (default 3)"
    )
    parser.add_argument(
        "--peer-python",
        type=Path,
        help="python of the ipybox venv (default benchmarks/.venv-ipybox)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="output directory (default benchmarks/results)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return parser


OVERRIDES = {
    "runs": "runs",
    "cold_runs": "cold_runs",
    "connect_runs": "connect_runs",
    "warm_runs": "warm_runs",
    "pool_size": "pool_size",
    "lines": "lines",
    "stream_runs": "stream_runs",
    "figure_runs": "figure_runs",
    "concurrency": "concurrency",
    "executions": "concurrent_executions",
    "concurrent_runs": "concurrent_runs",
    "peer_python": "peer_python",
    "workloads": "workloads",
}


def config_from_args(args: argparse.Namespace) -> Config:
    config = Config.quick(args.systems) if args.quick else Config(systems=args.systems)
    for option, field in OVERRIDES.items():
        value = getattr(args, option)
        if value is not None:
            setattr(config, field, value)
    return config


async def run_suite(config: Config, scratch: Path) -> dict[str, Any]:
    """Run every workload and return the results dict (what latest.json holds)."""
    machine = machine_info()
    started = time.perf_counter()
    busy_before, own_before = busy_cpu_seconds(), own_cpu_seconds()
    suite = Suite(config, scratch)
    try:
        await suite.start_workers()
        await suite.run()
    finally:
        with anyio.CancelScope(shield=True):
            await suite.stop_workers()
    duration = time.perf_counter() - started
    # A noise indicator: how much CPU other processes took while the suite ran.
    machine["background_cpu_share"] = background_share(
        busy_cpu_seconds() - busy_before, own_cpu_seconds() - own_before, duration
    )
    machine["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "machine": machine,
        "config": config.as_json(),
        "duration_seconds": duration,
        "systems": suite.systems,
        "workloads": suite.workloads(),
    }
    results["ratios"] = compute_ratios(results)
    results["targets"] = evaluate_targets(results)
    return results


def write_outputs(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write latest.json, latest.md and latest.png into `out`; return their paths."""
    from benchmarks._chart import write_chart  # matplotlib only when writing

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "latest.json", "md": out / "latest.md", "png": out / "latest.png"}
    paths["json"].write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    write_chart(results, paths["png"])
    paths["md"].write_text(render_markdown(results, chart_name=paths["png"].name))
    return paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    config = config_from_args(args)
    with tempfile.TemporaryDirectory(prefix="kernelbox-bench-") as scratch:
        results = anyio.run(run_suite, config, Path(scratch))
    paths = write_outputs(results, args.out)
    for row in results["targets"]:
        logger.info("Target %-8s %s — %s", row["status"], row["target"], row["measured"] or "")
    logger.info("Wrote %s", ", ".join(str(p) for p in paths.values()))
    measured = any(info.get("available") for info in results["systems"].values())
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
