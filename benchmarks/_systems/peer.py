"""The peer: ipybox 0.9.2's `KernelGateway` and `KernelClient`, used as its users use them.

Runs in the peer's own venv (``benchmarks/.venv-ipybox``). ipybox's gateway returns as soon as
the process is spawned; its client's `connect()` retries kernel creation with 1 s sleeps until
the gateway answers, then sleeps 0.2 s and runs its kernel initialisation code. All of that is
part of what a user waits for, so it is all inside the timings. Its executions end on
`execute_reply` alone, which is why the suite checks that every expected line arrived.
"""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path
from typing import Any

from ipybox.kernel_mgr.client import ExecutionResult, KernelClient
from ipybox.kernel_mgr.server import KernelGateway
from ipybox.utils import find_free_port

from benchmarks._systems._base import ChunkCallback, Outcome, System, UnsupportedWorkload

HOST = "127.0.0.1"
# Generous, because 16 kernels initialising at once on 2 cores is slow; ipybox's default is 10 s.
KERNEL_INIT_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 10.0


class Ipybox(System):
    name = "ipybox"
    packages = (*System.packages, "ipybox", "jupyter-kernel-gateway", "aiohttp")

    async def start_gateway(self, scratch: Path, pool_size: int = 0) -> KernelGateway:
        if pool_size:
            raise UnsupportedWorkload("ipybox has no warm kernel pool")
        gateway = KernelGateway(host=HOST, port=find_free_port(), log_level="WARNING")
        await gateway.start()
        return gateway

    async def stop_gateway(self, gateway: KernelGateway) -> None:
        await gateway.stop(timeout=STOP_TIMEOUT_SECONDS)

    async def open_kernel(self, gateway: KernelGateway, images_dir: Path) -> KernelClient:
        client = KernelClient(
            host=gateway.host,
            port=gateway.port,
            images_dir=images_dir,
            kernel_init_timeout=KERNEL_INIT_TIMEOUT_SECONDS,
        )
        await client.connect()
        return client

    async def close_kernel(self, kernel: KernelClient) -> None:
        await kernel.disconnect()

    async def execute(
        self,
        kernel: KernelClient,
        code: str,
        timeout_seconds: float,
        on_chunk: ChunkCallback | None = None,
    ) -> Outcome:
        outcome: Outcome | None = None
        async with aclosing(kernel.stream(code, timeout=timeout_seconds)) as items:
            async for item in items:
                if isinstance(item, ExecutionResult):
                    outcome = Outcome(item.text or "", list(item.images))
                elif on_chunk is not None:
                    on_chunk(item)
        if outcome is None:
            raise RuntimeError("ipybox's stream ended without a result")
        return outcome

    def gateway_pid(self, gateway: Any) -> int | None:
        # ipybox does not expose the pid; its (private) process handle is the only way.
        process = getattr(gateway, "_process", None)
        return process.pid if process is not None else None
