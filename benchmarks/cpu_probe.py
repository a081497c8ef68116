"""CPU per ``1+1`` of each process, from the processes' own counters.

``python -m benchmarks.cpu_probe [--reps N] [--rounds N] [--systems kernelbox,stock]`` starts a
gateway, connects one `KernelClient`, runs ``1+1`` `--reps` times on the warm kernel and prints,
per round and system, the CPU time (user + system, all threads, from ``psutil``) per execution
of the gateway process, this process (the client) and the kernel, plus the median round trip.
Rounds visit the systems in turn, so drift hits both alike. CPU counters, unlike wall time,
stay meaningful on a machine that other work keeps busy.

Systems:

- ``kernelbox``: `KernelGateway` (unsandboxed) from the installed kernelbox.
- ``stock``: ``jupyter kernelgateway`` with its defaults (JupyterWebsocketPersonality,
  unencrypted ZMQ, Nagle on) from the same environment, driven by the same `KernelClient`.

The script imports nothing else from the checkout, so another environment's interpreter can
run this file to measure that environment's kernelbox (``other/.venv/bin/python
benchmarks/cpu_probe.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psutil

from kernelbox import KernelClient, KernelGateway
from kernelbox import _protocol as _PROTOCOL

HOST = "127.0.0.1"
WARMUP_REPS = 30
STOCK_READY_TIMEOUT_SECONDS = 60.0
EXECUTE_TIMEOUT_SECONDS = 30.0


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def _kernelbox_gateway() -> AsyncIterator[tuple[int, int, str | None]]:
    """(gateway pid, port, token) of a running kernelbox gateway."""
    async with KernelGateway(host=HOST, port=0, log_level="ERROR",
                             working_dir=tempfile.mkdtemp(prefix="kernelbox-cpu-probe-")) as gateway:
        assert gateway.pid is not None
        yield gateway.pid, gateway.port, gateway.token


@asynccontextmanager
async def _stock_gateway() -> AsyncIterator[tuple[int, int, str | None]]:
    """(pid, port, token) of stock ``jupyter kernelgateway`` with its defaults."""
    port = _free_port()
    token = secrets.token_hex(16)
    env = {**os.environ, "KG_AUTH_TOKEN": token}
    process = subprocess.Popen(
        [sys.executable, "-m", "kernel_gateway", f"--KernelGatewayApp.ip={HOST}",
         f"--KernelGatewayApp.port={port}", "--KernelGatewayApp.port_retries=0",
         "--KernelGatewayApp.log_level=ERROR"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + STOCK_READY_TIMEOUT_SECONDS
        while True:
            try:
                _reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("stock Kernel Gateway did not start") from None
                await asyncio.sleep(0.1)
                continue
            writer.close()
            break
        yield process.pid, port, token
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


GATEWAYS = {"kernelbox": _kernelbox_gateway, "stock": _stock_gateway}


def _offer_no_subprotocol() -> None:
    """Make `KernelClient` offer a subprotocol no server picks: the legacy JSON framing."""
    from kernelbox.client import _channels

    _channels._protocol = type(sys)("json_only_protocol")  # type: ignore[assignment]
    for name in dir(_PROTOCOL):
        setattr(_channels._protocol, name, getattr(_PROTOCOL, name))
    _channels._protocol.V1_SUBPROTOCOL = "x-kernelbox-cpu-probe-none"


async def measure(system: str, reps: int, attach: str | None = None) -> dict[str, Any]:
    """One round: a fresh gateway and kernel, `reps` timed ``1+1`` executions.

    `attach`, when given, is a shell command run (formatted with ``{pid}``, the gateway's, and
    ``{client}``, this process's pid) for
    the timed executions and stopped with SIGINT after them: a profiler such as ``py-spy
    record --pid {pid} ...`` or ``perf record -p {pid} ...``.
    """
    async with GATEWAYS[system]() as (pid, port, token):
        gateway = psutil.Process(pid)
        me = psutil.Process()
        images = tempfile.mkdtemp(prefix="kernelbox-cpu-probe-images-")
        async with KernelClient(host=HOST, port=port, token=token, images_dir=images) as client:
            for _ in range(WARMUP_REPS):
                await client.execute("1+1", timeout=EXECUTE_TIMEOUT_SECONDS)
            kernels = gateway.children(recursive=True)
            if len(kernels) != 1:
                raise RuntimeError(f"expected one kernel process under the gateway, found {kernels}")
            kernel = kernels[0]
            profiler = None
            if attach:
                profiler = subprocess.Popen(attach.format(pid=pid, client=os.getpid()), shell=True, start_new_session=True)
                await asyncio.sleep(1.0)  # the profiler attaches; not part of the timed loop
            before = (_cpu_seconds(gateway), _cpu_seconds(me), _cpu_seconds(kernel))
            walls = []
            for _ in range(reps):
                start = time.perf_counter()
                result = await client.execute("1+1", timeout=EXECUTE_TIMEOUT_SECONDS)
                walls.append(time.perf_counter() - start)
                if (result.text or "").splitlines()[-1:] != ["2"]:  # a warning may come first (IPython's output cache)
                    raise RuntimeError(f"1+1 gave {result.text!r}")
            after = (_cpu_seconds(gateway), _cpu_seconds(me), _cpu_seconds(kernel))
            if profiler is not None:
                os.killpg(profiler.pid, signal.SIGINT)
                profiler.wait(60)
    gateway_ms, client_ms, kernel_ms = ((b - a) * 1000 / reps for a, b in zip(before, after, strict=True))
    return {
        "system": system,
        "framing": "json" if _channels_json() else "binary",
        "reps": reps,
        "gateway_ms": round(gateway_ms, 3),
        "client_ms": round(client_ms, 3),
        "kernel_ms": round(kernel_ms, 3),
        "median_ms": round(statistics.median(walls) * 1000, 3),
    }


def _channels_json() -> bool:
    from kernelbox.client import _channels

    return bool(_channels._protocol is not _PROTOCOL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--systems", default="kernelbox")
    parser.add_argument("--json", action="store_true", help="the client offers no subprotocol (JSON framing)")
    parser.add_argument("--attach", help="command run on the gateway ({pid}) during the timed loop")
    args = parser.parse_args()
    if args.json:
        _offer_no_subprotocol()
    systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    for system in systems:
        if system not in GATEWAYS:
            parser.error(f"unknown system {system!r}; known: {', '.join(GATEWAYS)}")
    for round_index in range(args.rounds):
        for offset in range(len(systems)):
            system = systems[(round_index + offset) % len(systems)]
            print(json.dumps(asyncio.run(measure(system, args.reps, args.attach))), flush=True)


if __name__ == "__main__":
    main()
