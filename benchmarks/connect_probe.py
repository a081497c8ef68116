"""Where a warm ``connect()`` spends its time: POST, WebSocket upgrade, first ``kernel_info``.

    .venv/bin/python -m benchmarks.connect_probe [--reps 20] [--pool 2] [--binary]

Starts `KernelGateway(pool_size=N)` and, for each repetition (after the pool is full again),
times the three steps of a connect with raw httpx/httpx-ws, then a whole `KernelClient.connect()`.
Prints medians in milliseconds. A diagnostic, not part of the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
import uuid
from datetime import UTC, datetime

import httpx
from httpx_ws import aconnect_ws

from benchmarks._systems.kernelbox_system import GATEWAY_LOGGER, PoolWatcher
from kernelbox import KernelClient, KernelGateway

V1 = "v1.kernel.websocket.jupyter.org"


def _kernel_info(session: str, binary: bool) -> tuple[str, str | bytes]:
    header = {"msg_id": uuid.uuid4().hex, "msg_type": "kernel_info_request", "session": session,
              "username": "probe", "date": datetime.now(UTC).isoformat(), "version": "5.3"}
    if not binary:
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": {},
                   "channel": "shell", "buffers": []}
        return header["msg_id"], json.dumps(message)
    frames = [json.dumps(part).encode() for part in (header, {}, {}, {})]
    offsets = [8 * (len(frames) + 3), 8 * (len(frames) + 3) + 5]
    for frame in frames:
        offsets.append(offsets[-1] + len(frame))
    head = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
    return header["msg_id"], head + b"shell" + b"".join(frames)


async def _raw_connect(gw: KernelGateway, http: httpx.AsyncClient, binary: bool) -> list[float]:
    t0 = time.perf_counter()
    kernel_id = (await http.post("/api/kernels", json={})).json()["id"]
    t1 = time.perf_counter()
    session = uuid.uuid4().hex
    url = f"{gw.url.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels?session_id={session}"
    async with aconnect_ws(url, http, subprotocols=[V1] if binary else None) as ws:
        t2 = time.perf_counter()
        msg_id, data = _kernel_info(session, binary)
        await (ws.send_bytes(data) if binary else ws.send_text(data))  # type: ignore[arg-type]
        while True:
            if binary:
                raw = await ws.receive_bytes()
                if msg_id.encode() in raw and b"kernel_info_reply" in raw:
                    break
            else:
                message = json.loads(await ws.receive_text())
                if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "kernel_info_reply":
                    break
        t3 = time.perf_counter()
    await http.delete(f"/api/kernels/{kernel_id}")
    return [(t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t3 - t0) * 1e3]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--binary", action="store_true")
    args = parser.parse_args()
    watcher = PoolWatcher(args.pool)
    logging.getLogger(GATEWAY_LOGGER).addHandler(watcher)
    logging.getLogger(GATEWAY_LOGGER).setLevel(logging.INFO)
    raw: list[list[float]] = []
    whole: list[float] = []
    async with KernelGateway(host="127.0.0.1", port=0, pool_size=args.pool) as gw:
        headers = {"Authorization": f"token {gw.token}"}
        async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=30) as http:
            for _ in range(args.reps):
                await asyncio.wait_for(watcher.wait_full(), 60)
                raw.append(await _raw_connect(gw, http, args.binary))
                await asyncio.wait_for(watcher.wait_full(), 60)
                client = KernelClient(host=gw.host, port=gw.port, token=gw.token)
                t0 = time.perf_counter()
                await client.connect()
                whole.append((time.perf_counter() - t0) * 1e3)
                await client.disconnect()
    for name, column in zip(("POST", "upgrade", "kernel_info", "raw total"), zip(*raw, strict=True), strict=True):
        print(f"{name:12s} median {statistics.median(column):6.1f} ms  min {min(column):6.1f} ms")
    print(f"{'connect()':12s} median {statistics.median(whole):6.1f} ms  min {min(whole):6.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
