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
