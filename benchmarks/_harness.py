"""Runs the workloads across systems, interleaved, and gathers the raw samples.

Every repetition visits every system once, in an order rotated by one each repetition, so
slow drift of the machine (thermal, background work) hits all systems alike and no system is
always first after a pause. Each system has its own worker process (see `_workers`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._stats import summarise
from benchmarks._workers import WorkerError, WorkerProcess

logger = logging.getLogger("benchmarks")

# How long one worker command may take before the worker is killed (seconds).
OP_TIMEOUT_SECONDS: dict[str, float] = {
    "info": 30.0,
    "open_session": 300.0,
    "close_session": 120.0,
    "roundtrip": 60.0,
    "cold_start": 300.0,
    "cold_connect": 180.0,
    "open_pool": 300.0,
    "warm_connect": 300.0,
    "pool_ready": 300.0,
    "close_pool": 120.0,
    "stream": 900.0,
    "cut_stream": 900.0,
    "figure": 120.0,
    "concurrent": 900.0,
    "rss": 180.0,
    "cpu": 60.0,
}
# Workloads in run order; those in SESSION_WORKLOADS share one long-lived kernel per system.
WORKLOADS: tuple[str, ...] = (
    "cold_start",
    "rss",
    "roundtrip",
    "cold_connect",
    "figure",
    "stream",
    "cut_stream",
    "concurrent",
    "warm_connect",
)
SESSION_WORKLOADS: tuple[str, ...] = ("rss", "roundtrip", "cold_connect", "figure", "stream", "cut_stream")
# After this many consecutive failures of one workload, a system skips its remaining reps.
MAX_CONSECUTIVE_FAILURES = 2


@dataclass
class Config:
    """What to run. Counts are repetitions per system; `lines` is the streaming size."""

    systems: list[str]
    runs: int = 200
    cold_runs: int = 5
    connect_runs: int = 10
    warm_runs: int = 20
    pool_size: int = 2
    stream_runs: int = 5
    cut_lines: int = 10_000
    cut_runs: int = 3
    lines: int = 100_000
    figure_runs: int = 10
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    concurrent_executions: int = 50
    concurrent_runs: int = 3
    peer_python: Path | None = None
    workloads: list[str] | None = None  # None: all of WORKLOADS

    @classmethod
    def quick(cls, systems: list[str]) -> Config:
        """Tiny sizes: a smoke run that exercises every workload in seconds, not minutes."""
        return cls(
            systems=systems,
            runs=5,
            cold_runs=1,
            connect_runs=1,
            warm_runs=2,
            pool_size=1,
            stream_runs=1,
            cut_lines=1_000,
            cut_runs=1,
            lines=1000,
            figure_runs=1,
            concurrency=[1, 2],
            concurrent_executions=3,
            concurrent_runs=1,
        )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["peer_python"] = str(self.peer_python) if self.peer_python else None
        data["workloads"] = self.workloads or list(WORKLOADS)
        return data


@dataclass
class Samples:
    """What one system produced for one workload: the command results and the failures."""

    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unsupported: str | None = None
    consecutive_failures: int = 0
    cpu_ms_per_rep: dict[str, float] | None = None

    def skipping(self) -> bool:
        return self.unsupported is not None or self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES


class Suite:
    """The live workers and everything they measured so far."""

    def __init__(self, config: Config, scratch: Path) -> None:
        self.config = config
        self.scratch = scratch
        self.workers: dict[str, WorkerProcess] = {}
        self.systems: dict[str, dict[str, Any]] = {}
        self.samples: dict[str, dict[str, Samples]] = {}

    # -- workers --------------------------------------------------------------------------

    async def start_workers(self) -> None:
        for name in self.config.systems:
            try:
                worker = await WorkerProcess.start(name, self.scratch, self.config.peer_python)
                info = await worker.call("info", OP_TIMEOUT_SECONDS["info"])
            except WorkerError as exc:
                logger.warning("System %s is unavailable: %s", name, exc)
                self.systems[name] = {"available": False, "reason": str(exc)}
                continue
            self.workers[name] = worker
            self.systems[name] = {"available": True, "reason": None, **info}
            logger.info("Started worker for %s (python %s)", name, info.get("python"))

    async def stop_workers(self) -> None:
        for worker in self.workers.values():
            await worker.close()
        self.workers.clear()

    def live(self) -> list[str]:
        return [name for name in self.config.systems if name in self.workers]

    # -- running commands -----------------------------------------------------------------

    def _samples(self, workload: str, system: str) -> Samples:
        return self.samples.setdefault(workload, {}).setdefault(system, Samples())

    async def _run_one(self, workload: str, system: str, op: str, **args: Any) -> bool:
        """Run one repetition of `workload` on `system`, recording its result or failure."""
        samples = self._samples(workload, system)
        worker = self.workers.get(system)
        if worker is None or samples.skipping():
            return False
        try:
            result = await worker.call(op, OP_TIMEOUT_SECONDS[op], **args)
        except WorkerError as exc:
            self._record_failure(workload, system, samples, exc)
            return False
        samples.results.append(result)
        samples.consecutive_failures = 0
        return True

    def _record_failure(
        self, workload: str, system: str, samples: Samples, exc: WorkerError
    ) -> None:
        if exc.unsupported:
            samples.unsupported = str(exc)
            logger.info("%s: %s does not support it: %s", workload, system, exc)
            return
        samples.errors.append(str(exc))
        samples.consecutive_failures += 1
        logger.warning("%s: %s failed: %s", workload, system, exc)
        worker = self.workers.get(system)
        if worker is not None and not exc.fatal:  # the worker's stderr: e.g. the gateway's log tail
            logger.warning("%s worker log, last lines:\n  %s", system, worker.log_tail(60, "\n  "))
        if exc.fatal:
            self.workers.pop(system, None)
            self.systems[system]["reason"] = f"worker lost during {workload}: {exc}"

    async def interleave(
        self,
        workload: str,
        op: str,
        reps: int,
        systems: Iterable[str] | None = None,
        before: Callable[[str, list[str]], Awaitable[None]] | None = None,
        **args: Any,
    ) -> None:
        """`reps` rounds; each round runs `op` once per system, in a rotated order.

        `before(system, systems)`, when given, is awaited before each run of `op` (untimed).
        """
        names = list(systems if systems is not None else self.live())
        logger.info("Workload %s: %d reps x %s", workload, reps, ", ".join(names) or "no systems")
        for rep in range(reps):
            for name in rotated(names, rep):
                if before is not None:
                    await before(name, names)
                await self._run_one(workload, name, op, **args)

    # -- the plan ---------------------------------------------------------------------------

    def wants(self, workload: str) -> bool:
        return self.config.workloads is None or workload in self.config.workloads

    async def run(self) -> None:
        config = self.config
        if self.wants("cold_start"):
            await self.interleave("cold_start", "cold_start", config.cold_runs)
        if any(self.wants(w) for w in SESSION_WORKLOADS):
            await self._with_sessions()
        if self.wants("concurrent"):
            for kernels in config.concurrency:
                await self.interleave(
                    f"concurrent_{kernels}",
                    "concurrent",
                    config.concurrent_runs,
                    kernels=kernels,
                    executions=config.concurrent_executions,
                )
        if self.wants("warm_connect"):
            await self._warm_connect()

    async def _with_sessions(self) -> None:
        config = self.config
        opened = []
        for name in self.live():
            if await self._run_one("session", name, "open_session"):
                opened.append(name)
        try:
            if self.wants("rss"):
                await self.interleave("rss", "rss", 1, opened)
            if self.wants("roundtrip"):
                cpu_before = {name: await self._cpu(name) for name in opened}
                await self.interleave("roundtrip", "roundtrip", config.runs, opened)
                for name in opened:
                    self._record_cpu("roundtrip", name, cpu_before[name], await self._cpu(name))
            if self.wants("cold_connect"):
                await self.interleave("cold_connect", "cold_connect", config.connect_runs, opened)
            if self.wants("figure"):
                await self.interleave("figure", "figure", config.figure_runs, opened)
            if self.wants("stream"):
                await self.interleave(
                    "stream", "stream", config.stream_runs, opened, lines=config.lines
                )
            if self.wants("cut_stream"):
                await self.interleave(
                    "cut_stream", "cut_stream", config.cut_runs, opened, lines=config.cut_lines
                )
        finally:
            for name in opened:
                await self._run_one("session_close", name, "close_session")

    async def _cpu(self, name: str) -> dict[str, float] | None:
        worker = self.workers.get(name)
        if worker is None:
            return None
        try:
            return await worker.call("cpu", OP_TIMEOUT_SECONDS["cpu"])
        except WorkerError as exc:
            logger.warning("CPU snapshot of %s failed: %s", name, exc)
            return None

    def _record_cpu(
        self,
        workload: str,
        name: str,
        before: dict[str, float] | None,
        after: dict[str, float] | None,
    ) -> None:
        """Store CPU milliseconds per successful repetition, split client/gateway/kernels."""
        samples = self._samples(workload, name)
        if before is None or after is None or not samples.results:
            return
        reps = len(samples.results)
        samples.cpu_ms_per_rep = {key: (after[key] - before[key]) * 1000 / reps for key in after}

    async def _warm_connect(self) -> None:
        pooled = []
        for name in self.live():
            if await self._run_one("pool", name, "open_pool", pool_size=self.config.pool_size):
                pooled.append(name)
            elif (unsupported := self._samples("pool", name).unsupported) is not None:
                self._samples("warm_connect", name).unsupported = unsupported
        try:
            await self.interleave(
                "warm_connect", "warm_connect", self.config.warm_runs, pooled, before=self._other_pools_ready
            )
        finally:
            for name in pooled:
                await self._run_one("pool_close", name, "close_pool")

    async def _other_pools_ready(self, system: str, systems: list[str]) -> None:
        """Wait until every other system's pool is full again: a replacement kernel another
        system is still starting would otherwise share the CPU with `system`'s timed connect."""
        for other in systems:
            if other != system and (worker := self.workers.get(other)) is not None:
                with contextlib.suppress(WorkerError):  # its own connects report it
                    await worker.call("pool_ready", OP_TIMEOUT_SECONDS["pool_ready"])

    # -- results -----------------------------------------------------------------------------

    def workloads(self) -> dict[str, dict[str, Any]]:
        """Per workload and system: raw results, summaries of the timed fields, errors."""
        out: dict[str, dict[str, Any]] = {}
        for workload, by_system in self.samples.items():
            if workload in ("session", "session_close", "pool", "pool_close"):
                continue
            out[workload] = {
                name: summarise_samples(workload, samples) for name, samples in by_system.items()
            }
        return out


def rotated(names: list[str], rep: int) -> list[str]:
    """`names` rotated left by `rep` places (repetition `rep` starts with a different system)."""
    if not names:
        return []
    shift = rep % len(names)
    return names[shift:] + names[:shift]


# Timed fields (seconds) summarised per workload; the first one is the headline.
TIMED_FIELDS: dict[str, tuple[str, ...]] = {
    "roundtrip": ("seconds",),
    "cold_start": (
        "seconds",
        "gateway_seconds",
        "kernel_seconds",
        "first_execute_seconds",
        "stop_seconds",
    ),
    "cold_connect": ("seconds", "to_first_result_seconds"),
    "warm_connect": ("seconds", "to_first_result_seconds"),
    "stream": ("seconds", "first_chunk_seconds"),
    "cut_stream": ("seconds",),
    "figure": ("seconds",),
    "concurrent": ("wall_seconds", "throughput_per_second", "kernel_start_seconds"),
    "rss": (
        "gateway_tree_rss_bytes",
        "gateway_rss_bytes",
        "kernel_rss_bytes",
        "kernel_uss_bytes",
    ),
}


def summarise_samples(workload: str, samples: Samples) -> dict[str, Any]:
    kind = "concurrent" if workload.startswith("concurrent_") else workload
    results = samples.results
    summary: dict[str, Any] = {
        "reps": len(results),
        "errors": samples.errors,
        "unsupported": samples.unsupported,
        "all_ok": all(r.get("ok", True) for r in results) if results else None,
        "results": results,
        "cpu_ms_per_rep": samples.cpu_ms_per_rep,
    }
    for name in TIMED_FIELDS.get(kind, ()):
        values = [float(r[name]) for r in results if r.get(name) is not None]
        summary[name] = summarise(values) if values else None
    if kind == "concurrent":
        latencies = [s for r in results for s in r["latencies"]]
        summary["latency_seconds"] = summarise(latencies) if latencies else None
        summary["lost"] = sum(r["lost"] for r in results)
        summary["executions"] = sum(r["executions"] for r in results)
        if summary["executions"]:
            summary["cpu_ms_per_rep"] = {
                key: sum(r["cpu_seconds"][key] for r in results) * 1000 / summary["executions"]
                for key in ("client", "gateway", "kernels")
            }
        for r in results:
            r.pop("latencies", None)  # summarised above; the raw list would swamp the JSON
    if kind == "cut_stream" and results:
        summary["lines"] = results[0]["lines"]
        summary["cuts"] = min(r["cuts"] for r in results)
        summary["lost"] = sum(r["lost"] for r in results)
        summary["repeated"] = sum(r["repeated"] for r in results)
        summary["in_order"] = all(r["in_order"] for r in results)
    if kind == "stream":
        summary["complete"] = all(r["complete"] for r in results) if results else None
        summary["lines_received_min"] = min((r["lines_received"] for r in results), default=None)
    return summary
