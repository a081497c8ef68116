"""The warm kernel pool: ready kernels handed out once each, same environment as fresh ones."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import anyio
import psutil
import pytest

from kernelbox import KernelClient, KernelGateway, KernelStartError

pytestmark = pytest.mark.anyio


async def _wait_for_ready_pool(gateway: KernelGateway, ready: int) -> None:
    """Wait until the gateway logs that `ready` pooled kernels are ready (bounded by the caller)."""
    marker = f"({ready} ready)"
    while not any("Pooled kernel" in line and marker in line for line in gateway.log_tail):
        await anyio.sleep(0.05)  # polling the gateway's log for a condition


async def test_connect_takes_a_ready_pooled_kernel_with_the_same_environment(tmp_path: Path) -> None:
    os.environ["KERNELBOX_POOL_TEST_SECRET"] = "hidden"
    with anyio.fail_after(120):
        async with KernelGateway(port=0, working_dir=tmp_path, pool_size=2, env={"INJECTED": "yes"}) as gateway:
            await _wait_for_ready_pool(gateway, 2)
            requested_at = time.time()
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path) as client:
                result = await client.execute("import os, json\nprint(json.dumps([os.getpid(), dict(os.environ), os.getcwd()]))")
                pid, env, cwd = json.loads(result.text)
                assert psutil.Process(pid).create_time() < requested_at  # started ahead of demand
                assert env["INJECTED"] == "yes"
                assert "KERNELBOX_POOL_TEST_SECRET" not in env
                assert Path(cwd).resolve() == tmp_path.resolve()
            # A replacement was started in the background: the pool is full again.
            await _wait_for_ready_pool(gateway, 2)


async def test_pooled_kernels_are_never_handed_out_twice(tmp_path: Path) -> None:
    ids: list[str] = []
    pids: list[int] = []

    async def connect_and_report() -> None:
        async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                images_dir=tmp_path) as client:
            ids.append(client.kernel_id)
            pids.append(int((await client.execute("import os\nos.getpid()")).text))
            if len(pids) == 4:  # hold every kernel until all four are in use at once
                all_connected.set()
            await all_connected.wait()

    with anyio.fail_after(120):
        async with KernelGateway(port=0, working_dir=tmp_path, pool_size=2) as gateway:
            await _wait_for_ready_pool(gateway, 2)
            all_connected = anyio.Event()
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(connect_and_report)
    assert len(set(ids)) == 4
    assert len(set(pids)) == 4


async def test_pooled_kernels_stay_within_max_kernels_and_out_of_listings(tmp_path: Path) -> None:
    import httpx

    with anyio.fail_after(120):
        async with KernelGateway(port=0, working_dir=tmp_path, pool_size=3, max_kernels=1) as gateway:
            await _wait_for_ready_pool(gateway, 1)
            headers = {"Authorization": f"token {gateway.token}"}
            async with httpx.AsyncClient(trust_env=False, headers=headers) as http:
                assert (await http.get(f"{gateway.url}/api/kernels")).json() == []
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path) as client:
                assert (await client.execute("1 + 1")).text == "2"
                second = KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                      images_dir=tmp_path)
                with pytest.raises(KernelStartError, match="limit"):
                    await second.connect()


def test_pool_size_must_be_a_non_negative_int() -> None:
    with pytest.raises(ValueError):
        KernelGateway(pool_size=-1)
