"""Process helpers shared by the tests that kill, stop and count real processes."""

from __future__ import annotations

from collections.abc import Iterable

import anyio.abc
import psutil


def alive(pids: Iterable[int]) -> set[int]:
    """The pids among `pids` that still run (zombies count as gone)."""
    running = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.add(pid)
        except psutil.NoSuchProcess:
            pass
    return running


async def first_line(process: anyio.abc.Process) -> bytes:
    """Read the first line the process prints on stdout (bound the call with a timeout)."""
    assert process.stdout is not None
    line = b""
    async for data in process.stdout:
        line += data
        if b"\n" in line:
            break
    return line.split(b"\n")[0]


async def survivors_after(pids: Iterable[int], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` seconds for `pids` to exit; return those still running (not zombies)."""
    import anyio.to_thread

    processes = []
    for pid in alive(pids):
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, remaining = await anyio.to_thread.run_sync(lambda: psutil.wait_procs(processes, timeout=timeout))
    still = alive(p.pid for p in remaining)
    return [p for p in remaining if p.pid in still]
