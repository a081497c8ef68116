"""The gateway's process tree: stopping it in steps, and killing what is left of it.

Kernels live in sessions of their own, so a process group is not the whole tree: the tree is
read with psutil while its root still runs, and what is left of it after the group is gone is
killed by pid (psutil refuses a pid that was reused meanwhile).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal

import anyio
import anyio.abc
import anyio.to_thread
import psutil

__all__ = ["process_tree", "reap_tree", "signal_group", "terminate"]

logger = logging.getLogger("kernelbox.gateway")


async def terminate(process: anyio.abc.Process, timeout: float) -> None:
    """SIGTERM the process group, wait, SIGKILL the group, then SIGKILL what is left of the tree."""
    if process.returncode is not None:
        return
    tree = process_tree(process.pid)
    signal_group(process.pid, signal.SIGTERM)
    with anyio.move_on_after(timeout):
        await process.wait()
    if process.returncode is None:
        logger.warning("Gateway [pid %d] did not exit in %gs; killing it", process.pid, timeout)
        signal_group(process.pid, signal.SIGKILL)
        with anyio.move_on_after(timeout):
            await process.wait()
    # Kernels live in sessions of their own: give them the same time, then kill.
    await anyio.to_thread.run_sync(reap_tree, tree, timeout, timeout)


def process_tree(pid: int) -> list[psutil.Process]:
    """The descendants of `pid` (not `pid` itself: anyio reaps it)."""
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
        return children
    except psutil.Error:
        return []


def signal_group(pid: int, signum: int) -> None:
    """Send `signum` to the process group `pid` leads; a group that is gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def reap_tree(tree: list[psutil.Process], grace: float, timeout: float) -> list[int]:
    """Wait up to `grace` seconds for the processes to exit, SIGKILL the rest (psutil refuses a
    reused pid) and wait up to `timeout` seconds more; returns the pids still alive."""
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _, alive = psutil.wait_procs(alive, timeout=timeout)
    return [proc.pid for proc in alive]
