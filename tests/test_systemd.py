"""`kernelbox serve` under a service manager: a real inherited socket, a real notify socket.

No systemd is needed: the tests play its part. They pass a listening socket as fd 3 with
``LISTEN_FDS``/``LISTEN_PID`` (sd_listen_fds(3)) and read the datagrams the service sends to
``NOTIFY_SOCKET`` (sd_notify(3)).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest
from helpers.processes import first_line

from kernelbox import KernelClient
from kernelbox.cli import _systemd

TIMEOUT_SECONDS = 60.0

# Puts the listening socket at fd 3 and sets LISTEN_PID to the pid that will run the service,
# as systemd does between fork and exec.
_ACTIVATE = (
    "import os, sys\n"
    "os.dup2(int(sys.argv[1]), 3)\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'kernelbox.cli', *sys.argv[2:]])\n"
)


def _datagram_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + address[1:] if address.startswith("@") else address)
    return sock


async def _next_message(sock: socket.socket, containing: str) -> dict[str, str]:
    """The next notify datagram with a `containing` field, as a dict of its fields."""
    while True:
        await anyio.wait_readable(sock)
        data = sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        if containing in fields:
            return fields


def test_notifier_sends_to_a_path_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with _datagram_socket(address) as receiver:
        receiver.settimeout(TIMEOUT_SECONDS)
        with _systemd.Notifier.from_environment({"NOTIFY_SOCKET": address}) as notifier:
            assert notifier.notify(READY=1, STATUS="Serving kernels")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=Serving kernels"


def test_notifier_sends_to_an_abstract_socket() -> None:
    address = f"@kernelbox-test-{uuid.uuid4().hex}"
    with _datagram_socket(address) as receiver:
        receiver.settimeout(TIMEOUT_SECONDS)
        with _systemd.Notifier(address) as notifier:
            assert notifier.notify(WATCHDOG=1)
        assert receiver.recv(4096) == b"WATCHDOG=1"


def test_without_a_service_manager_nothing_happens() -> None:
    environ: dict[str, str] = {}
    with _systemd.Notifier.from_environment(environ) as notifier:
        assert not notifier.enabled
        assert notifier.notify(READY=1) is False
    assert _systemd.listen_sockets(environ) == []
    assert _systemd.watchdog_interval_seconds(environ) is None


def test_variables_for_another_process_are_ignored_and_removed() -> None:
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x",
               "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert _systemd.listen_sockets(environ) == []
    assert _systemd.watchdog_interval_seconds(environ) is None
    assert environ == {}


def test_watchdog_interval_is_half_the_timeout() -> None:
    environ = {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert _systemd.watchdog_interval_seconds(environ) == 1.5


def test_journal_lines_carry_the_syslog_priority() -> None:
    record = logging.LogRecord("kernelbox.gateway", logging.WARNING, __file__, 1,
                               "Gateway exited\nwith status %d", (1,), None)
    assert _systemd.JournalFormatter().format(record) == "<4>kernelbox.gateway: Gateway exited | with status 1"


@pytest.mark.anyio
async def test_serve_uses_the_inherited_socket_and_reports_to_the_service_manager(
    tmp_path: Path, anyio_backend: str
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    address = f"@kernelbox-test-{uuid.uuid4().hex}"
    connection_file = tmp_path / "gateway.json"
    env = dict(os.environ, LISTEN_FDS="1", NOTIFY_SOCKET=address, WATCHDOG_USEC="1000000")
    with listener, _datagram_socket(address) as notify:
        notify.setblocking(False)
        process = await anyio.open_process(
            [sys.executable, "-c", _ACTIVATE, str(listener.fileno()), "serve", "--json",
             "--port", "1", "--connection-file", str(connection_file), "--working-dir", str(tmp_path)],
            env=env, pass_fds=(listener.fileno(),), stderr=subprocess.DEVNULL,
        )
        async with process:
            try:
                with anyio.fail_after(TIMEOUT_SECONDS):
                    ready = await _next_message(notify, "READY")
                    info = json.loads(await first_line(process))
                    assert info["url"] == f"http://127.0.0.1:{port}"
                    assert ready["STATUS"] == f"Serving kernels at http://127.0.0.1:{port}"
                    assert stat.S_IMODE(connection_file.stat().st_mode) == 0o600

                    async with KernelClient(host="127.0.0.1", port=port, token=info["token"],
                                            images_dir=tmp_path / "images") as kc:
                        result = await kc.execute(
                            "import os; print(sorted(k for k in os.environ if k.startswith(('LISTEN_', 'NOTIFY_', 'WATCHDOG_'))))"
                        )
                        assert result.text == "[]"

                    await _next_message(notify, "WATCHDOG")

                    process.send_signal(signal.SIGTERM)
                    await _next_message(notify, "STOPPING")
                    assert await process.wait() == 0
            finally:
                if process.returncode is None:
                    process.kill()
        assert not connection_file.exists()
        # The socket is the service manager's: still listening after the service stopped.
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS):
            pass
