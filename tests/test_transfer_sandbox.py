"""File transfer and the MCP server with ``sandbox=True``: same behaviour inside the OS sandbox."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from helpers.sandbox_dirs import sandbox_work_dir
from mcp import Client, StdioServerParameters, types
from test_sandbox import sandbox_prerequisites  # noqa: F401  (autouse: skip or fail in CI)

from kernelbox import FileTransferError, KernelClient, KernelGateway

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox]
TIMEOUT = 90


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


async def test_transfer_round_trip_and_refusals_inside_the_sandbox(tmp_path: Path) -> None:
    data = os.urandom(1_500_000)
    with anyio.fail_after(TIMEOUT), sandbox_work_dir() as work:
        async with KernelGateway(host="127.0.0.1", port=0, sandbox=True, working_dir=work) as gateway:
            async with KernelClient(base_url=gateway.url, token=gateway.token, images_dir=tmp_path / "img") as kc:
                written = await kc.upload(data, "in/blob.bin")
                assert written == str(work / "in" / "blob.bin")
                assert (work / "in" / "blob.bin").read_bytes() == data
                assert await kc.download("in/blob.bin") == data
                with pytest.raises(FileTransferError) as outside:
                    await kc.upload(b"x", "../escape.txt")
                assert outside.value.reason == "outside"
                # Allowed by kernelbox, refused by the sandbox: a clear error, not a hang.
                with pytest.raises(FileTransferError, match="Read-only file system|Permission denied") as denied:
                    await kc.upload(b"x", "/usr/kernelbox-test", allow_outside=True)
                assert denied.value.reason == "os_error"


async def test_mcp_server_with_sandbox(tmp_path: Path) -> None:
    with sandbox_work_dir() as work:
        await _mcp_round_trip(work)


async def _mcp_round_trip(work: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "kernelbox.cli", "mcp", "--sandbox", "--working-dir", str(work)],
    )
    with anyio.fail_after(TIMEOUT):
        async with Client(params, read_timeout_seconds=TIMEOUT) as client:
            await client.call_tool("upload_file", {"path": "n.txt", "content": "21"})
            result = await client.call_tool("execute_code", {"code": "print(int(open('n.txt').read()) * 2)"})
            assert [block.text for block in result.content if isinstance(block, types.TextContent)] == ["42"]
            back = await client.call_tool("download_file", {"path": "n.txt"})
            [resource] = [b.resource for b in back.content if isinstance(b, types.EmbeddedResource)]
            assert isinstance(resource, types.TextResourceContents) and resource.text == "21"
