"""The warm kernel pool: ready kernels handed out once each, same environment as fresh ones."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest
from helpers.wire import V1, decode_any, request_frame
from httpx_ws import AsyncWebSocketSession, aconnect_ws

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


class RawKernel:
    """One kernel WebSocket in either framing, driven message by message."""

    def __init__(self, ws: AsyncWebSocketSession, subprotocol: str | None) -> None:
        self.ws, self.subprotocol, self.session = ws, subprotocol, uuid.uuid4().hex

    async def send(self, channel: str, msg_type: str, content: dict[str, Any],
                   parent: dict[str, Any] | None = None) -> str:
        msg_id, frame = request_frame(self.subprotocol, channel, msg_type, content, self.session, parent)
        await (self.ws.send_bytes(frame) if isinstance(frame, bytes) else self.ws.send_text(frame))
        return msg_id

    async def receive(self) -> dict[str, Any]:
        return decode_any(await self.ws.receive(), self.subprotocol)

    async def until(self, msg_id: str, msg_type: str) -> list[dict[str, Any]]:
        """Every message answering `msg_id`, up to and including the one of `msg_type`."""
        seen = []
        while True:
            message = await self.receive()
            if message["parent_header"].get("msg_id") == msg_id:
                seen.append(message)
                if message["header"]["msg_type"] == msg_type:
                    return seen


@asynccontextmanager
async def raw_pooled_kernel(gateway: KernelGateway, subprotocol: str | None) -> AsyncIterator[RawKernel]:
    headers = {"Authorization": f"token {gateway.token}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=30, trust_env=False) as http:
        kernel_id = (await http.post("/api/kernels", json={})).json()["id"]
        url = f"{gateway.url.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
        async with aconnect_ws(url, http, subprotocols=[V1] if subprotocol else None) as ws:
            assert ws.subprotocol == subprotocol
            yield RawKernel(ws, subprotocol)


@pytest.mark.parametrize("subprotocol", [V1, None], ids=["v1", "json"])
async def test_a_pooled_kernels_first_kernel_info_is_answered_from_its_cache(
    tmp_path: Path, subprotocol: str | None
) -> None:
    """Taking a pooled kernel needs no kernel round trip; the channels work as any kernel's."""
    with anyio.fail_after(120):
        async with KernelGateway(port=0, working_dir=tmp_path, pool_size=1) as gateway:
            await _wait_for_ready_pool(gateway, 1)
            async with raw_pooled_kernel(gateway, subprotocol) as kernel:
                first = await kernel.send("shell", "kernel_info_request", {})
                # The next request is answered by the kernel: its status messages come after
                # the cached reply, and none ever answers the first request.
                second = await kernel.send("shell", "kernel_info_request", {})
                cached: dict[str, Any] | None = None
                live: dict[str, Any] | None = None
                statuses: list[str] = []
                while live is None or "idle" not in statuses:
                    message = await kernel.receive()
                    parent = message["parent_header"].get("msg_id")
                    kind = message["header"]["msg_type"]
                    if parent == first:
                        assert kind == "kernel_info_reply", message  # no status: never reached the kernel
                        cached = message
                    elif parent == second and kind == "status":
                        statuses.append(message["content"]["execution_state"])
                    elif parent == second and kind == "kernel_info_reply":
                        live = message
                assert cached is not None and cached["channel"] == "shell"
                # The same reply, but for IPython's banner, which ends with a random tip.
                assert {**cached["content"], "banner": ""} == {**live["content"], "banner": ""}
                assert cached["content"]["language_info"]["name"] == "python"
                assert cached["header"]["msg_id"] != live["header"]["msg_id"]
                assert statuses == ["busy", "idle"]  # the kernel answered the second request itself
                # stdin: an input_request reaches this connection and the answer gets back.
                execute = await kernel.send("shell", "execute_request", {
                    "code": "answer = input('name? ')\nprint('got', answer)", "silent": False,
                    "store_history": False, "user_expressions": {}, "allow_stdin": True,
                    "stop_on_error": True,
                })
                while True:
                    message = await kernel.receive()
                    if message["header"]["msg_type"] == "input_request":
                        assert message["channel"] == "stdin"
                        assert message["content"]["prompt"] == "name? "
                        await kernel.send("stdin", "input_reply", {"value": "pooled"},
                                          parent=message["header"])
                        break
                answers = await kernel.until(execute, "execute_reply")
                assert answers[-1]["content"]["status"] == "ok"
                text = "".join(m["content"].get("text", "") for m in answers if m["header"]["msg_type"] == "stream")
                if "got pooled" not in text:  # the stream may come after the reply
                    text += "".join(m["content"].get("text", "") for m in await kernel.until(execute, "stream"))
                assert "got pooled" in text


async def test_a_stopped_pooled_kernel_is_not_reported_ready_from_the_cache(tmp_path: Path) -> None:
    """The cached reply stands for the kernel only while its process runs."""
    with anyio.fail_after(120):
        async with KernelGateway(port=0, working_dir=tmp_path, pool_size=1) as gateway:
            await _wait_for_ready_pool(gateway, 1)
            assert gateway.pid is not None
            kernels = [p for p in psutil.Process(gateway.pid).children(recursive=True)
                       if "ipykernel" in " ".join(p.cmdline()) or "kernelbox._child.kernel" in " ".join(p.cmdline())]
            assert len(kernels) == 1, kernels
            kernels[0].send_signal(signal.SIGSTOP)
            try:
                client = KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                      images_dir=tmp_path, kernel_init_timeout=2)
                with pytest.raises(KernelStartError, match="did not answer"):
                    await client.connect()
            finally:
                with contextlib.suppress(psutil.NoSuchProcess):  # the failed connect deleted it
                    kernels[0].send_signal(signal.SIGCONT)


def test_pool_size_must_be_a_non_negative_int() -> None:
    with pytest.raises(ValueError):
        KernelGateway(pool_size=-1)
