"""``kernelbox mcp`` end to end over stdio, driven by the official MCP SDK's own client."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import psutil
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client, StdioServerParameters, types

TIMEOUT = 60


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # the server runs in its own process; the SDK client adds nothing under trio


def server_params(work: Path, images: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "kernelbox.cli", "mcp", "--working-dir", str(work), "--images-dir", str(images),
              "--env", "FROM_MCP_CONFIG=yes"],
    )


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp-work")


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp-images")


@pytest.fixture(scope="module")
async def mcp(work_dir: Path, images_dir: Path) -> AsyncIterator[Client]:
    """One ``kernelbox mcp`` server process (stdio) shared by the module's tests.

    The client holds a task group open across ``yield``, so no cancel scope may wrap its
    entry; ``read_timeout_seconds`` bounds every request instead, the handshake included.
    """
    async with Client(server_params(work_dir, images_dir), read_timeout_seconds=TIMEOUT) as client:
        yield client


async def call(mcp: Client, tool: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> types.CallToolResult:
    with anyio.fail_after(TIMEOUT):
        return await mcp.call_tool(tool, arguments or {}, **kwargs)


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


@pytest.mark.anyio
async def test_lists_the_kernel_tools(mcp: Client) -> None:
    with anyio.fail_after(TIMEOUT):
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
    assert set(tools) == {"execute_code", "interrupt_kernel", "reset_kernel", "upload_file", "download_file"}
    schema = tools["execute_code"].input_schema
    assert schema["required"] == ["code"]
    assert set(schema["properties"]) == {"code", "timeout"}
    assert tools["download_file"].annotations is not None and tools["download_file"].annotations.read_only_hint


@pytest.mark.anyio
async def test_state_persists_across_calls_and_env_reaches_the_kernel(mcp: Client) -> None:
    first = await call(mcp, "execute_code", {"code": "import os\nanswer = 21"})
    assert not first.is_error
    second = await call(mcp, "execute_code", {"code": "print(answer * 2)\nos.environ['FROM_MCP_CONFIG']"})
    assert not second.is_error
    assert text_of(second) == "42\n'yes'"


@pytest.mark.anyio
async def test_errors_come_back_as_tool_errors_with_output_and_traceback(mcp: Client) -> None:
    result = await call(mcp, "execute_code", {"code": "print('before')\n{}['missing']"})
    assert result.is_error
    text = text_of(result)
    assert text.startswith("before\n\nKeyError: 'missing'")
    assert "Traceback" in text


@pytest.mark.anyio
async def test_a_plot_comes_back_as_image_content_and_a_saved_file(mcp: Client, images_dir: Path) -> None:
    result = await call(mcp, "execute_code", {
        "code": "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()",
    })
    assert not result.is_error
    images = [block for block in result.content if isinstance(block, types.ImageContent)]
    assert len(images) == 1
    assert images[0].mime_type == "image/png"
    png = base64.b64decode(images[0].data)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    saved = list(images_dir.glob("*.png"))
    assert len(saved) == 1 and saved[0].read_bytes() == png
    assert f"[image saved: {saved[0]}]" in text_of(result)


@pytest.mark.anyio
async def test_binary_upload_then_download_byte_for_byte(mcp: Client, work_dir: Path) -> None:
    data = os.urandom(100_000) + bytes(range(256))
    uploaded = await call(mcp, "upload_file", {
        "path": "inputs/blob.bin", "content_base64": base64.b64encode(data).decode("ascii"),
    })
    assert not uploaded.is_error, text_of(uploaded)
    assert text_of(uploaded) == f"Wrote {len(data)} bytes to {work_dir / 'inputs' / 'blob.bin'}"
    assert (work_dir / "inputs" / "blob.bin").read_bytes() == data

    downloaded = await call(mcp, "download_file", {"path": "inputs/blob.bin"})
    assert not downloaded.is_error
    resources = [block.resource for block in downloaded.content if isinstance(block, types.EmbeddedResource)]
    assert len(resources) == 1 and isinstance(resources[0], types.BlobResourceContents)
    assert base64.b64decode(resources[0].blob) == data

    await call(mcp, "upload_file", {"path": "notes.txt", "content": "héllo\n"})
    text_file = await call(mcp, "download_file", {"path": "notes.txt"})
    [resource] = [block.resource for block in text_file.content if isinstance(block, types.EmbeddedResource)]
    assert isinstance(resource, types.TextResourceContents) and resource.text == "héllo\n"


@pytest.mark.anyio
async def test_paths_outside_the_working_directory_are_refused(mcp: Client, work_dir: Path) -> None:
    result = await call(mcp, "upload_file", {"path": "../escaped.txt", "content": "no"})
    assert result.is_error
    assert "outside the kernel's working directory" in text_of(result)
    assert "allow_outside" not in text_of(result)  # a hint for Python callers, not for tool callers
    assert not (work_dir.parent / "escaped.txt").exists()
    missing = await call(mcp, "download_file", {"path": "/etc/passwd"})
    assert missing.is_error


@pytest.mark.anyio
async def test_interrupt_stops_a_long_run_from_a_concurrent_request(mcp: Client) -> None:
    await call(mcp, "execute_code", {"code": "kept = 'still here'"})
    started = anyio.Event()
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")
        if message and "started" in message:
            started.set()

    outcome: dict[str, types.CallToolResult] = {}
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:

            async def long_run() -> None:
                outcome["run"] = await mcp.call_tool(
                    "execute_code",
                    {"code": "import time\nprint('started', flush=True)\ntime.sleep(300)"},
                    progress_callback=on_progress,
                )

            tg.start_soon(long_run)
            await started.wait()  # the output arrived as a progress notification
            interrupted = await mcp.call_tool("interrupt_kernel", {})
            assert not interrupted.is_error
    run = outcome["run"]
    assert run.is_error
    assert "started" in text_of(run) and "KeyboardInterrupt" in text_of(run)
    assert any("started" in message for message in messages)
    after = await call(mcp, "execute_code", {"code": "print(kept)"})
    assert text_of(after) == "still here"


@pytest.mark.anyio
async def test_reset_gives_a_fresh_kernel(mcp: Client) -> None:
    await call(mcp, "execute_code", {"code": "doomed = 1"})
    reset = await call(mcp, "reset_kernel")
    assert not reset.is_error
    result = await call(mcp, "execute_code", {"code": "doomed"})
    assert result.is_error and "NameError" in text_of(result)


@pytest.mark.anyio
async def test_exit_stops_the_gateway_and_kernel(tmp_path: Path) -> None:
    with anyio.fail_after(TIMEOUT):  # entered before, and left after, the client's task group
        async with Client(server_params(tmp_path, tmp_path / "images"), read_timeout_seconds=TIMEOUT) as client:
            result = await client.call_tool("execute_code", {"code": "import os\nprint(os.getpid(), os.getppid())"})
            kernel_pid, parent_pid = (int(n) for n in text_of(result).split())
            processes = [psutil.Process(kernel_pid), psutil.Process(parent_pid)]
    gone, alive = await anyio.to_thread.run_sync(lambda: psutil.wait_procs(processes, timeout=30))
    assert alive == []


@pytest.mark.anyio
async def test_streamable_http_serves_one_kernel_to_successive_sessions(tmp_path: Path) -> None:
    process = await anyio.open_process(
        [sys.executable, "-m", "kernelbox.cli", "mcp", "--transport", "streamable-http", "--port", "0",
         "--working-dir", str(tmp_path), "--images-dir", str(tmp_path / "images")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        async with anyio.create_task_group() as tg:
            url_found = anyio.Event()
            url: list[str] = []

            async def read_log() -> None:  # reads to the end, so the pipe never fills
                assert process.stderr is not None
                lines = BufferedByteReceiveStream(process.stderr)
                while True:
                    try:
                        line = (await lines.receive_until(b"\n", 1 << 20)).decode(errors="replace")
                    except (anyio.EndOfStream, anyio.IncompleteRead):
                        return
                    match = re.search(r"Serving MCP \(streamable HTTP\) at (\S+)", line)
                    if match and not url_found.is_set():
                        url.append(match.group(1))
                        url_found.set()

            tg.start_soon(read_log)
            with anyio.fail_after(TIMEOUT):
                await url_found.wait()
            # The kernel outlives each client session: state carries over between them.
            with anyio.fail_after(TIMEOUT):
                async with Client(url[0], read_timeout_seconds=TIMEOUT) as client:
                    await client.call_tool("execute_code", {"code": "shared = 'across sessions'"})
            with anyio.fail_after(TIMEOUT):
                async with Client(url[0], read_timeout_seconds=TIMEOUT) as client:
                    result = await client.call_tool("execute_code", {"code": "print(shared)"})
                    assert text_of(result) == "across sessions"
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(TIMEOUT):
                assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()
