"""Nothing left behind by a supervisor that was SIGKILLed: the next start sweeps it.

Reproduces the finding: ``kernelbox serve`` SIGKILLed left its cgroups
(``pids/…/kernelbox-<pid>-*``) and its state directory behind, and no later start removed them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
import psutil
import pytest
from helpers.processes import first_line, survivors_after

from kernelbox import KernelGateway
from kernelbox.gateway._cgroups import _hierarchy, cgroup_support
from kernelbox.gateway._state import STATE_DIR_PREFIX, sweep_orphaned_state_dirs

pytestmark = pytest.mark.anyio

TIMEOUT_SECONDS = 60.0


def _dead_pid() -> int:
    """The pid of a process that has exited (reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_state_dirs_of_dead_supervisors_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = tmp_path / f"{STATE_DIR_PREFIX}{_dead_pid()}-abc123"
    live = tmp_path / f"{STATE_DIR_PREFIX}{os.getppid()}-def456"
    own = tmp_path / f"{STATE_DIR_PREFIX}{os.getpid()}-ghi789"
    unrelated = tmp_path / "kernelbox-gateway-notapid"
    for directory in (dead, live, own, unrelated):
        (directory / "home").mkdir(parents=True)
    assert sweep_orphaned_state_dirs(tmp_path) == [dead]
    assert not dead.exists() and live.is_dir() and own.is_dir() and unrelated.is_dir()


@pytest.mark.skipif(cgroup_support()["pids"] is not None, reason="needs root and a pids cgroup controller")
async def test_a_sigkilled_serve_leaves_nothing_the_next_start_keeps(tmp_path: Path) -> None:
    process = await anyio.open_process(
        [sys.executable, "-m", "kernelbox.cli", "serve", "--json", "--port", "0", "--pids-limit", "256",
         "--working-dir", str(tmp_path)],
        stderr=subprocess.DEVNULL,
    )
    async with process:
        with anyio.fail_after(TIMEOUT_SECONDS):
            json.loads(await first_line(process))
        tree = [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
        process.send_signal(signal.SIGKILL)
        await process.wait()
    # The gateway goes with it (its lifeline); its cgroup and state directory stayed behind.
    assert not await survivors_after(tree, 10.0)
    hierarchy = _hierarchy("pids")
    assert not isinstance(hierarchy, str)
    groups = list((hierarchy.mount / hierarchy.group).glob(f"kernelbox-{process.pid}-*"))
    state_dirs = list(Path(tempfile.gettempdir()).glob(f"{STATE_DIR_PREFIX}{process.pid}-*"))
    assert groups and state_dirs  # the finding, reproduced
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with KernelGateway(port=0, working_dir=tmp_path, pids_limit=256):
            pass
    assert not any(path.exists() for path in [*groups, *state_dirs])
