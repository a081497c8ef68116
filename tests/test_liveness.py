"""A hung gateway is noticed: the supervisor's liveness probe kills and restarts it.

Reproduces the finding: with the gateway process stopped (SIGSTOP), ``state`` stayed
``running``, nothing restarted, and ``kernelbox serve`` kept feeding systemd's watchdog.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import psutil
import pytest
from helpers.processes import first_line
from helpers.sandbox_dirs import sandbox_work_dir
from test_sandbox import _in_ci, _unavailable_reason
from test_systemd import _datagram_socket, _next_message

from kernelbox import GatewayRestart, KernelClient, KernelDiedError, KernelGateway
from kernelbox.gateway._supervisor import HUNG_AFTER_SECONDS, LIVENESS_INTERVAL_SECONDS

pytestmark = pytest.mark.anyio

TIMEOUT_SECONDS = 90.0
# The finding's target: a stopped gateway is back within 15 s.
RESTART_WITHIN_SECONDS = 15.0


def _is_gateway(argv: list[str]) -> bool:
    """``python ... -m kernelbox._child...gateway...`` (not a shell whose script names it)."""
    return bool(argv) and "python" in os.path.basename(argv[0]) and any(
        arg.startswith("kernelbox._child") and "gateway" in arg for arg in argv
    )


def _gateway_process(gateway: KernelGateway) -> psutil.Process:
    """The Python process running the gateway (srt's descendant when sandboxed)."""
    assert gateway.pid is not None
    root = psutil.Process(gateway.pid)
    for process in [root, *root.children(recursive=True)]:
        if _is_gateway(process.cmdline()):
            return process
    raise AssertionError(f"no gateway process under [pid {gateway.pid}]")


async def _stop_and_wait_for_restart(gateway: KernelGateway, restarted: anyio.Event) -> float:
    stopped = _gateway_process(gateway)
    started = anyio.current_time()
    stopped.send_signal(signal.SIGSTOP)
    try:
        with anyio.fail_after(TIMEOUT_SECONDS):
            await restarted.wait()
    finally:
        if stopped.is_running():  # only if the test fails: never leave a stopped process
            stopped.send_signal(signal.SIGKILL)
    return anyio.current_time() - started


@pytest.mark.parametrize("sandbox", [False, True], ids=["plain", "sandboxed"])
async def test_a_stopped_gateway_is_killed_and_restarted(
    sandbox: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if sandbox:
        reason = _unavailable_reason()
        if reason is not None:
            (pytest.fail if _in_ci() else pytest.skip)(f"the sandbox cannot run here: {reason}")
    restarts: list[GatewayRestart] = []
    restarted = anyio.Event()

    def on_restart(event: GatewayRestart) -> None:
        restarts.append(event)
        restarted.set()

    with sandbox_work_dir() as work, anyio.fail_after(TIMEOUT_SECONDS * 2):
        async with KernelGateway(host="127.0.0.1", port=0, sandbox=sandbox, working_dir=work,
                                 on_restart=on_restart) as gateway:
            async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                    images_dir=tmp_path / "images") as kc:
                await kc.execute("x = 1")
                old_pid = gateway.pid
                answered = gateway.seconds_since_answer
                assert answered is not None and answered <= LIVENESS_INTERVAL_SECONDS + 5
                elapsed = await _stop_and_wait_for_restart(gateway, restarted)
                assert HUNG_AFTER_SECONDS <= elapsed <= RESTART_WITHIN_SECONDS, elapsed
                assert gateway.state == "running" and gateway.restart_count == 1
                assert restarts[0].old_pid == old_pid and gateway.pid != old_pid
                assert any("has not answered" in record.getMessage() for record in caplog.records)
                with pytest.raises(KernelDiedError):  # the old kernel went with its gateway
                    await kc.execute("x", timeout=30)
                await kc.reset()
                assert (await kc.execute("print(40 + 2)")).text == "42"


async def test_serve_stops_feeding_the_watchdog_while_the_gateway_is_hung(tmp_path: Path) -> None:
    address = f"@kernelbox-test-{uuid.uuid4().hex}"
    # Pings every 1 s while healthy (half of WATCHDOG_USEC).
    env = dict(os.environ, NOTIFY_SOCKET=address, WATCHDOG_USEC="2000000")
    with _datagram_socket(address) as notify:
        notify.setblocking(False)
        process = await anyio.open_process(
            [sys.executable, "-m", "kernelbox.cli", "serve", "--json", "--port", "0",
             "--working-dir", str(tmp_path)],
            env=env, stderr=subprocess.DEVNULL,
        )
        async with process:
            try:
                with anyio.fail_after(TIMEOUT_SECONDS):
                    await _next_message(notify, "READY")
                    info = json.loads(await first_line(process))
                    await _next_message(notify, "WATCHDOG")  # fed while healthy
                    gateway = next(
                        child for child in psutil.Process(process.pid).children() if _is_gateway(child.cmdline())
                    )
                    gateway.send_signal(signal.SIGSTOP)
                    hung_at = anyio.current_time()
                    # Drain what was sent before the stop could show; then none may come while hung.
                    pings_while_hung = 0
                    status = None
                    while status is None:
                        await anyio.wait_readable(notify)
                        fields = dict(
                            line.split("=", 1) for line in notify.recv(4096).decode().splitlines() if "=" in line
                        )
                        if "WATCHDOG" in fields and anyio.current_time() - hung_at > 6.0:
                            pings_while_hung += 1
                        status = fields.get("STATUS") if "restart" in fields.get("STATUS", "") else None
                    restarted_after = anyio.current_time() - hung_at
                    assert pings_while_hung == 0
                    assert restarted_after <= RESTART_WITHIN_SECONDS, restarted_after
                    await _next_message(notify, "WATCHDOG")  # fed again once the new gateway answers
                    with socket.create_connection(("127.0.0.1", int(info["url"].rsplit(":", 1)[1])), timeout=10):
                        pass
                    process.send_signal(signal.SIGTERM)
                    assert await process.wait() == 0
            finally:
                if process.returncode is None:
                    process.kill()
