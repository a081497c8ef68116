"""The interface every benchmarked system implements, and helpers they share.

A system is driven through four verbs: start a gateway (for the ZMQ floor, a no-op holder),
open a kernel on it, execute code in a kernel (whole result, or streamed through a callback),
and close both. The workloads in `benchmarks.worker` are written once against these verbs.
"""

from __future__ import annotations

import abc
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psutil

ChunkCallback = Callable[[str], None]

# Stock kernelspecs run ipykernel_launcher; kernelbox's runs its own launcher module.
KERNEL_PROCESS_MARKERS = ("ipykernel_launcher", "kernelbox._child.kernel")


@dataclass
class Outcome:
    """What one execution produced: all text output in order (stripped) and saved image files."""

    text: str
    images: list[Path] = field(default_factory=list)


class UnsupportedWorkload(Exception):
    """The system has no such feature (for instance no warm kernel pool)."""


class System(abc.ABC):
    """A way to run code in IPython kernels that the suite can time."""

    name: ClassVar[str]
    #: Distributions whose versions are recorded for this system.
    packages: ClassVar[tuple[str, ...]] = (
        "ipykernel",
        "ipython",
        "jupyter_client",
        "pyzmq",
        "tornado",
        "matplotlib",
    )

    @abc.abstractmethod
    async def start_gateway(self, scratch: Path, pool_size: int = 0) -> Any:
        """Start a gateway and return when it accepts kernels; `pool_size` warm kernels.

        Raises:
            UnsupportedWorkload: If `pool_size` > 0 and the system has no pool.
        """

    @abc.abstractmethod
    async def stop_gateway(self, gateway: Any) -> None:
        """Stop the gateway and every kernel it started."""

    @abc.abstractmethod
    async def open_kernel(self, gateway: Any, images_dir: Path) -> Any:
        """Start (or take from the pool) a kernel and return a connected client for it."""

    @abc.abstractmethod
    async def close_kernel(self, kernel: Any) -> None:
        """Disconnect from the kernel and shut it down."""

    @abc.abstractmethod
    async def execute(
        self,
        kernel: Any,
        code: str,
        timeout_seconds: float,
        on_chunk: ChunkCallback | None = None,
    ) -> Outcome:
        """Execute `code`; call `on_chunk` for each text chunk as it arrives (streaming)."""

    async def stream_with_cuts(
        self, gateway: Any, images_dir: Path, code: str, cut_after_lines: tuple[int, ...]
    ) -> tuple[str, int]:
        """Run `code` on a new kernel whose WebSocket is cut after each count of lines received.

        Returns the text received and how many cuts were made.

        Raises:
            UnsupportedWorkload: If the suite cannot cut this system's connection.
        """
        raise UnsupportedWorkload(f"{self.name}: the suite has no way to cut its kernel connection")

    def gateway_pid(self, gateway: Any) -> int | None:
        """The pid at the root of the gateway's process tree; None when there is no gateway."""
        return None

    def kernel_pids(self, gateway: Any, kernel: Any) -> list[int]:
        """Pids of kernel processes belonging to `gateway` (found by command line)."""
        root = self.gateway_pid(gateway)
        if root is None:
            return []
        return [p.pid for p in process_tree(root) if is_kernel_process(p)]

    async def wait_pool_ready(self, gateway: Any, timeout_seconds: float) -> None:
        """Return when the gateway's warm pool is full again.

        Raises:
            UnsupportedWorkload: If the system has no pool.
        """
        raise UnsupportedWorkload(f"{self.name} has no warm kernel pool")

    def versions(self) -> dict[str, str]:
        """Installed versions of the packages that matter for this system."""
        return installed_versions(self.packages)


def installed_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """`{distribution: version}` for each installed distribution of `packages`."""
    found: dict[str, str] = {}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def process_tree(root_pid: int) -> list[psutil.Process]:
    """The process `root_pid` and all its live descendants (empty if it is gone)."""
    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def is_kernel_process(process: psutil.Process) -> bool:
    """Whether `process` is an IPython kernel (by the launcher module on its command line)."""
    try:
        return any(marker in part for part in process.cmdline() for marker in KERNEL_PROCESS_MARKERS)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
