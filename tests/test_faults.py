"""Fault injection against real processes: crashes, kills, hangs, drops, floods and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import psutil
import pytest
from helpers.processes import alive, first_line, survivors_after
from helpers.proxy import cuttable_proxy

from kernelbox import (
    ClientError,
    ExecutionError,
    ExecutionTimeoutError,
    GatewayExitedError,
    GatewayRestart,
    KernelClient,
    KernelDiedError,
    KernelGateway,
    KernelStartError,
)

pytestmark = pytest.mark.anyio
HELPERS = Path(__file__).parent / "helpers"


async def _kernel_pid(client: KernelClient) -> int:
    return int((await client.execute("import os\nos.getpid()")).text)


# -- kernel death --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["os._exit", "SIGKILL", "segfault"])
async def test_kernel_death_mid_execution_raises_promptly_and_reset_recovers(
    client: KernelClient, how: str
) -> None:
    with anyio.fail_after(60):
        await client.execute("before = 1")
        pid = await _kernel_pid(client)
        code = {
            "os._exit": "import os, time\nprint('working', flush=True)\ntime.sleep(0.3)\nos._exit(3)",
            "SIGKILL": "import time\nprint('working', flush=True)\ntime.sleep(30)",
            "segfault": "import ctypes, time\nprint('working', flush=True)\ntime.sleep(0.3)\nctypes.string_at(0)",
        }[how]
        started = None
        with pytest.raises(KernelDiedError):
            async for _ in client.stream(code, timeout=30):
                if started is None:  # 'working' arrived: the kernel is mid-execution
                    started = time.monotonic()
                    if how == "SIGKILL":
                        os.kill(pid, signal.SIGKILL)
        assert started is not None
        assert time.monotonic() - started < 2.5  # ~1 s detection, not the 30 s timeout
        with pytest.raises(KernelDiedError):  # the same clear error until reset()
            await client.execute("1 + 1")
        await client.reset()
        assert (await client.execute("1 + 1")).text == "2"
        with pytest.raises(ExecutionError):
            await client.execute("before")


async def test_uninterruptible_code_is_restarted_and_says_state_was_lost(client: KernelClient) -> None:
    with anyio.fail_after(90):
        await client.execute("kept = 1")
        code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
        with pytest.raises(TimeoutError) as info:
            await client.execute(code, timeout=1)
        assert isinstance(info.value, ExecutionTimeoutError)
        assert info.value.state_kept is False
        assert "restarted" in str(info.value)
        with pytest.raises(ExecutionError) as missing:
            await client.execute("kept")
        assert missing.value.ename == "NameError"
        assert (await client.execute("'usable'")).text == "'usable'"


async def test_interrupt_stops_a_long_run(client: KernelClient) -> None:
    async def interrupt_when_running(started: anyio.Event) -> None:
        await started.wait()
        await client.interrupt()

    with anyio.fail_after(60):
        started = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(interrupt_when_running, started)
            with pytest.raises(ExecutionError) as info:
                async for _ in client.stream("import time\nprint('go', flush=True)\ntime.sleep(60)"):
                    started.set()
    assert info.value.ename == "KeyboardInterrupt"


# -- gateway faults -------------------------------------------------------------------------


async def test_gateway_sigkill_mid_execution_restarts_on_the_same_url(tmp_path: Path) -> None:
    restarts: list[GatewayRestart] = []
    restarted = anyio.Event()

    def on_restart(event: GatewayRestart) -> None:
        restarts.append(event)
        restarted.set()

    with anyio.fail_after(120):
        async with KernelGateway(port=0, working_dir=tmp_path, on_restart=on_restart) as gateway:
            url, old_pid = gateway.url, gateway.pid
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path) as client:
                killed_at = None
                with pytest.raises(ClientError):
                    async for _ in client.stream("import time\nprint('go', flush=True)\ntime.sleep(60)"):
                        if killed_at is None:
                            killed_at = time.monotonic()
                            os.kill(old_pid, signal.SIGKILL)
                error_after = time.monotonic() - killed_at
                await restarted.wait()
                assert gateway.url == url
                assert gateway.pid not in (None, old_pid)
                assert gateway.state == "running"
                assert restarts[0].old_pid == old_pid and restarts[0].returncode == -signal.SIGKILL
                assert gateway.restart_count == 1
                await client.reset()  # a new kernel on the restarted gateway, same URL
                assert (await client.execute("print('back')")).text == "back"
    assert error_after < 15


async def test_join_raises_when_restarts_are_exhausted(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with KernelGateway(port=0, working_dir=tmp_path, restart_limit=0) as gateway:
            pid = gateway.pid
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(GatewayExitedError) as info:
                await gateway.join()
            assert info.value.returncode == -signal.SIGKILL
            assert gateway.state == "failed"
    assert gateway.state == "stopped"


async def test_a_restart_that_cannot_respawn_ends_join_with_the_cause(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with anyio.fail_after(60):
        async with KernelGateway(port=0, working_dir=work, restart_limit=3) as gateway:
            work.rmdir()  # the working directory vanishes; the next spawn cannot start there
            killed_at = time.monotonic()
            os.kill(gateway.pid, signal.SIGKILL)
            with pytest.raises(GatewayExitedError, match="could not be restarted") as info:
                await gateway.join()
            assert time.monotonic() - killed_at < 10  # the first back-off, not the restart budget
            assert isinstance(info.value.__cause__, FileNotFoundError)
            assert info.value.returncode == -signal.SIGKILL
            assert gateway.state == "failed"
    assert gateway.state == "stopped"


@pytest.mark.parametrize("shadow", ["json.py", "logging.py", "sitecustomize.py"])
async def test_modules_in_the_working_dir_cannot_shadow_the_gateways_imports(tmp_path: Path, shadow: str) -> None:
    # The gateway never imports from the working dir (nor PYTHONPATH); kernels start with the
    # standard library (and ipykernel) from the installation, then see the working dir.
    (tmp_path / shadow).write_text("raise SystemExit('kernelbox-test: shadowed')\n")
    with anyio.fail_after(60):
        async with KernelGateway(port=0, working_dir=tmp_path) as gateway:
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path) as client:
                assert (await client.execute("print(6 * 7)")).text == "42"


async def test_concurrent_stops_both_return_after_the_gateway_is_gone(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        gateway = KernelGateway(port=0, working_dir=tmp_path)
        await gateway.start()
        pid = gateway.pid
        returned: list[bool] = []

        async def stop() -> None:
            await gateway.stop()
            returned.append(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop)
            tg.start_soon(stop)
        assert returned == [False, False]
        assert gateway.state == "stopped"


async def test_sigstopped_gateway_is_bounded_by_timeouts(tmp_path: Path) -> None:
    with anyio.fail_after(120):
        async with KernelGateway(port=0, working_dir=tmp_path) as gateway:
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path) as client:
                await client.execute("x = 5")
                os.killpg(gateway.pid, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    with pytest.raises(TimeoutError) as info:
                        await client.execute("x", timeout=1)
                    assert time.monotonic() - started < 15
                    assert info.value.state_kept is None
                    assert "unknown" in str(info.value)
                finally:
                    os.killpg(gateway.pid, signal.SIGCONT)
                # The interrupt sent while the gateway was stopped is delivered once it resumes
                # and may hit the next execution: that is what "state unknown" means.
                for _ in range(3):
                    try:
                        result = await client.execute("print(x)")
                        break
                    except ExecutionError as exc:
                        assert exc.ename == "KeyboardInterrupt", exc
                assert result.text == "5"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_supervisor_sigkill_leaves_no_process_behind(anyio_backend: str) -> None:
    process = await anyio.open_process([sys.executable, str(HELPERS / "supervisor_child.py")],
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    pids: set[int] = set()
    try:
        with anyio.fail_after(60):
            line = await first_line(process)
        info = json.loads(line)
        pids = {info["gateway"], *info["tree"]}
        assert info["kernel"] in pids
        process.kill()
        await process.wait()
        killed_at = time.monotonic()
        assert [p.pid for p in await survivors_after(pids, timeout=2)] == []
        assert time.monotonic() - killed_at <= 2.5
    finally:
        for pid in alive(pids):
            os.kill(pid, signal.SIGKILL)
        await process.aclose()


# -- connection loss ------------------------------------------------------------------------


async def test_dropped_websocket_reconnects_and_loses_no_output(gateway: KernelGateway, tmp_path: Path) -> None:
    async with cuttable_proxy(gateway.port) as proxy:
        async with KernelClient(host="127.0.0.1", port=proxy.port, token=gateway.token,
                                images_dir=tmp_path) as client:
            code = "import time\nprint('before', flush=True)\ntime.sleep(1)\nfor i in range(100):\n    print(i)"
            chunks = []
            with anyio.fail_after(60):
                async for item in client.stream(code):
                    chunks.append(item)
                    if str(item) == "before\n":
                        assert proxy.cut() >= 1
            result = chunks[-1]
            assert result.text == "before\n" + "\n".join(str(i) for i in range(100))
            with anyio.fail_after(30):
                assert (await client.execute("'still connected'")).text == "'still connected'"
            assert proxy.connections >= 2


# -- resource bounds ------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_gigabyte_print_flood_is_truncated_and_memory_stays_bounded(
    anyio_backend: str, tmp_path: Path
) -> None:
    limit = 8 * 1024 * 1024
    me = psutil.Process()
    async with KernelGateway(port=0, working_dir=tmp_path) as gateway, KernelClient(
        host=gateway.host, port=gateway.port, token=gateway.token, images_dir=tmp_path,
        max_output_bytes=limit,
    ) as client:
        rss_before = me.memory_info().rss
        peak = rss_before

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, me.memory_info().rss)
                await anyio.sleep(0.05)

        code = "import sys\nline = 'y' * 1023 + '\\n'\nfor _ in range(1024 * 1024):\n    sys.stdout.write(line)"
        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sample)
                result = await client.execute(code, timeout=280)
                tg.cancel_scope.cancel()
    assert result.truncated
    assert "[kernelbox: output truncated after 8388608 bytes]" in result.text
    assert len(result.text.encode()) < limit + 200
    assert peak - rss_before < 200 * 1024 * 1024, peak - rss_before  # 1 GB went through


async def test_max_kernels_gives_a_clear_error(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with KernelGateway(port=0, working_dir=tmp_path, max_kernels=1) as gateway:
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path):
                second = KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                      images_dir=tmp_path)
                with pytest.raises(KernelStartError, match="limit"):
                    await second.connect()


async def test_idle_kernels_are_culled(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with KernelGateway(port=0, working_dir=tmp_path, cull_idle_timeout=3.0, cull_interval=0.5,
                                 cull_connected=True) as gateway:
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path) as client:
                await client.execute("x = 1")
                headers = {"Authorization": f"token {gateway.token}"}
                async with httpx.AsyncClient(trust_env=False, headers=headers) as http:
                    while (await http.get(f"{gateway.url}/api/kernels/{client.kernel_id}")).status_code != 404:
                        await anyio.sleep(0.2)  # polling the gateway for the cull, bounded above
                with pytest.raises(KernelDiedError, match="culled"):
                    await client.execute("x")
                await client.reset()
                assert (await client.execute("1")).text == "1"


# -- bad input ------------------------------------------------------------------------------


async def test_very_large_code_runs(client: KernelClient) -> None:
    code = "data = '" + "a" * (5 * 1024 * 1024) + "'\nprint(len(data))"
    with anyio.fail_after(60):
        assert (await client.execute(code)).text == str(5 * 1024 * 1024)


async def test_output_that_is_not_utf8_is_replaced_not_fatal(client: KernelClient) -> None:
    code = "import os, sys\nsys.stdout.flush()\nos.write(1, b'bad \\xff\\xfe bytes\\n')\nprint('after')"
    with anyio.fail_after(30):
        result = await client.execute(code)
    assert "after" in result.text
    assert "bytes" in result.text
    assert (await client.execute("'ok'")).text == "'ok'"


async def test_kernel_memory_limit_raises_memory_error_and_keeps_the_kernel(tmp_path: Path) -> None:
    limit = 512 * 1024 * 1024
    with anyio.fail_after(90):
        async with KernelGateway(port=0, working_dir=tmp_path, kernel_memory_limit=limit) as gateway:
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path) as client:
                await client.execute("kept = 'yes'\nsmall = bytearray(64 * 1024 * 1024)")
                with pytest.raises(ExecutionError) as info:
                    await client.execute("big = bytearray(1024 * 1024 * 1024)")
                assert info.value.ename == "MemoryError"
                assert (await client.execute("print(kept, len(small))")).text == f"yes {64 * 1024 * 1024}"
                soft = (await client.execute("import resource\nresource.getrlimit(resource.RLIMIT_DATA)[0]")).text
                assert int(soft) == limit
    import resource

    assert resource.getrlimit(resource.RLIMIT_DATA)[0] != limit  # the kernel's limit, not ours


def test_kernel_memory_limit_must_be_plausible() -> None:
    with pytest.raises(ValueError, match="at least"):
        KernelGateway(kernel_memory_limit=1024)
