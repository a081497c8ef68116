"""Kernels whose connection info never touches the disk, with CurveZMQ on every socket.

Every gateway's kernels get their ports, HMAC key and CurveZMQ keys on a pipe
(`kernelbox._child.gateway.kernel_manager.PrivateConnectionKernelManager`). These tests check that what
re-uses that information still works inside the sandbox: a restart requested over REST, the
client's interrupt-then-restart path after a timeout, an automatic restart after a crash, and
the warm pool.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from helpers.sandbox_dirs import sandbox_work_dir
from test_sandbox import sandbox_prerequisites  # noqa: F401  (autouse: skip or fail in CI)

from kernelbox import ExecutionTimeoutError, KernelClient, KernelDiedError, KernelGateway

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox]
START_TIMEOUT_SECONDS = 90.0
TEST_TIMEOUT_SECONDS = 180.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def gateway() -> AsyncIterator[KernelGateway]:
    """One sandboxed gateway with a warm pool of one kernel."""
    with sandbox_work_dir() as work:
        with anyio.fail_after(START_TIMEOUT_SECONDS):
            gw = KernelGateway(host="127.0.0.1", port=0, sandbox=True, working_dir=work, pool_size=1,
                               startup_timeout=START_TIMEOUT_SECONDS)
            await gw.start()
        try:
            yield gw
        finally:
            with anyio.fail_after(30):
                await gw.stop()


def _client(gateway: KernelGateway) -> KernelClient:
    return KernelClient(host=gateway.host, port=gateway.port, token=gateway.token)


async def test_no_connection_file_is_written_and_sockets_are_curve_encrypted(gateway: KernelGateway) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with _client(gateway) as kc:
            text = (await kc.execute(
                "import glob, os, json\n"
                "app = get_ipython().kernel.parent\n"
                "print(glob.glob(os.environ['JUPYTER_RUNTIME_DIR'] + '/kernel-*.json'), "
                "app.curve_secretkey is not None, app.connection_file)"
            )).text
    files, curve, _ = text.split(" ", 2)
    assert files == "[]" and curve == "True", text


async def test_a_kernel_from_the_pool_runs_code(gateway: KernelGateway) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with _client(gateway) as first, _client(gateway) as second:
            assert (await first.execute("print('one')")).text == "one"
            assert (await second.execute("print('two')")).text == "two"


async def test_a_restart_over_rest_gives_a_working_fresh_kernel(gateway: KernelGateway) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with _client(gateway) as kc:
            await kc.execute("kept = 41")
            async with httpx.AsyncClient(trust_env=False, timeout=60) as http:
                response = await http.post(
                    f"{gateway.url}/api/kernels/{kc.kernel_id}/restart",
                    headers={"Authorization": f"token {gateway.token}"},
                )
            assert response.status_code == 200, response.text
            text = (await kc.execute("print('kept' in globals(), 1 + 1)")).text
    assert text == "False 2"


async def test_the_interrupt_then_restart_path_after_a_timeout(gateway: KernelGateway) -> None:
    ignore_interrupts = (
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True: time.sleep(0.05)"
    )
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with _client(gateway) as kc:
            await kc.execute("kept = 1")
            with pytest.raises(ExecutionTimeoutError) as info:
                await kc.execute(ignore_interrupts, timeout=1)
            assert info.value.state_kept is False
            assert (await kc.execute("print('kept' in globals())")).text == "False"


async def test_a_crashed_kernel_is_replaced_with_new_ports(gateway: KernelGateway) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with _client(gateway) as kc:
            with pytest.raises(KernelDiedError):
                await kc.execute("import os\nos._exit(1)")
            await kc.reset()
            assert (await kc.execute("print(os.getpid() > 0 if 'os' in dir() else 'fresh')")).text == "fresh"


def test_the_kernelspec_declares_curve_and_reads_stdin(tmp_path: Path) -> None:
    import json

    from kernelbox.gateway._state import write_kernelspec

    data_dir = write_kernelspec(tmp_path, memory_limit=None)
    spec = json.loads((data_dir / "kernels" / "python3" / "kernel.json").read_text())
    assert spec["metadata"]["supported_encryption"] == ["curve"]
    assert "--connection-info-stdin" in spec["argv"]
    assert os.path.basename(spec["argv"][0]).startswith("python")
