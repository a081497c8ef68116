"""The floor: direct `jupyter_client` over ZMQ, no gateway, no WebSocket.

An execution is complete when both the shell `execute_reply` and the iopub `status: idle` for
its msg_id have arrived (their order is not guaranteed). Readiness after a kernel start is the
minimal handshake: a `kernel_info_request` answered on shell *and* seen on iopub (which proves
the iopub subscription is live). `jupyter_client`'s own `wait_for_ready` additionally waits for
0.2 s of iopub silence; the floor skips that fixed wait so that it stays a floor.

Requests are `jupyter_client`'s defaults (``store_history=True``, as kernelbox sends), so the
kernel does the same work for both and the difference is transport; ``store_history=True``
costs about 1 ms of kernel time per execution here (ipybox sends False).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager

from benchmarks._systems._base import ChunkCallback, Outcome, System

KERNEL_NAME = "python3"
# A kernel_info request is re-sent when its reply takes longer than this (kernel still starting)
# or when its iopub status does not follow within the second bound (iopub joined late).
READY_REPLY_SECONDS = 2.0
READY_IOPUB_SECONDS = 0.05
READY_TIMEOUT_SECONDS = 60.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0


@dataclass
class _NoGateway:
    """The floor has no gateway; this only keeps the scratch directory for symmetry."""

    scratch: Path


@dataclass
class _ZmqKernel:
    manager: AsyncKernelManager
    client: AsyncKernelClient
    images_dir: Path


class ZmqFloor(System):
    name = "zmq"

    async def start_gateway(self, scratch: Path, pool_size: int = 0) -> _NoGateway:
        return _NoGateway(scratch)

    async def stop_gateway(self, gateway: Any) -> None:
        return None

    async def open_kernel(self, gateway: Any, images_dir: Path) -> _ZmqKernel:
        manager = AsyncKernelManager(kernel_name=KERNEL_NAME)
        await manager.start_kernel()
        client = manager.client()
        client.start_channels()
        try:
            await asyncio.wait_for(_wait_ready(client), READY_TIMEOUT_SECONDS)
        except BaseException:
            client.stop_channels()
            await manager.shutdown_kernel(now=True)
            raise
        return _ZmqKernel(manager, client, images_dir)

    async def close_kernel(self, kernel: _ZmqKernel) -> None:
        kernel.client.stop_channels()
        await asyncio.wait_for(kernel.manager.shutdown_kernel(now=True), SHUTDOWN_TIMEOUT_SECONDS)

    async def execute(
        self,
        kernel: _ZmqKernel,
        code: str,
        timeout_seconds: float,
        on_chunk: ChunkCallback | None = None,
    ) -> Outcome:
        client = kernel.client
        msg_id = client.execute(code)
        collector = _IopubCollector(msg_id, kernel.images_dir, on_chunk)
        async with asyncio.timeout(timeout_seconds):
            reply, _ = await asyncio.gather(
                _shell_reply(client, msg_id), collector.until_idle(client)
            )
        if reply["content"]["status"] == "error":
            content = reply["content"]
            raise RuntimeError(f"{content.get('ename')}: {content.get('evalue')}")
        return Outcome("".join(collector.chunks).strip(), collector.images)

    def kernel_pids(self, gateway: Any, kernel: Any) -> list[int]:
        provisioner = kernel.manager.provisioner
        pid = getattr(provisioner, "pid", None)
        return [pid] if pid is not None else []


async def _shell_reply(client: AsyncKernelClient, msg_id: str) -> dict[str, Any]:
    while True:
        msg = await client.get_shell_msg()
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


class _IopubCollector:
    """Collects one execution's iopub output until its `status: idle`."""

    def __init__(self, msg_id: str, images_dir: Path, on_chunk: ChunkCallback | None) -> None:
        self.msg_id = msg_id
        self.images_dir = images_dir
        self.on_chunk = on_chunk
        self.chunks: list[str] = []
        self.images: list[Path] = []

    async def until_idle(self, client: AsyncKernelClient) -> None:
        while True:
            msg = await client.get_iopub_msg()
            if msg["parent_header"].get("msg_id") != self.msg_id:
                continue
            msg_type, content = msg["msg_type"], msg["content"]
            if msg_type == "status" and content["execution_state"] == "idle":
                return
            if msg_type == "stream":
                self._add_text(content["text"])
            elif msg_type in ("execute_result", "display_data"):
                self._add_bundle(content["data"])

    def _add_text(self, text: str) -> None:
        self.chunks.append(text)
        if self.on_chunk is not None:
            self.on_chunk(text)

    def _add_bundle(self, data: dict[str, Any]) -> None:
        if "text/plain" in data:
            self._add_text(data["text/plain"])
        if "image/png" in data:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            path = self.images_dir / f"{uuid.uuid4().hex}.png"
            path.write_bytes(base64.b64decode(data["image/png"]))
            self.images.append(path)


async def _wait_ready(client: AsyncKernelClient) -> None:
    """Return once a kernel_info request is answered on shell and echoed on iopub."""
    while True:
        msg_id = client.kernel_info()
        try:
            async with asyncio.timeout(READY_REPLY_SECONDS):
                await _shell_reply(client, msg_id)
            async with asyncio.timeout(READY_IOPUB_SECONDS):
                await _iopub_status(client, msg_id)
            return
        except TimeoutError:
            continue  # the kernel was not up yet, or iopub joined late: ask again


async def _iopub_status(client: AsyncKernelClient, msg_id: str) -> None:
    while True:
        msg = await client.get_iopub_msg()
        if msg["msg_type"] == "status" and msg["parent_header"].get("msg_id") == msg_id:
            return
