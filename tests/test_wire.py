"""The kernel WebSocket on the wire: the binary ``v1.kernel.websocket.jupyter.org`` subprotocol
and loss-free reconnects.

The binary path is driven by a minimal test client (httpx-ws + the framings in
``helpers/wire.py``) so the gateway side can be checked independently of `KernelClient`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from helpers.proxy import cuttable_proxy
from helpers.wire import V1, decode_any, decode_v1, encode_v1
from httpx_ws import aconnect_ws

from kernelbox import KernelClient, KernelGateway
from kernelbox._child.gateway.websocket import MAX_STREAM_MESSAGE_CHARS

pytestmark = pytest.mark.anyio
class BinaryKernelSession:
    """Executes code over one v1 WebSocket and returns the decoded messages of each request."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.session = uuid.uuid4().hex

    async def request(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        header = {
            "msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": self.session,
            "username": "test", "date": datetime.now(UTC).isoformat(), "version": "5.3",
        }
        frames = [json.dumps(part).encode() for part in (header, {}, {}, content)]
        await self.ws.send_bytes(encode_v1(channel, frames))
        return header["msg_id"]

    async def request_in(self, subprotocol: str | None, msg_type: str, content: dict[str, Any]) -> str:
        """`request` in either format: v1 frames, or the legacy JSON text."""
        if subprotocol == V1:
            return await self.request(msg_type, content)
        header = {
            "msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": self.session,
            "username": "test", "date": datetime.now(UTC).isoformat(), "version": "5.3",
        }
        await self.ws.send_text(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                                            "content": content, "channel": "shell"}))
        return header["msg_id"]

    async def execute(self, code: str) -> list[dict[str, Any]]:
        """Messages answering one execution, in arrival order, until reply and idle both came."""
        msg_id = await self.request("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": False,
        })
        messages, replied, idle = [], False, False
        while not (replied and idle):
            channel, frames = decode_v1(await self.ws.receive_bytes())
            header, parent, _metadata, content = (json.loads(f) for f in frames[:4])
            if parent.get("msg_id") != msg_id:
                continue
            message = {"channel": channel, "header": header, "content": content}
            messages.append(message)
            replied = replied or header["msg_type"] == "execute_reply"
            idle = idle or (header["msg_type"] == "status" and content["execution_state"] == "idle")
        return messages


@asynccontextmanager
async def binary_session(gateway: KernelGateway) -> AsyncIterator[BinaryKernelSession]:
    headers = {"Authorization": f"token {gateway.token}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
        kernel_id = (await http.post("/api/kernels", json={})).json()["id"]
        try:
            url = f"{gateway.url.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels"
            session = uuid.uuid4().hex
            async with aconnect_ws(f"{url}?session_id={session}", http, subprotocols=[V1],
                                   max_message_size_bytes=64 * 1024 * 1024) as ws:
                assert ws.subprotocol == V1
                yield BinaryKernelSession(ws)
        finally:
            await http.delete(f"/api/kernels/{kernel_id}")


def stream_text(messages: list[dict[str, Any]]) -> str:
    return "".join(m["content"]["text"] for m in messages if m["header"]["msg_type"] == "stream")


def test_v1_framing_round_trips() -> None:
    frames = [b'{"a": 1}', b"{}", b"", b"\x00\xff" * 3]
    assert decode_v1(encode_v1("iopub", frames)) == ("iopub", frames)


async def test_binary_subprotocol_is_negotiated_and_executes(gateway: KernelGateway) -> None:
    with anyio.fail_after(60):
        async with binary_session(gateway) as kernel:
            messages = await kernel.execute("print('hello')\n6 * 7")
            assert stream_text(messages) == "hello\n"
            results = [m for m in messages if m["header"]["msg_type"] == "execute_result"]
            assert results[0]["content"]["data"]["text/plain"] == "42"
            assert {m["channel"] for m in messages} == {"shell", "iopub"}


async def test_binary_path_splits_oversized_stream_messages_in_order(gateway: KernelGateway) -> None:
    size = 3 * MAX_STREAM_MESSAGE_CHARS + 123
    code = f"import sys\nsys.stdout.write(''.join(chr(97 + i % 26) for i in range({size})) + 'é')"
    with anyio.fail_after(60):
        async with binary_session(gateway) as kernel:
            messages = await kernel.execute(code)
    streams = [m for m in messages if m["header"]["msg_type"] == "stream"]
    assert len(streams) >= 4
    assert all(len(m["content"]["text"]) <= MAX_STREAM_MESSAGE_CHARS for m in streams)
    assert stream_text(messages) == "".join(chr(97 + i % 26) for i in range(size)) + "é"
    ids = [m["header"]["msg_id"] for m in streams]
    assert len(set(ids)) == len(ids)


async def test_binary_path_has_no_iopub_rate_limit(gateway: KernelGateway) -> None:
    # 16 MB in a fraction of a second: far above Jupyter Server's default 1 MB/s.
    code = "import sys\nfor i in range(64):\n    sys.stdout.write(f'{i:07d}' * 32768 + '\\n')\n    sys.stdout.flush()"
    with anyio.fail_after(120):
        async with binary_session(gateway) as kernel:
            messages = await kernel.execute(code)
    assert "rate exceeded" not in stream_text(messages)
    assert stream_text(messages) == "".join(f"{i:07d}" * 32768 + "\n" for i in range(64))


LINES = 10_000
# Flushed prints (one message each), paced so the stream is still running when the cuts land.
PACED_LINES_CODE = (
    "import time\n"
    f"for i in range({LINES}):\n"
    "    print(i, flush=True)\n"
    "    if i % 500 == 0:\n"
    "        time.sleep(0.02)"
)


def assert_every_line_once_in_order(numbers: list[int]) -> None:
    seen = set(numbers)
    missing = [i for i in range(LINES) if i not in seen]
    assert (missing[:10], len(numbers) - len(seen)) == ([], 0)  # (lost, repeated)
    assert numbers == list(range(LINES))


@pytest.mark.parametrize("subprotocol", [None, V1])
async def test_gateway_replays_a_cut_stream_so_dropping_seen_msg_ids_gives_each_line_once(
    gateway: KernelGateway, subprotocol: str | None
) -> None:
    """The gateway's side of a loss-free reconnect, with a raw client that dedups by msg_id.

    Reconnecting with the same ``session_id`` and ``replay=sent`` gets Jupyter Server's buffer
    of what came while disconnected, preceded by the gateway's replay window (what may not
    have been read).
    """
    headers = {"Authorization": f"token {gateway.token}"}
    session = uuid.uuid4().hex
    numbers: list[int] = []
    seen_ids: set[str] = set()
    async with cuttable_proxy(gateway.port) as proxy, httpx.AsyncClient(
        base_url=gateway.url, headers=headers, timeout=30
    ) as http:
        kernel_id = (await http.post("/api/kernels", json={})).json()["id"]
        url = (f"ws://127.0.0.1:{proxy.port}/api/kernels/{kernel_id}/channels"
               f"?session_id={session}&replay=sent")
        kernel = None
        replied = idle = False
        with anyio.fail_after(120):
            while not (replied and idle):
                try:
                    async with aconnect_ws(url, http, subprotocols=[subprotocol] if subprotocol else None,
                                           max_message_size_bytes=64 * 1024 * 1024) as ws:
                        if kernel is None:
                            kernel = BinaryKernelSession(ws)
                            kernel.session = session
                            msg_id = await kernel.request_in(subprotocol, "execute_request", {
                                "code": PACED_LINES_CODE, "silent": False, "store_history": True,
                                "user_expressions": {}, "allow_stdin": False, "stop_on_error": False,
                            })
                        while not (replied and idle):
                            message = decode_any(await ws.receive(), subprotocol)
                            if message["parent_header"].get("msg_id") != msg_id:
                                continue
                            if message["header"]["msg_id"] in seen_ids:
                                continue
                            seen_ids.add(message["header"]["msg_id"])
                            msg_type = message["header"]["msg_type"]
                            if msg_type == "stream":
                                numbers.extend(int(n) for n in message["content"]["text"].split())
                                if proxy.connections < 3 and len(numbers) >= 200 * proxy.connections ** 2:
                                    proxy.cut()
                            replied = replied or msg_type == "execute_reply"
                            idle = idle or (msg_type == "status" and message["content"]["execution_state"] == "idle")
                except Exception as exc:  # the cut: httpx-ws raises through its task group
                    if "WebSocket" not in type(exc).__name__ and not isinstance(exc, ExceptionGroup):
                        raise
        await http.delete(f"/api/kernels/{kernel_id}")
    assert proxy.connections >= 3
    assert_every_line_once_in_order(numbers)


async def test_websocket_cut_during_a_stream_delivers_every_line_once_in_order(
    gateway: KernelGateway, tmp_path: Path
) -> None:
    """Cut the client's TCP connection while 10,000 lines stream; each arrives once, in order."""
    code = PACED_LINES_CODE
    async with cuttable_proxy(gateway.port) as proxy:
        async with KernelClient(host="127.0.0.1", port=proxy.port, token=gateway.token,
                                images_dir=tmp_path) as client:
            received = []
            cuts = 0
            with anyio.fail_after(120):
                async for item in client.stream(code):
                    if isinstance(item, str):
                        received.append(item)
                        # Cut twice, at arbitrary points of a busy stream.
                        if cuts < 2 and len(received) in (200, 1500):
                            cuts += proxy.cut() > 0
            assert cuts == 2
            assert_every_line_once_in_order([int(n) for n in "".join(received).split()])
            assert proxy.connections >= 3


@pytest.mark.unit
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
@pytest.mark.parametrize("binary", [True, False])
def test_websocket_frames_written_in_batches_decode_as_a_client_reads_them(size: int, binary: bool) -> None:
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, TextMessage

    from kernelbox._child.gateway.framing import websocket_frame

    payloads = [("é" * (size // 2)).encode() if not binary else bytes(range(256)) * (size // 256) + b"x" * (size % 256),
                b"second"]
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(b"".join(websocket_frame(payload, binary) for payload in payloads))
    kind = BytesMessage if binary else TextMessage
    received: list[bytes] = []
    for event in client.events():
        assert isinstance(event, kind) and event.message_finished
        received.append(event.data if binary else event.data.encode())
    assert b"".join(received) == b"".join(payloads)


async def test_the_websocket_reuses_the_connection_that_created_the_kernel(
    gateway: KernelGateway, tmp_path: Path
) -> None:
    """One TCP connection per connect(): the upgrade goes over the POST's keep-alive connection."""
    import psutil

    def connections_to_gateway() -> list[Any]:
        return [c for c in psutil.Process().net_connections(kind="tcp")
                if c.raddr and c.raddr.port == gateway.port and c.status == psutil.CONN_ESTABLISHED]

    before = {c.laddr for c in connections_to_gateway()}
    with anyio.fail_after(60):
        async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                images_dir=tmp_path) as client:
            assert (await client.execute("1 + 1")).text == "2"
            opened = [c for c in connections_to_gateway() if c.laddr not in before]
            assert len(opened) == 1, opened
