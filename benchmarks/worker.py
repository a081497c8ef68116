"""A benchmark worker: drives one system and times workloads on the harness's command.

Run as ``python -m benchmarks.worker --system NAME --scratch DIR`` (the harness does this,
with the peer's venv python for ipybox). It reads one JSON command per line on stdin and
answers one JSON line per command: ``{"id": n, "ok": true, "result": {...}}`` or
``{"id": n, "ok": false, "error": "...", "unsupported": bool}``. Timings are taken here, in
the system's own process, so the command channel never counts.

Only the standard library, psutil and the system's own library are imported: the peer's
worker runs in a venv without kernelbox or anyio, which is also why this is plain asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import psutil

from benchmarks._systems import load_system
from benchmarks._systems._base import Outcome, System, UnsupportedWorkload, process_tree

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFAULT_TIMEOUT_SECONDS = 120.0
WARMUP_EXECUTIONS = 5
POOL_READY_TIMEOUT_SECONDS = 120.0

WARMUP_CODE = "import matplotlib\nimport matplotlib.pyplot as plt\n1+1"
FIGURE_CODE = """\
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
ax.plot(range(1000), [i * i for i in range(1000)])
ax.set_title("benchmark")
plt.show()
"""


def stream_code(lines: int) -> str:
    """Code that prints the integers 0..lines-1, one per line."""
    return f"for _i in range({lines}):\n    print(_i)\n"


def paced_stream_code(lines: int) -> str:
    """Prints 0..lines-1, flushing each, pausing 20 ms every 500 lines (a cut lands mid-stream)."""
    return (
        "import time\n"
        f"for _i in range({lines}):\n"
        "    print(_i, flush=True)\n"
        "    if _i % 500 == 0:\n"
        "        time.sleep(0.02)\n"
    )


def expected_stream_lines(lines: int) -> list[str]:
    return [str(i) for i in range(lines)]


def concurrent_code(kernel_index: int, execution_index: int) -> tuple[str, str]:
    """A short execution for the concurrency workload and the output it must produce."""
    marker = f"k{kernel_index}-e{execution_index}"
    return f"print({marker!r})", marker


class Worker:
    """Holds one system's live resources and runs the workloads against them."""

    def __init__(self, system: System, scratch: Path) -> None:
        self.system = system
        self.scratch = scratch
        self.session_gateway: Any = None
        self.session_kernel: Any = None
        self.pool_gateway: Any = None
        self._images_counter = 0

    def images_dir(self) -> Path:
        self._images_counter += 1
        return self.scratch / f"images-{self._images_counter}"

    # -- commands -----------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        return {
            "system": self.system.name,
            "python": platform.python_version(),
            "executable": sys.executable,
            "versions": self.system.versions(),
        }

    async def open_session(self) -> dict[str, Any]:
        """Start the gateway and one kernel that the per-execution workloads reuse."""
        started = time.perf_counter()
        self.session_gateway = await self.system.start_gateway(self.scratch)
        self.session_kernel = await self.system.open_kernel(self.session_gateway, self.images_dir())
        for _ in range(WARMUP_EXECUTIONS):
            await self.system.execute(self.session_kernel, WARMUP_CODE, DEFAULT_TIMEOUT_SECONDS)
        return {"seconds": time.perf_counter() - started}

    async def close_session(self) -> dict[str, Any]:
        await self._close(self.session_gateway, self.session_kernel)
        self.session_gateway = self.session_kernel = None
        return {}

    async def roundtrip(self, code: str = "1+1", expected: str = "2") -> dict[str, Any]:
        started = time.perf_counter()
        outcome = await self.system.execute(self.session_kernel, code, DEFAULT_TIMEOUT_SECONDS)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "ok": outcome.text == expected}

    async def cold_start(self) -> dict[str, Any]:
        """Gateway start → kernel → first result of ``1+1``; then everything is stopped."""
        t0 = time.perf_counter()
        gateway = await self.system.start_gateway(self.scratch)
        kernel = None
        try:
            t1 = time.perf_counter()
            kernel = await self.system.open_kernel(gateway, self.images_dir())
            t2 = time.perf_counter()
            outcome = await self.system.execute(kernel, "1+1", DEFAULT_TIMEOUT_SECONDS)
            t3 = time.perf_counter()
        finally:
            t_stop = time.perf_counter()
            await self._close(gateway, kernel)
        return {
            "seconds": t3 - t0,
            "gateway_seconds": t1 - t0,
            "kernel_seconds": t2 - t1,
            "first_execute_seconds": t3 - t2,
            "stop_seconds": time.perf_counter() - t_stop,
            "ok": outcome.text == "2",
        }

    async def cold_connect(self) -> dict[str, Any]:
        """A new kernel on the running session gateway (no pool): connect, then ``1+1``."""
        return await self._timed_connect(self.session_gateway)

    async def open_pool(self, pool_size: int) -> dict[str, Any]:
        started = time.perf_counter()
        self.pool_gateway = await self.system.start_gateway(self.scratch, pool_size=pool_size)
        await self.system.wait_pool_ready(self.pool_gateway, POOL_READY_TIMEOUT_SECONDS)
        return {"seconds": time.perf_counter() - started}

    async def warm_connect(self) -> dict[str, Any]:
        """Take a kernel from the (refilled) pool: connect, then ``1+1``."""
        await self.pool_ready()
        return await self._timed_connect(self.pool_gateway)

    async def pool_ready(self) -> dict[str, Any]:
        """Return once this system's pool is full again (another system's connect is next)."""
        await self.system.wait_pool_ready(self.pool_gateway, POOL_READY_TIMEOUT_SECONDS)
        return {}

    async def close_pool(self) -> dict[str, Any]:
        await self._close(self.pool_gateway, None)
        self.pool_gateway = None
        return {}

    async def stream(self, lines: int) -> dict[str, Any]:
        """Print `lines` lines; time to the first chunk and to completion; check every line."""
        chunks: list[str] = []
        first_chunk_at: list[float] = []

        def on_chunk(text: str) -> None:
            if not first_chunk_at:
                first_chunk_at.append(time.perf_counter())
            chunks.append(text)

        started = time.perf_counter()
        await self.system.execute(
            self.session_kernel, stream_code(lines), DEFAULT_TIMEOUT_SECONDS * 5, on_chunk
        )
        seconds = time.perf_counter() - started
        received = "".join(chunks).splitlines()
        return {
            "seconds": seconds,
            "first_chunk_seconds": first_chunk_at[0] - started if first_chunk_at else None,
            "chunks": len(chunks),
            "lines_expected": lines,
            "lines_received": len(received),
            "complete": received == expected_stream_lines(lines),
        }

    async def cut_stream(self, lines: int) -> dict[str, Any]:
        """Stream `lines` paced lines on a new kernel, cutting its WebSocket twice mid-stream.

        Counts the lines lost and repeated, and whether they arrived in order.
        """
        cut_after = (lines // 50, lines * 3 // 20)  # 200 and 1,500 of 10,000
        started = time.perf_counter()
        text, cuts = await asyncio.wait_for(
            self.system.stream_with_cuts(
                self.session_gateway, self.images_dir(), paced_stream_code(lines), cut_after
            ),
            DEFAULT_TIMEOUT_SECONDS * 5,
        )
        seconds = time.perf_counter() - started
        numbers = [int(word) for word in text.split()]
        seen = set(numbers)
        lost = sum(1 for i in range(lines) if i not in seen)
        in_order = numbers == list(range(lines))
        return {
            "seconds": seconds,
            "lines": lines,
            "cuts": cuts,
            "lost": lost,
            "repeated": len(numbers) - len(seen),
            "in_order": in_order,
            "ok": in_order and cuts == len(cut_after),
        }

    async def figure(self) -> dict[str, Any]:
        """A matplotlib figure rendered in the kernel and saved as a PNG file by the client."""
        started = time.perf_counter()
        outcome = await self.system.execute(
            self.session_kernel, FIGURE_CODE, DEFAULT_TIMEOUT_SECONDS
        )
        seconds = time.perf_counter() - started
        pngs = [path for path in outcome.images if _is_png(path)]
        return {
            "seconds": seconds,
            "images": len(outcome.images),
            "png_bytes": sum(path.stat().st_size for path in pngs),
            "ok": len(pngs) == 1,
        }

    async def concurrent(self, kernels: int, executions: int) -> dict[str, Any]:
        """`kernels` kernels on one gateway, each running `executions` short prints in turn."""
        gateway = await self.system.start_gateway(self.scratch)
        opened: list[Any] = []
        try:
            t0 = time.perf_counter()
            opened = await _gather_all(
                [self.system.open_kernel(gateway, self.images_dir()) for _ in range(kernels)]
            )
            cpu_before = cpu_snapshot(self.system, gateway, opened)
            t1 = time.perf_counter()
            per_kernel = await asyncio.gather(
                *(self._run_short(kernel, i, executions) for i, kernel in enumerate(opened))
            )
            wall = time.perf_counter() - t1
            cpu_used = cpu_delta(cpu_before, cpu_snapshot(self.system, gateway, opened))
        except Exception as exc:
            _report_gateway_log(gateway, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            await self._close(gateway, *opened)
        latencies = [seconds for run in per_kernel for seconds in run["latencies"]]
        return {
            "kernels": kernels,
            "executions": len(latencies),
            "wall_seconds": wall,
            "throughput_per_second": len(latencies) / wall if wall > 0 else None,
            "latencies": latencies,
            "lost": sum(run["lost"] for run in per_kernel),
            "kernel_start_seconds": t1 - t0,
            "cpu_seconds": cpu_used,
        }

    async def rss(self) -> dict[str, Any]:
        """Memory of the session's gateway process tree and of its idle kernel (bytes)."""
        kernel_pids = set(self.system.kernel_pids(self.session_gateway, self.session_kernel))
        root = self.system.gateway_pid(self.session_gateway)
        tree = process_tree(root) if root is not None else []
        tree_pids = {process.pid for process in tree}
        kernels = [p for pid in kernel_pids for p in process_tree(pid)[:1]]
        gateway_only = [p for p in tree if p.pid not in kernel_pids]
        return {
            "gateway_tree_rss_bytes": _rss(tree) if tree else None,
            "gateway_rss_bytes": _rss(gateway_only) if tree else None,
            "gateway_processes": len(gateway_only) if tree else 0,
            "kernel_rss_bytes": _rss(kernels) if kernels else None,
            "kernel_uss_bytes": _uss(kernels) if kernels else None,
            "kernel_in_gateway_tree": bool(kernel_pids & tree_pids),
        }

    async def cpu(self) -> dict[str, Any]:
        """CPU seconds used so far by this client process, the session's gateway and kernel."""
        return cpu_snapshot(self.system, self.session_gateway, [self.session_kernel])

    # -- helpers ------------------------------------------------------------------------

    async def _timed_connect(self, gateway: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        kernel = await self.system.open_kernel(gateway, self.images_dir())
        try:
            t1 = time.perf_counter()
            outcome = await self.system.execute(kernel, "1+1", DEFAULT_TIMEOUT_SECONDS)
            t2 = time.perf_counter()
        finally:
            await self.system.close_kernel(kernel)
        return {
            "seconds": t1 - t0,
            "to_first_result_seconds": t2 - t0,
            "ok": outcome.text == "2",
        }

    async def _run_short(self, kernel: Any, index: int, executions: int) -> dict[str, Any]:
        latencies: list[float] = []
        lost = 0
        for execution in range(executions):
            code, expected = concurrent_code(index, execution)
            started = time.perf_counter()
            outcome: Outcome = await self.system.execute(kernel, code, DEFAULT_TIMEOUT_SECONDS)
            latencies.append(time.perf_counter() - started)
            lost += outcome.text != expected
        return {"latencies": latencies, "lost": lost}

    async def _close(self, gateway: Any, *kernels: Any) -> None:
        """Close kernels, then the gateway; every step bounded, errors reported on stderr."""
        for kernel in kernels:
            if kernel is not None:
                await _quietly(
                    self.system.close_kernel(kernel), f"closing a {self.system.name} kernel"
                )
        if gateway is not None:
            await _quietly(
                self.system.stop_gateway(gateway), f"stopping the {self.system.name} gateway"
            )

    async def close_all(self) -> None:
        await self._close(self.session_gateway, self.session_kernel)
        await self._close(self.pool_gateway)
        self.session_gateway = self.session_kernel = self.pool_gateway = None


CLOSE_TIMEOUT_SECONDS = 30.0


async def _quietly(step: Awaitable[Any], what: str) -> None:
    try:
        await asyncio.wait_for(step, CLOSE_TIMEOUT_SECONDS)
    except Exception as exc:  # cleanup must go on; the failure is still reported
        print(f"worker: {what} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


async def _gather_all(steps: list[Awaitable[Any]]) -> list[Any]:
    """Like gather, but when one step fails the others still finish (so they can be closed)."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    return list(results)


def cpu_snapshot(system: System, gateway: Any, kernels: list[Any]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by this client process, by the gateway's
    processes other than kernels, and by the kernels; for comparing CPU cost per execution."""
    kernel_pids = {pid for kernel in kernels for pid in system.kernel_pids(gateway, kernel)}
    root = system.gateway_pid(gateway)
    gateway_processes = [
        p for p in (process_tree(root) if root is not None else []) if p.pid not in kernel_pids
    ]
    kernel_processes = [p for pid in kernel_pids for p in process_tree(pid)[:1]]
    return {
        "client": _cpu([psutil.Process()]),
        "gateway": _cpu(gateway_processes),
        "kernels": _cpu(kernel_processes),
    }


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}


def _cpu(processes: list[Any]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except Exception:  # the process ended between listing and reading
            continue
        total += times.user + times.system
    return total


def _rss(processes: list[Any]) -> int:
    return sum(_memory(p, "rss") for p in processes)


def _uss(processes: list[Any]) -> int:
    return sum(_memory(p, "uss") for p in processes)


def _memory(process: Any, field: str) -> int:
    try:
        info = process.memory_full_info() if field == "uss" else process.memory_info()
        return int(getattr(info, field))
    except Exception:  # the process ended, or its memory map is not readable
        return 0


def _is_png(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


# -- the command loop -------------------------------------------------------------------

COMMANDS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    name: getattr(Worker, name)
    for name in (
        "info",
        "open_session",
        "close_session",
        "roundtrip",
        "cold_start",
        "cold_connect",
        "open_pool",
        "warm_connect",
        "pool_ready",
        "close_pool",
        "stream",
        "cut_stream",
        "figure",
        "concurrent",
        "rss",
        "cpu",
    )
}


def _report_gateway_log(gateway: Any, error: str, lines: int = 40) -> None:
    """Write the last `lines` lines of `gateway`'s log (when it keeps one) to stderr, for a failure."""
    tail = list(getattr(gateway, "log_tail", None) or [])[-lines:]
    if tail:
        print(f"worker: {error}; the gateway's last {len(tail)} log lines:", *tail, sep="\n  ",
              file=sys.stderr, flush=True)


async def handle(worker: Worker, request: dict[str, Any]) -> dict[str, Any]:
    """Run one command and build its reply; errors become replies, never crashes."""
    reply: dict[str, Any] = {"id": request.get("id")}
    command = COMMANDS.get(request.get("op", ""))
    if command is None:
        return {
            **reply,
            "ok": False,
            "error": f"unknown op {request.get('op')!r}",
            "unsupported": True,
        }
    try:
        result = await command(worker, **request.get("args", {}))
    except UnsupportedWorkload as exc:
        return {**reply, "ok": False, "error": str(exc), "unsupported": True}
    except Exception as exc:
        return {**reply, "ok": False, "error": f"{type(exc).__name__}: {exc}", "unsupported": False}
    return {**reply, "ok": True, "result": result}


async def serve(worker: Worker, replies: IO[str]) -> None:
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return  # the harness went away
            request = json.loads(line)
            if request.get("op") == "exit":
                return
            replies.write(json.dumps(await handle(worker, request)) + "\n")
            replies.flush()
    finally:
        await worker.close_all()


def protocol_stream() -> IO[str]:
    """A private copy of stdout for replies; fd 1 then points at stderr.

    Libraries and kernels print to stdout now and then; that must not corrupt the replies.
    """
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return replies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", required=True)
    parser.add_argument("--scratch", required=True, type=Path)
    args = parser.parse_args(argv)
    replies = protocol_stream()
    args.scratch.mkdir(parents=True, exist_ok=True)
    try:
        system = load_system(args.system)
    except Exception as exc:  # report why the system cannot run, as the first reply
        replies.write(
            json.dumps(
                {
                    "id": None,
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "unsupported": True,
                }
            )
            + "\n"
        )
        return
    replies.write(json.dumps({"id": None, "ok": True, "result": {"ready": True}}) + "\n")
    asyncio.run(serve(Worker(system, args.scratch), replies))


if __name__ == "__main__":
    main()
