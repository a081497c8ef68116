"""The supervised gateway: auth, environment, ports, start-up failures and clean shutdown."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import anyio
import httpx
import psutil
import pytest
from conftest import INJECTED_ENV, PARENT_SECRET_NAME, PARENT_SECRET_VALUE

from kernelbox import (
    AuthenticationError,
    GatewayConnectionError,
    GatewayStartError,
    InvalidStateError,
    KernelClient,
    KernelGateway,
    KernelStartError,
    NotConnectedError,
)

pytestmark = pytest.mark.anyio


async def test_port_zero_gives_a_live_ephemeral_port(gateway: KernelGateway) -> None:
    assert gateway.port != 0
    assert gateway.url == f"http://127.0.0.1:{gateway.port}"
    assert gateway.pid is not None and psutil.pid_exists(gateway.pid)
    with anyio.fail_after(10):
        async with httpx.AsyncClient(trust_env=False) as http:
            response = await http.get(
                f"{gateway.url}/api/kernelspecs", headers={"Authorization": f"token {gateway.token}"}
            )
    assert response.status_code == 200
    assert "python3" in response.json()["kernelspecs"]


async def test_token_is_never_on_the_command_line(gateway: KernelGateway) -> None:
    tree = [psutil.Process(gateway.pid), *psutil.Process(gateway.pid).children(recursive=True)]
    for process in tree:
        assert all(gateway.token not in arg for arg in process.cmdline())


async def test_request_without_token_is_refused(gateway: KernelGateway) -> None:
    with anyio.fail_after(10):
        async with httpx.AsyncClient(trust_env=False) as http:
            missing = await http.post(f"{gateway.url}/api/kernels", json={"name": "python3"})
            wrong = await http.get(
                f"{gateway.url}/api/kernelspecs", headers={"Authorization": "token wrong"}
            )
    assert missing.status_code == 401
    assert wrong.status_code == 401


async def test_client_with_wrong_token_gets_an_authentication_error(gateway: KernelGateway, tmp_path: Path) -> None:
    client = KernelClient(host=gateway.host, port=gateway.port, token="wrong", images_dir=tmp_path)
    with anyio.fail_after(10), pytest.raises(AuthenticationError):
        await client.connect()
    assert not client.connected


async def test_injected_env_is_visible_and_parent_secret_is_not(client: KernelClient) -> None:
    assert os.environ[PARENT_SECRET_NAME] == PARENT_SECRET_VALUE
    with anyio.fail_after(30):
        result = await client.execute(
            "import os, json\nprint(json.dumps(dict(os.environ)))"
        )
    import json

    kernel_env = json.loads(result.text)
    for name, value in INJECTED_ENV.items():
        assert kernel_env[name] == value
    assert PARENT_SECRET_NAME not in kernel_env
    assert PARENT_SECRET_VALUE not in result.text
    assert "KG_AUTH_TOKEN" not in kernel_env
    assert "PATH" in kernel_env and "HOME" in kernel_env


async def test_kernels_run_in_the_working_directory(gateway: KernelGateway, client: KernelClient) -> None:
    with anyio.fail_after(30):
        result = await client.execute("import os\nprint(os.getcwd())\n_ = open('made-by-kernel.txt', 'w').write('x')")
    assert Path(result.text).resolve() == gateway.working_dir
    assert (gateway.working_dir / "made-by-kernel.txt").read_text() == "x"


async def test_unknown_kernel_name_lists_the_available_kernelspecs(gateway: KernelGateway, tmp_path: Path) -> None:
    client = KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                          kernel_name="no-such-kernel", images_dir=tmp_path)
    with anyio.fail_after(30), pytest.raises(KernelStartError) as info:
        await client.connect()
    assert "no-such-kernel" in str(info.value)
    assert "python3" in str(info.value)


async def test_start_twice_is_refused(gateway: KernelGateway) -> None:
    with pytest.raises(InvalidStateError, match="start"):
        await gateway.start()


async def test_execute_before_connect_and_after_disconnect(gateway: KernelGateway, tmp_path: Path) -> None:
    client = KernelClient(host=gateway.host, port=gateway.port, token=gateway.token, images_dir=tmp_path)
    with pytest.raises(NotConnectedError):
        await client.execute("1")
    with pytest.raises(NotConnectedError):
        _ = client.kernel_id
    with anyio.fail_after(30):
        await client.connect()
        await client.disconnect()
    with pytest.raises(NotConnectedError):
        await client.execute("1")


async def test_nothing_listening_gives_a_connection_error_after_retries(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    client = KernelClient(host="127.0.0.1", port=free_port, token="t", images_dir=tmp_path)
    started = time.monotonic()
    with anyio.fail_after(30), pytest.raises(GatewayConnectionError, match="3 attempts"):
        await client.connect(retries=2, retry_interval=0.1)
    assert time.monotonic() - started >= 0.2


def _descendant_pids(pid: int) -> set[int]:
    return {pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))}


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}


async def test_stop_leaves_no_gateway_or_kernel_process(tmp_path: Path) -> None:
    gateway = KernelGateway(port=0, working_dir=tmp_path)
    with anyio.fail_after(60):
        await gateway.start()
        clients = [KernelClient(host=gateway.host, port=gateway.port, token=gateway.token, images_dir=tmp_path)
                   for _ in range(2)]
        for client in clients:
            await client.connect()
            await client.execute("x = 1")
        pids = _descendant_pids(gateway.pid)
        assert len(pids) >= 3  # the gateway and two kernels
        # Stop without disconnecting: the gateway must take its kernels down itself.
        await gateway.stop()
    assert _alive(pids) == set()
    assert gateway.pid is None
    assert gateway.state == "stopped"
    with anyio.fail_after(10):
        await gateway.stop()  # idempotent
        for client in clients:
            await client.disconnect()


async def test_stop_on_a_never_started_gateway_does_nothing() -> None:
    gateway = KernelGateway(port=0)
    await gateway.stop()
    assert gateway.state == "new"


async def test_a_gateway_that_cannot_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    # A Kernel Gateway config file that ends the process while the gateway loads it.
    config_dir = tmp_path / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_kernel_gateway_config.py").write_text(
        "import sys\nprint('kernelbox-test: broken gateway install', flush=True)\nsys.exit(3)\n"
    )
    gateway = KernelGateway(port=0, env={"JUPYTER_CONFIG_DIR": str(config_dir)}, working_dir=tmp_path,
                            startup_timeout=120)
    started = time.monotonic()
    with anyio.fail_after(60), pytest.raises(GatewayStartError) as info:
        await gateway.start()
    assert time.monotonic() - started < 30  # far below startup_timeout: it noticed the exit
    assert "kernelbox-test: broken gateway install" in str(info.value)
    assert any("broken gateway install" in line for line in info.value.log_lines)
    assert gateway.state == "stopped"


async def test_port_in_use_is_an_error_not_a_silent_move(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = KernelGateway(host="127.0.0.1", port=port, working_dir=tmp_path)
        with pytest.raises(OSError):
            await gateway.start()
    assert gateway.state == "stopped"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"port": -1}, ValueError),
        ({"port": 70000}, ValueError),
        ({"port": "8888"}, TypeError),
        ({"env": {"A": 1}}, TypeError),
        ({"env": {"A=B": "x"}}, ValueError),
        ({"log_level": "LOUD"}, ValueError),
        ({"env": {"A": "\ud800"}}, ValueError),
        ({"sandbox": Path("settings.json")}, TypeError),
        ({"sandbox": 1}, TypeError),
        ({"startup_timeout": float("nan")}, ValueError),
        ({"startup_timeout": 0}, ValueError),
        ({"cull_idle_timeout": "x"}, TypeError),
        ({"cull_idle_timeout": -1}, ValueError),
        ({"cull_interval": float("inf")}, ValueError),
        ({"cull_busy": "yes"}, TypeError),
        ({"max_kernels": 0}, ValueError),
        ({"pool_size": 1.5}, TypeError),
        ({"restart_limit": -1}, ValueError),
        ({"stable_uptime": float("nan")}, ValueError),
        ({"token": ""}, ValueError),
        ({"token": "a\nb"}, ValueError),
        ({"on_restart": "not callable"}, TypeError),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        KernelGateway(**kwargs)


async def test_join_returns_after_stop_and_is_cancellable(tmp_path: Path) -> None:
    async with KernelGateway(port=0, working_dir=tmp_path) as gateway:
        with anyio.move_on_after(0.2) as scope:
            await gateway.join()
        assert scope.cancelled_caught  # cancellation is not swallowed
        assert gateway.state == "running"
    with anyio.fail_after(5):
        await gateway.join()


async def test_gateway_logs_reach_the_logging_module(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="kernelbox")
    with anyio.fail_after(60):
        async with KernelGateway(port=0, working_dir=tmp_path) as gateway:
            pid = gateway.pid
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("kernelbox")]
    assert any(f"Started gateway [pid {pid}]" in m for m in messages)
    assert any("Kernel Gateway" in m for m in messages)
    assert any(f"Stopped gateway [pid {pid}]" in m for m in messages)


async def test_the_access_log_keeps_failures_and_leaves_successes_to_debug(gateway: KernelGateway) -> None:
    """At INFO, a kernel request writes no access line; a failed request is still a WARNING."""
    marker = f"/api/kernels/no-such-kernel-{time.monotonic_ns()}"
    headers = {"Authorization": f"token {gateway.token}"}
    with anyio.fail_after(30):
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, trust_env=False) as http:
            created = await http.post("/api/kernels", json={})
            assert created.status_code == 201
            kernel_id = created.json()["id"]
            assert (await http.get(marker)).status_code == 404
            while not any(marker in line for line in gateway.log_tail):
                await anyio.sleep(0.05)  # polling the forwarded log for the 404's line
            await http.delete(f"/api/kernels/{kernel_id}")
    [failure] = [line for line in gateway.log_tail if marker in line]
    assert failure.startswith("[W") and "404" in failure
    assert not any("201 POST" in line or f"{kernel_id} (" in line and "101" in line for line in gateway.log_tail)
