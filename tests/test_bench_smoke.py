"""The benchmark suite in --quick mode, so it never rots (no timed assertions here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("zmq", "kernelbox")
RUN_TIMEOUT_SECONDS = 170.0
PER_EXECUTION_WORKLOADS = ("roundtrip", "cold_start", "cold_connect", "stream", "figure")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--systems",
            ",".join(SYSTEMS),
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return json.loads((out / "latest.json").read_text()), out


def test_quick_run_measures_every_workload_for_each_system(quick_run: tuple[dict, Path]) -> None:
    results, _ = quick_run
    for system in SYSTEMS:
        assert results["systems"][system]["available"], results["systems"][system]
        for workload in PER_EXECUTION_WORKLOADS:
            entry = results["workloads"][workload][system]
            assert entry["errors"] == [], (workload, system, entry["errors"])
            assert entry["reps"] >= 1, (workload, system)
            assert entry["seconds"]["median"] > 0, (workload, system)
            assert entry["all_ok"], (workload, system, entry["results"])


def test_quick_run_checks_output_completeness(quick_run: tuple[dict, Path]) -> None:
    results, _ = quick_run
    for system in SYSTEMS:
        assert results["workloads"]["stream"][system]["complete"], system
        for kernels in results["config"]["concurrency"]:
            entry = results["workloads"][f"concurrent_{kernels}"][system]
            assert entry["reps"] >= 1 and entry["errors"] == [], (kernels, system, entry["errors"])
            assert entry["throughput_per_second"]["median"] > 0
            assert entry["lost"] == 0, (kernels, system)


def test_quick_run_records_memory_machine_and_targets(quick_run: tuple[dict, Path]) -> None:
    results, _ = quick_run
    for system in SYSTEMS:
        assert results["workloads"]["rss"][system]["kernel_rss_bytes"]["median"] > 0, (system, results["workloads"]["rss"][system])
    assert results["workloads"]["rss"]["kernelbox"]["gateway_rss_bytes"]["median"] > 0
    machine = results["machine"]
    assert machine["logical_cores"] >= 1 and machine["memory_bytes"] > 0 and machine["python"]
    assert results["systems"]["kernelbox"]["versions"]["ipykernel"]
    assert {row["status"] for row in results["targets"]} <= {
        "met",
        "missed",
        "not measured",
        "below target size",
    }


def test_quick_run_measures_the_warm_pool_or_says_it_is_missing(
    quick_run: tuple[dict, Path],
) -> None:
    results, _ = quick_run
    entry = results["workloads"]["warm_connect"]["kernelbox"]
    assert entry["unsupported"] or (entry["reps"] >= 1 and entry["seconds"]["median"] > 0), entry


def test_quick_run_writes_markdown_and_chart(quick_run: tuple[dict, Path]) -> None:
    _, out = quick_run
    markdown = (out / "latest.md").read_text()
    assert "## Targets (issue 12)" in markdown and "| kernelbox |" in markdown
    assert (out / "latest.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# -- the suite's pure parts (no processes) ------------------------------------------------------


def test_percentile_is_nearest_rank_and_never_interpolates() -> None:
    from benchmarks._stats import percentile

    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 0.95) == 95.0
    assert percentile(samples, 0.5) == 50.0
    assert percentile([3.0, 1.0, 2.0], 1.0) == 3.0


def test_each_repetition_starts_with_a_different_system() -> None:
    from benchmarks._harness import rotated

    names = ["zmq", "ipybox", "kernelbox"]
    firsts = [rotated(names, rep)[0] for rep in range(3)]
    assert firsts == names
    assert sorted(rotated(names, 7)) == sorted(names)


def _synthetic(medians: dict[str, dict[str, float]], config: dict) -> dict:
    workloads = {
        workload: {
            name: {"reps": 1, "seconds": {"median": value}} for name, value in by_system.items()
        }
        for workload, by_system in medians.items()
    }
    return {"systems": {}, "workloads": workloads, "config": config}


def test_targets_are_judged_only_at_the_issues_sizes() -> None:
    from benchmarks._report import evaluate_targets

    medians = {"roundtrip": {"zmq": 0.006, "kernelbox": 0.007, "ipybox": 0.045}}
    full = {row["target"]: row for row in evaluate_targets(_synthetic(medians, {"runs": 200}))}
    quick = {row["target"]: row for row in evaluate_targets(_synthetic(medians, {"runs": 5}))}
    name = "`1+1` round trip ≤ 1.15 × direct jupyter_client over ZMQ"
    assert full[name]["status"] == "missed" and "1.17×" in full[name]["measured"]
    assert quick[name]["status"] == "below target size"
    assert full["`1+1` round trip, sandboxed, ≤ 1.25 × the floor"]["status"] == "not measured"
