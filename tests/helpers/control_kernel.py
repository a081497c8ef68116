"""A stock Jupyter kernel without kernelbox's protections: the positive control of attacks on kernels.

`stock_kernel` starts ipykernel with jupyter_client's `AsyncKernelManager` as any Jupyter
front end does: plain TCP on loopback, no CurveZMQ (``transport_encryption`` stays at its
``disabled`` default), and its connection file (ports and HMAC key) written where the test says.
An attack that kernelbox must stop has to *succeed* against it, which shows that the attack
works and that kernelbox's protection is what stops it. Asyncio only (jupyter_client's async
client runs on asyncio).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager

START_TIMEOUT_SECONDS = 60.0


@dataclass
class StockKernel:
    """A running stock kernel: its manager (ports in ``manager.get_connection_info()``) and client."""

    manager: AsyncKernelManager
    client: AsyncKernelClient

    @property
    def ports(self) -> dict[str, int]:
        """Its five ports by channel (``shell``, ``iopub``, ``stdin``, ``control``, ``hb``)."""
        info = self.manager.get_connection_info()
        return {name: int(info[f"{name}_port"]) for name in ("shell", "iopub", "stdin", "control", "hb")}

    async def execute(self, code: str, timeout: float = 60.0) -> str:
        """Run `code` and return what it printed (stdout and stderr, in order).

        Raises:
            AssertionError: the code raised (the reply is not ``ok``).
            TimeoutError: no reply within `timeout` seconds.
        """
        printed: list[str] = []

        def keep(message: dict[str, Any]) -> None:
            if message["header"]["msg_type"] == "stream":
                printed.append(message["content"]["text"])

        with anyio.fail_after(timeout + 5):
            reply = await self.client.execute_interactive(code, output_hook=keep, timeout=timeout)
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(printed)


@contextlib.asynccontextmanager
async def stock_kernel(connection_file: Path, cwd: Path) -> AsyncIterator[StockKernel]:
    """A stock ipykernel on 127.0.0.1 whose connection file is `connection_file`.

    The file is written (mode 0600, as jupyter_client writes it) before the kernel starts and
    removed when it stops.
    """
    manager = AsyncKernelManager(kernel_name="python3", connection_file=str(connection_file), ip="127.0.0.1")
    assert manager.transport_encryption == "disabled"  # no CurveZMQ: the point of the control
    with anyio.fail_after(START_TIMEOUT_SECONDS):
        await manager.start_kernel(cwd=str(cwd))
    client = manager.client()
    try:
        client.start_channels()
        with anyio.fail_after(START_TIMEOUT_SECONDS):
            await client.wait_for_ready(timeout=START_TIMEOUT_SECONDS)
        yield StockKernel(manager, client)
    finally:
        client.stop_channels()
        with anyio.fail_after(30, shield=True):
            await manager.shutdown_kernel(now=True)
