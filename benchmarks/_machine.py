"""What the benchmark ran on: CPU, cores, memory, kernel, Python, date."""

from __future__ import annotations

import datetime
import os
import platform
import resource
from pathlib import Path
from typing import Any

import psutil


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or what `platform` knows elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "os": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot, all cores together."""
    times = psutil.cpu_times()
    busy_fields = ("user", "nice", "system", "irq", "softirq", "steal")  # guest is inside user
    return sum(getattr(times, name, 0.0) for name in busy_fields)


def own_cpu_seconds() -> float:
    """CPU seconds used by this process and every descendant it (transitively) waited for.

    Workers wait for their gateways and gateways for their kernels, so once the workers have
    exited this covers the whole benchmark's process tree.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def background_share(busy_seconds: float, own_seconds: float, wall_seconds: float) -> float | None:
    """The fraction of the machine's CPU capacity used by *other* processes during the run."""
    capacity = wall_seconds * (os.cpu_count() or 1)
    if capacity <= 0:
        return None
    return max(0.0, (busy_seconds - own_seconds) / capacity)
