"""kernelbox through its public API, unsandboxed or inside the OS sandbox."""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._systems._base import ChunkCallback, Outcome, System, UnsupportedWorkload
from kernelbox import ExecutionResult, KernelClient, KernelGateway

HOST = "127.0.0.1"
STOP_TIMEOUT_SECONDS = 10.0
POOL_POLL_INTERVAL_SECONDS = 0.02


class Kernelbox(System):
    packages = (
        *System.packages,
        "kernelbox",
        "jupyter-kernel-gateway",
        "httpx",
        "httpx-ws",
        "anyio",
    )

    def __init__(self, sandbox: bool) -> None:
        self.sandbox = sandbox
        self.name = "kernelbox-sandbox" if sandbox else "kernelbox"  # type: ignore[misc]

    async def start_gateway(self, scratch: Path, pool_size: int = 0) -> KernelGateway:
        kwargs: dict[str, Any] = {
            "host": HOST,
            "port": 0,
            "sandbox": self.sandbox,
            "log_level": "WARNING",
        }
        if pool_size:
            kwargs["pool_size"] = pool_size
        try:
            gateway = KernelGateway(**kwargs)
        except TypeError as exc:
            if pool_size and "pool_size" in str(exc):
                raise UnsupportedWorkload("KernelGateway(pool_size=...) is not supported yet") from exc
            raise
        await gateway.start()
        return gateway

    async def stop_gateway(self, gateway: KernelGateway) -> None:
        await gateway.stop(timeout=STOP_TIMEOUT_SECONDS)

    async def open_kernel(self, gateway: KernelGateway, images_dir: Path) -> KernelClient:
        client = KernelClient(
            host=gateway.host, port=gateway.port, token=gateway.token, images_dir=images_dir
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
        if on_chunk is None:
            result = await kernel.execute(code, timeout=timeout_seconds)
            return Outcome(result.text or "", list(result.images))
        async for item in kernel.stream(code, timeout=timeout_seconds):
            if isinstance(item, ExecutionResult):
                return Outcome(item.text or "", list(item.images))
            on_chunk(str(item))
        raise RuntimeError("kernelbox's stream ended without a result")

    def gateway_pid(self, gateway: KernelGateway) -> int | None:
        return gateway.pid

    async def wait_pool_ready(self, gateway: KernelGateway, timeout_seconds: float) -> None:
        """Wait for the pool to be full: kernelbox's own signal if it has one, else REST.

        The REST fallback counts the gateway's kernels that are idle, since pooled kernels
        are ordinary kernels of the gateway. It polls, which is acceptable here because it
        runs between timed connects, never inside one.
        """
        hook = getattr(gateway, "wait_pool_ready", None)
        if hook is not None:
            outcome = hook(timeout_seconds) if _takes_argument(hook) else hook()
            if inspect.isawaitable(outcome):
                await asyncio.wait_for(outcome, timeout_seconds)
            return
        pool_size = int(getattr(gateway, "pool_size", 0) or 0)
        if not pool_size:
            raise UnsupportedWorkload("this KernelGateway reports no pool_size")
        await _wait_idle_kernels(gateway, pool_size, timeout_seconds)


def _takes_argument(function: Any) -> bool:
    try:
        return bool(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return False


async def _wait_idle_kernels(gateway: KernelGateway, count: int, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    headers = {"Authorization": f"token {gateway.token}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, trust_env=False) as http:
        while True:
            response = await http.get("/api/kernels", timeout=timeout_seconds)
            response.raise_for_status()
            idle = [k for k in response.json() if k.get("execution_state") == "idle"]
            if len(idle) >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the warm pool did not refill to {count} idle kernels in {timeout_seconds} s"
                )
            await asyncio.sleep(POOL_POLL_INTERVAL_SECONDS)
