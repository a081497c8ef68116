"""Soak: many executions over concurrent kernels, with nothing lost, misrouted or leaked.

Sized to fit CI: 10,000 executions over 8 kernels (KERNELBOX_SOAK_EXECUTIONS overrides).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import anyio
import psutil
import pytest

from kernelbox import KernelClient, KernelGateway

pytestmark = [pytest.mark.anyio, pytest.mark.soak]

KERNELS = 8
EXECUTIONS = int(os.environ.get("KERNELBOX_SOAK_EXECUTIONS", "10000"))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_soak_concurrent_kernels_lose_and_leak_nothing(anyio_backend: str, tmp_path: Path) -> None:
    me = psutil.Process()
    per_kernel = EXECUTIONS // KERNELS
    mismatches: list[tuple[int, int, str | None]] = []
    done = [0] * KERNELS
    samples: dict[str, tuple[int, int]] = {}

    async def drive(k: int, client: KernelClient) -> None:
        for i in range(per_kernel):
            result = await client.execute(f"print('{k}:{i}')")
            if result.text != f"{k}:{i}":
                mismatches.append((k, i, result.text))
            done[k] += 1
            if k == 0 and i == per_kernel // 10:
                gc.collect()
                samples["warm"] = (me.num_fds(), me.memory_info().rss)

    with anyio.fail_after(1500):
        async with KernelGateway(port=0, working_dir=tmp_path) as gateway:
            clients = [KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path) for _ in range(KERNELS)]
            for client in clients:
                await client.connect()
            try:
                async with anyio.create_task_group() as tg:
                    for k, client in enumerate(clients):
                        tg.start_soon(drive, k, client)
                gc.collect()
                samples["end"] = (me.num_fds(), me.memory_info().rss)
            finally:
                for client in clients:
                    await client.disconnect()
    assert mismatches == []
    assert sum(done) == per_kernel * KERNELS
    warm_fds, warm_rss = samples["warm"]
    end_fds, end_rss = samples["end"]
    assert end_fds <= warm_fds  # no descriptor leak
    assert end_rss - warm_rss < 64 * 1024 * 1024  # memory does not grow with executions
