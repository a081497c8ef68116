"""Backpressure, bad input, misuse and cancellation: each a reproduction that used to fail.

Real gateway, real kernels; every await bounded. Each test names the failure it guards.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import httpx
import pytest

from kernelbox import (
    ExecutionError,
    ExecutionResult,
    GatewayConnectionError,
    KernelClient,
    KernelGateway,
    KernelStoppedError,
    OutputChunk,
)

pytestmark = pytest.mark.anyio


async def _kernel_ids(gateway: KernelGateway) -> list[str]:
    async with httpx.AsyncClient(trust_env=False, headers={"Authorization": f"token {gateway.token}"}) as http:
        return [k["id"] for k in (await http.get(f"{gateway.url}/api/kernels")).json()]


async def test_a_slow_consumer_loses_no_output_and_keeps_the_kernel(gateway: KernelGateway, tmp_path: Path) -> None:
    # Before: a consumer that paused inside `async for` stopped the WebSocket reader; the
    # keepalive pong went unanswered, the socket dropped and most of the output was lost.
    async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                            images_dir=tmp_path, ping_interval=0.5) as client:
        with anyio.fail_after(120):
            await client.execute("marker = 'kept'")
            code = "for i in range(200):\n    print(str(i).zfill(6) + 'x' * 49_993, flush=True)"  # 10 MB
            received = 0
            paused = False
            async with client.stream(code) as run:
                async for chunk in run:
                    received += len(chunk)
                    if not paused:
                        paused = True
                        await anyio.sleep(4)  # the slow consumer itself: 8 keepalive intervals
            assert received == 200 * 50_000
            assert not run.result.truncated
            assert run.result.stdout.count("x" * 49_993) == 200
            assert (await client.execute("print(marker)")).text == "kept"


async def test_a_lone_surrogate_is_refused_at_once_and_the_kernel_keeps_its_state(client: KernelClient) -> None:
    # Before: the gateway raised UnicodeEncodeError, dropped the WebSocket, and the call waited
    # its whole timeout while the kernel's state was lost.
    with anyio.fail_after(30):
        await client.execute("kept = 41")
        started = time.monotonic()
        with pytest.raises(ValueError, match="surrogate"):
            await client.execute("print('\ud83d')")
        assert time.monotonic() - started < 1
        assert (await client.execute("print(kept + 1)")).text == "42"


async def test_oversized_code_is_refused_with_the_limit_and_the_client_stays_usable(client: KernelClient) -> None:
    # Before: a 50 MB code string failed with no reason and the next call raised a wsproto error.
    with anyio.fail_after(30):
        started = time.monotonic()
        with pytest.raises(ValueError, match="10 MiB"):
            await client.execute("x = '" + "a" * (50 * 1024 * 1024) + "'")
        assert time.monotonic() - started < 2
        assert (await client.execute("print('still here')")).text == "still here"


async def test_concurrent_connects_on_one_client_make_one_kernel(gateway: KernelGateway, tmp_path: Path) -> None:
    # Before: one connect() never returned, a kernel leaked and a WebSocket task kept reconnecting.
    before = set(await _kernel_ids(gateway))
    client = KernelClient(host=gateway.host, port=gateway.port, token=gateway.token, images_dir=tmp_path)
    outcomes: list[str] = []

    async def connect() -> None:
        try:
            await client.connect()
            outcomes.append("connected")
        except RuntimeError:
            outcomes.append("refused")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(connect)
            tg.start_soon(connect)
        assert sorted(outcomes) == ["connected", "refused"]
        assert set(await _kernel_ids(gateway)) - before == {client.kernel_id}
        await client.disconnect()
        assert set(await _kernel_ids(gateway)) == before


async def test_corrupt_images_are_reported_and_the_rest_of_the_result_is_kept(
    gateway: KernelGateway, tmp_path: Path
) -> None:
    # Before: a raw binascii.Error/TypeError lost the whole result and left a 0-byte .png.
    images = tmp_path / "images"
    async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token, images_dir=images) as client:
        code = (
            "from IPython.display import publish_display_data\n"
            "print('before')\n"
            "publish_display_data({'image/png': 'not base64 at all!', 'text/plain': 'bad'})\n"
            "publish_display_data({'image/png': 12345, 'text/plain': 'not a string'})\n"
            "import base64\n"
            "publish_display_data({'image/png': base64.b64encode(b'\\x89PNG\\r\\n\\x1a\\n good').decode(), 'text/plain': 'good'})\n"
            "print('after')"
        )
        with anyio.fail_after(30):
            result = await client.execute(code)
    assert result.text is not None and "before" in result.text and "after" in result.text
    assert len(result.outputs) == 3
    assert len(result.images) == 1 and result.images[0].read_bytes() == b"\x89PNG\r\n\x1a\n good"
    assert len(result.output_errors) == 2
    assert all(path.stat().st_size > 0 for path in images.iterdir())


async def test_an_unwritable_images_dir_is_reported_and_the_result_is_kept(gateway: KernelGateway, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                            images_dir=blocker / "images") as client:
        code = "import base64\nfrom IPython.display import publish_display_data\n" \
               "publish_display_data({'image/png': base64.b64encode(b'\\x89PNG\\r\\n\\x1a\\n').decode(), 'text/plain': 'img'})\n" \
               "print('text survives')"
        with anyio.fail_after(30):
            result = await client.execute(code)
    assert "text survives" in (result.text or "")
    assert result.images == []
    assert len(result.output_errors) == 1 and "cannot write" in result.output_errors[0]


async def test_a_cancelled_execute_interrupts_its_code(client: KernelClient) -> None:
    # Before: the abandoned code kept running and the next call waited for it.
    with anyio.fail_after(60):
        await client.execute("kept = 'yes'")
        with anyio.move_on_after(1):
            await client.execute("import time\ntime.sleep(60)")
        started = time.monotonic()
        result = await client.execute("print(kept)", timeout=20)
        assert result.text == "yes"
        assert time.monotonic() - started < 10


async def test_a_stopped_kernel_is_reported_promptly_and_resumes_with_its_state(client: KernelClient) -> None:
    # Before: an execute sent to a SIGSTOPped kernel waited its whole timeout, then the restart
    # request itself timed out (the gateway waited for a shutdown reply a stopped process never
    # sends) and the kernel's state was reported unknown.
    with anyio.fail_after(60):
        await client.execute("kept = 'yes'")
        pid = int((await client.execute("import os; print(os.getpid())")).text)
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(KernelStoppedError, match="SIGCONT") as raised:
                await client.execute("kept = kept + '!'", timeout=30)
            assert time.monotonic() - started < 5  # the 2 s liveness probe, not the 30 s timeout
            assert raised.value.kernel_id == client.kernel_id
            async with httpx.AsyncClient(trust_env=False, headers={"Authorization": f"token {client.token}"}) as http:
                model = (await http.get(f"{client.base_url}/api/kernels/{client.kernel_id}")).json()
            assert model["process_state"] == "stopped"
        finally:
            os.kill(pid, signal.SIGCONT)
        # Continued, the kernel ran the waiting request (its output discarded) and kept its state.
        assert (await client.execute("print(kept)")).text == "yes!"


async def test_a_kernel_that_stops_itself_is_reported_promptly_and_reset_replaces_it(client: KernelClient) -> None:
    # Kernel code stopping its own process: the error comes within seconds, and reset() does not
    # wait for a shutdown reply the stopped process can never send.
    with anyio.fail_after(60):
        started = time.monotonic()
        with pytest.raises(KernelStoppedError):
            await client.execute("import os, signal\nprint('before', flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)")
        assert time.monotonic() - started < 5
        started = time.monotonic()
        await client.reset()
        assert time.monotonic() - started < 5
        assert (await client.execute("1 + 2")).text == "3"


async def test_the_stream_context_manager_yields_chunks_and_keeps_the_result(client: KernelClient) -> None:
    with anyio.fail_after(30):
        async with client.stream("for i in range(3): print(i)\n'done'") as run:
            chunks = [chunk async for chunk in run]
    assert all(isinstance(chunk, OutputChunk) for chunk in chunks)
    assert "".join(chunks).split() == ["0", "1", "2", "'done'"]
    assert isinstance(run.result, ExecutionResult) and run.result.execution_count is not None


async def test_errors_carry_the_kernel_id_and_url(client: KernelClient) -> None:
    with anyio.fail_after(30), pytest.raises(ExecutionError) as info:
        await client.execute("1/0")
    assert info.value.kernel_id == client.kernel_id
    assert info.value.url == client.base_url


async def test_a_bug_in_the_reader_surfaces_as_itself(
    client: KernelClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: any failure of the reader task became "the kernel WebSocket is closed".
    from kernelbox import _protocol  # what the session's router calls for every message

    def broken(message: dict) -> str | None:
        raise LookupError("kernelbox-test: a bug in the reader")

    with anyio.fail_after(30):
        await client.execute("1")
        monkeypatch.setattr(_protocol, "parent_id", broken)
        with pytest.raises(LookupError, match="a bug in the reader"):
            await client.execute("2")
    monkeypatch.undo()
    with anyio.fail_after(30), pytest.raises((LookupError, GatewayConnectionError)):
        await client.execute("3")  # the connection is over; the client says so, with the cause


async def test_a_kernel_exits_by_itself_when_shut_down(tmp_path: Path) -> None:
    """Every shutdown_request ends the kernel process by itself; none is left to the SIGTERM.

    Without kernelbox's ordering (`kernelbox._child.kernel.launcher`), ipykernel's control
    thread raced its own iopub thread at exit, and more than half the shutdowns hung until the
    kernel manager logged "Kernel is taking too long to finish, terminating" (at DEBUG) and
    terminated the kernel, 2.5 s later.
    """
    import logging

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(logging.DEBUG)
    gateway_logger = logging.getLogger("kernelbox.gateway")
    previous_level = gateway_logger.level
    gateway_logger.addHandler(handler)
    gateway_logger.setLevel(logging.DEBUG)
    try:
        with anyio.fail_after(120):
            async with KernelGateway(port=0, working_dir=tmp_path, log_level="DEBUG") as gateway:
                for _ in range(6):
                    async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                            images_dir=tmp_path) as client:
                        assert (await client.execute("1 + 1")).text == "2"
                    # disconnect() returned: the gateway has finished this kernel's shutdown.
    finally:
        gateway_logger.removeHandler(handler)
        gateway_logger.setLevel(previous_level)
    assert sum("Kernel shutdown:" in line for line in lines) >= 6
    assert not [line for line in lines if "taking too long to finish" in line]
