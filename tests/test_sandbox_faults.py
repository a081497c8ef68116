"""The reliability guarantees hold inside the OS sandbox too: no orphans, kernel death, restarts.

Outside CI a machine that cannot sandbox skips these tests; in CI (``CI=true``) they fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import psutil
import pytest
from helpers.processes import alive, first_line, survivors_after
from helpers.sandbox_dirs import sandbox_work_dir
from test_sandbox import sandbox_prerequisites  # noqa: F401  (autouse: skip or fail in CI)

from kernelbox import ExecutionTimeoutError, KernelClient, KernelDiedError, KernelGateway

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox]
HELPERS = Path(__file__).parent / "helpers"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def _inner_gateway_pid(gateway: KernelGateway) -> int:
    """The gateway's Python process inside the sandbox (the tree is srt → bwrap → ...)."""
    for child in psutil.Process(gateway.pid).children(recursive=True):
        if "kernelbox._child.gateway" in " ".join(child.cmdline()):
            return child.pid
    raise AssertionError("no gateway process under srt")


async def test_sandboxed_supervisor_sigkill_leaves_no_process_behind() -> None:
    with sandbox_work_dir() as work:
        await _sigkill_supervisor_and_check(work)


async def _sigkill_supervisor_and_check(work: Path) -> None:
    process = await anyio.open_process([sys.executable, str(HELPERS / "supervisor_child.py"), "--sandbox"],
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=work)
    pids: set[int] = set()
    try:
        with anyio.fail_after(120):
            line = await first_line(process)
        info = json.loads(line)
        pids = {info["gateway"], *info["tree"]}
        names = {psutil.Process(pid).name() for pid in alive(pids)}
        assert {"bwrap", "socat"} <= names, names  # srt's helpers are part of what must go
        process.kill()
        await process.wait()
        killed_at = time.monotonic()
        assert [(p.pid, p.name()) for p in await survivors_after(pids, timeout=2)] == []
        assert time.monotonic() - killed_at <= 2.5
    finally:
        for pid in alive(pids):
            os.kill(pid, signal.SIGKILL)
        await process.aclose()


async def test_sandboxed_kernel_death_and_timeout_escalation(tmp_path: Path) -> None:
    with anyio.fail_after(180), sandbox_work_dir() as work:
        async with KernelGateway(port=0, sandbox=True, working_dir=work, startup_timeout=90) as gateway:
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path) as client:
                await client.execute("kept = 1")
                with pytest.raises(ExecutionTimeoutError) as info:
                    await client.execute("import time\nwhile True: time.sleep(0.05)", timeout=1)
                assert info.value.state_kept is True
                assert (await client.execute("kept")).text == "1"
                started = time.monotonic()
                with pytest.raises(KernelDiedError):
                    await client.execute("import os\nos._exit(1)")
                assert time.monotonic() - started < 2.5
                await client.reset()
                assert (await client.execute("1 + 1")).text == "2"


async def test_sandboxed_gateway_crash_is_restarted_on_the_same_url(tmp_path: Path) -> None:
    restarted = anyio.Event()
    with anyio.fail_after(240), sandbox_work_dir() as work:
        async with KernelGateway(port=0, sandbox=True, working_dir=work, startup_timeout=90,
                                 on_restart=lambda event: restarted.set()) as gateway:
            url = gateway.url
            old_srt = gateway.pid
            os.kill(_inner_gateway_pid(gateway), signal.SIGKILL)
            await restarted.wait()
            assert gateway.restart_count == 1
            assert gateway.url == url and gateway.pid != old_srt
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path) as client:
                assert (await client.execute("print('sandboxed again')")).text == "sandboxed again"
