"""``kernelbox mcp`` end to end over stdio, driven by the official MCP SDK's own client."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import httpx
import httpx2
import psutil
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client, StdioServerParameters, types
from mcp.client.streamable_http import streamable_http_client

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
async def test_kernel_text_reaches_the_model_without_terminal_controls(mcp: Client) -> None:
    # MCP clients show tool results in terminals too: no OSC 52 (clipboard), no cursor moves.
    result = await call(mcp, "execute_code", {"code": (
        "import sys\n"
        "print('out\\x1b]52;c;ZXZpbA==\\x07\\x1b[2K\\x1b[31mred\\x1b[0m\\x9b2J|\\r|end')\n"
        "print('err\\x1b]0;title\\x1b\\\\', file=sys.stderr)\n"
        "from IPython.display import display\n"
        "display({'text/plain': 'value\\x1bP1$qm\\x1b\\\\!'}, raw=True)"
    )})
    assert not result.is_error
    assert text_of(result) == "outred|\n|end\nerr\nvalue!"
    failed = await call(mcp, "execute_code", {"code": "raise ValueError('bad\\x1b]52;c;ZXZpbA==\\x07\\x9b1A')"})
    assert failed.is_error
    assert "ValueError: bad" in text_of(failed)
    assert not any(ord(c) < 0x20 and c not in "\n\t" or 0x7F <= ord(c) <= 0x9F for c in text_of(failed))


# -- streamable HTTP: every request needs the bearer token ----------------------------------------


class HttpServer:
    """A real ``kernelbox mcp --transport streamable-http`` process and what it logged."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.url = ""
        self.token: str | None = None
        self.log: list[str] = []
        self.serving = anyio.Event()

    async def read_log(self) -> None:  # reads to the end, so the pipe never fills
        assert self.process.stderr is not None
        lines = BufferedByteReceiveStream(self.process.stderr)
        while True:
            try:
                line = (await lines.receive_until(b"\n", 1 << 20)).decode(errors="replace")
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return
            self.log.append(line)
            if token := re.search(r"MCP bearer token: (\S+)", line):
                self.token = token.group(1)
            if served := re.search(r"Serving MCP \(streamable HTTP\) at (\S+)", line):
                self.url = served.group(1)
                self.serving.set()

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(TIMEOUT):
            return await self.process.wait()


@contextlib.asynccontextmanager
async def http_server(work: Path, *args: str, env: dict[str, str] | None = None) -> AsyncIterator[HttpServer]:
    process = await anyio.open_process(
        [sys.executable, "-m", "kernelbox.cli", "mcp", "--transport", "streamable-http", "--port", "0",
         "--working-dir", str(work), "--images-dir", str(work / "images"), *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    server = HttpServer(process)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.read_log)
            with anyio.fail_after(TIMEOUT):
                await server.serving.wait()
            yield server
            if process.returncode is None:
                await server.stop()
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()


@contextlib.asynccontextmanager
async def token_client(url: str, token: str) -> AsyncIterator[Client]:
    """The SDK's client, sending ``Authorization: Bearer <token>`` with every request."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                  timeout=httpx2.Timeout(TIMEOUT)) as http:
        async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=TIMEOUT) as client:
            yield client


@pytest.mark.anyio
async def test_streamable_http_serves_one_kernel_to_successive_sessions(tmp_path: Path) -> None:
    async with http_server(tmp_path) as server:
        assert server.token is not None and len(server.token) >= 40  # random, printed once
        assert sum(server.token in line for line in server.log) == 1
        # The kernel outlives each client session: state carries over between them.
        with anyio.fail_after(TIMEOUT):
            async with token_client(server.url, server.token) as client:
                await client.call_tool("execute_code", {"code": "shared = 'across sessions'"})
        with anyio.fail_after(TIMEOUT):
            async with token_client(server.url, server.token) as client:
                result = await client.call_tool("execute_code", {"code": "print(shared)"})
                assert text_of(result) == "across sessions"
        assert await server.stop() == 0
    if os.geteuid() == 0:  # started as root without --sandbox: one loud line
        warnings = [line for line in server.log if "WARNING" in line]
        assert len(warnings) == 1 and "anyone holding the token runs code as root" in warnings[0]


def _rpc(method: str, params: dict[str, Any] | None = None, id: int | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params or {}}
    if id is not None:
        message["id"] = id
    return message


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer in a streamable HTTP response (JSON, or one SSE ``data:`` line)."""
    if response.headers["content-type"].startswith("application/json"):
        return dict(response.json())
    data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
    return dict(json.loads(data[-1]))


@pytest.mark.anyio
async def test_streamable_http_refuses_requests_without_the_right_token_and_runs_nothing(tmp_path: Path) -> None:
    # Before: no authentication at all; any local user could run code through 127.0.0.1.
    marker = tmp_path / "ran.txt"
    call_tool = _rpc("tools/call", {"name": "execute_code",
                                    "arguments": {"code": f"open({str(marker)!r}, 'w').write('ran')"}}, id=2)
    async with http_server(tmp_path) as server, httpx.AsyncClient(timeout=TIMEOUT) as http:
        assert server.token is not None
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        authorized = {**headers, "Authorization": f"Bearer {server.token}"}
        with anyio.fail_after(TIMEOUT):
            # A session opened with the token: the requests below differ only in their header.
            opened = await http.post(server.url, headers=authorized, json=_rpc("initialize", {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}))
            assert opened.status_code == 200, opened.text
            session = {"Mcp-Session-Id": opened.headers["mcp-session-id"],
                       "Mcp-Protocol-Version": _answer(opened)["result"]["protocolVersion"]}
            ready = await http.post(server.url, headers={**authorized, **session},
                                    json=_rpc("notifications/initialized", id=None))
            assert ready.status_code == 202
            for refused in [
                {},                                                          # no token
                {"Authorization": "Bearer " + "x" * len(server.token)},     # a wrong token
                {"Authorization": f"Bearer {server.token[:-1]}"},           # almost right
                {"Authorization": f"Basic {server.token}"},                 # another scheme
            ]:
                response = await http.post(server.url, headers={**headers, **session, **refused}, json=call_tool)
                assert response.status_code == 401
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert "Authorization: Bearer" in response.json()["message"]
            fresh = await http.post(server.url, headers=headers, json=_rpc("initialize", {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}))
            assert fresh.status_code == 401 and "mcp-session-id" not in fresh.headers
            assert not marker.exists()
            # The same request with the token runs: only the token stopped the ones above.
            accepted = await http.post(server.url, headers={**authorized, **session}, json=call_tool)
            assert accepted.status_code == 200
            assert _answer(accepted)["result"]["isError"] is False
            assert marker.read_text() == "ran"


@pytest.mark.anyio
async def test_streamable_http_token_from_the_environment_written_to_a_private_file(tmp_path: Path) -> None:
    token = "chosen-token-" + "k" * 30
    token_file = tmp_path / "mcp-token"
    async with http_server(tmp_path, "--token-file", str(token_file), env={"KERNELBOX_MCP_TOKEN": token}) as server:
        assert token_file.read_text() == token + "\n"
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert server.token is None and not any(token in line for line in server.log)  # never printed
        with anyio.fail_after(TIMEOUT):
            async with token_client(server.url, token) as client:
                result = await client.call_tool("execute_code", {"code": "import os\n'KERNELBOX_MCP_TOKEN' in os.environ"})
        assert text_of(result) == "False"  # the kernel never sees it
        assert await server.stop() == 0
    assert not token_file.exists()


def test_a_short_token_and_a_token_on_stdio_are_refused(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "kernelbox.cli", "mcp", "--working-dir", str(tmp_path)]
    short = subprocess.run([*command, "--transport", "streamable-http", "--port", "0"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60, env={**os.environ, "KERNELBOX_MCP_TOKEN": "short"})
    assert short.returncode == 2 and "at least 16" in short.stderr
    stdio = subprocess.run([*command, "--token-file", str(tmp_path / "t")], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
    assert stdio.returncode == 2 and "stdio needs none" in stdio.stderr
