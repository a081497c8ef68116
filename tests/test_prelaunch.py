"""The gateway's pre-launched first kernel: taken over by the first plain kernel start, started
exactly like any other kernel, never given to a request with its own environment, never left
behind (`kernelbox._child.gateway.prelaunch`).

Runs under asyncio only: the gateway process is the subject, not the client's event loop.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import psutil
import pytest

from kernelbox import ExecutionError, KernelClient, KernelGateway
from kernelbox._child.gateway.prelaunch import PrelaunchedKernel

pytestmark = pytest.mark.anyio

TEST_TIMEOUT_SECONDS = 120.0
EXIT_TIMEOUT_SECONDS = 15.0
WAITING = re.compile(r"Pre-launched kernel \[pid (\d+)\] waits for the first kernel start")
TAKEN = re.compile(r"Kernel (\S+) is the pre-launched kernel process \[pid (\d+)\]")

# What a kernel reports about how it was started: everything but its own pid and connection file.
PROBE = """\
import ctypes, json, os, resource, sys
print(json.dumps({
    "pid": os.getpid(),
    "env": dict(os.environ),
    "argv": sys.argv,
    "executable": sys.executable,
    "cwd": os.getcwd(),
    "session_leader": os.getsid(0) == os.getpid(),
    "process_group_leader": os.getpgid(0) == os.getpid(),
    "parent": os.getppid(),
    "rlimit_data": resource.getrlimit(resource.RLIMIT_DATA),
    "oom_score_adj": open("/proc/self/oom_score_adj").read().strip(),
    "dumpable": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0),
    "stdin_is_pipe": os.readlink("/proc/self/fd/0").startswith("pipe:"),
}))
"""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class _GatewayLog(logging.Handler):
    """Every line of the gateway's log (`KernelGateway.log_tail` keeps only the last 50)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


_LOG = _GatewayLog()


@pytest.fixture(autouse=True)
def gateway_log() -> Iterator[_GatewayLog]:
    logger = logging.getLogger("kernelbox.gateway")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(_LOG)
    _LOG.lines.clear()
    yield _LOG
    logger.removeHandler(_LOG)
    logger.setLevel(level)


def _client(gateway: KernelGateway, tmp_path: Path, **kwargs: object) -> KernelClient:
    return KernelClient(host=gateway.host, port=gateway.port, token=gateway.token, images_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def _prelaunched_pid(gateway: KernelGateway) -> int:
    """The pid the gateway logged for its pre-launched kernel (logged before it answers)."""
    pids = [int(match.group(1)) for line in _LOG.lines if (match := WAITING.search(line))]
    assert len(pids) == 1, _LOG.lines
    return pids[0]


def _taken_over(gateway: KernelGateway) -> dict[str, int]:
    """Kernel id -> pid, for every kernel the gateway said took over the pre-launched process."""
    return {match.group(1): int(match.group(2)) for line in _LOG.lines if (match := TAKEN.search(line))}


async def _probe(client: KernelClient) -> dict[str, object]:
    result = await client.execute(PROBE)
    assert result.text is not None
    report: dict[str, object] = json.loads(result.text)
    return report


def _runs(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _wait_gone(pid: int) -> None:
    """Return once `pid` no longer runs (a zombie counts as gone); fail after the bound."""
    with anyio.fail_after(EXIT_TIMEOUT_SECONDS):
        while _runs(pid):
            await anyio.sleep(0.05)  # polling the process table for a condition


async def test_the_first_kernel_is_the_prelaunched_process_started_like_any_other(tmp_path: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with KernelGateway(port=0, working_dir=tmp_path, kernel_memory_limit=2 * 1024**3,
                                 env={"INJECTED": "yes"}) as gateway:
            prelaunched_pid = _prelaunched_pid(gateway)
            async with _client(gateway, tmp_path) as first, _client(gateway, tmp_path) as second:
                adopted, fresh = await _probe(first), await _probe(second)
                first_id, second_id = first.kernel_id, second.kernel_id
            assert _taken_over(gateway) == {first_id: prelaunched_pid}
    assert adopted["pid"] == prelaunched_pid
    assert fresh["pid"] != prelaunched_pid
    # Started the same way: the same environment (the gateway's, the injected variable, no
    # token), argv but for the connection file's kernel id, limits and hardening.
    assert adopted["env"] == fresh["env"]
    assert isinstance(adopted["env"], dict) and adopted["env"]["INJECTED"] == "yes"
    assert "KG_AUTH_TOKEN" not in adopted["env"]
    assert adopted["argv"] == [
        arg.replace(second_id, first_id) for arg in fresh["argv"]  # type: ignore[attr-defined]
    ]
    same = ("executable", "cwd", "session_leader", "process_group_leader", "parent", "rlimit_data",
            "oom_score_adj", "dumpable", "stdin_is_pipe")
    assert {key: adopted[key] for key in same} == {key: fresh[key] for key in same}
    assert adopted["session_leader"] is True
    assert adopted["rlimit_data"] == [2 * 1024**3, 2 * 1024**3]
    assert adopted["oom_score_adj"] == "1000"
    assert adopted["dumpable"] == 0


async def test_the_prelaunched_kernel_was_started_before_the_request(tmp_path: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with KernelGateway(port=0, working_dir=tmp_path) as gateway:
            prelaunched_pid = _prelaunched_pid(gateway)
            started_at = psutil.Process(prelaunched_pid).create_time()
            requested_at = time.time()
            async with _client(gateway, tmp_path) as client:
                assert (await _probe(client))["pid"] == prelaunched_pid
    assert started_at < requested_at


async def test_a_first_kernel_with_its_own_env_does_not_get_the_prelaunched_one(tmp_path: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with KernelGateway(port=0, working_dir=tmp_path) as gateway:
            prelaunched_pid = _prelaunched_pid(gateway)
            async with _client(gateway, tmp_path, kernel_env={"KERNEL_OWN": "own-value"}) as client:
                report = await _probe(client)
                assert report["pid"] != prelaunched_pid
                assert isinstance(report["env"], dict) and report["env"]["KERNEL_OWN"] == "own-value"
                await _wait_gone(prelaunched_pid)  # killed at once: it can serve no one now
            async with _client(gateway, tmp_path) as plain:  # a later plain start: a new process
                assert (await _probe(plain))["pid"] != prelaunched_pid
            assert _taken_over(gateway) == {}
            assert any("Stopping the pre-launched kernel" in line for line in _LOG.lines)


async def test_an_unused_prelaunched_kernel_does_not_outlive_the_gateway(tmp_path: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with KernelGateway(port=0, working_dir=tmp_path) as gateway:
            prelaunched_pid = _prelaunched_pid(gateway)
            assert gateway.pid is not None
            assert psutil.Process(prelaunched_pid).ppid() == gateway.pid
        await _wait_gone(prelaunched_pid)


async def test_the_prelaunched_kernel_dies_with_a_killed_gateway(tmp_path: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with KernelGateway(port=0, working_dir=tmp_path, restart_limit=0) as gateway:
            prelaunched_pid = _prelaunched_pid(gateway)
            assert gateway.pid is not None
            psutil.Process(gateway.pid).send_signal(signal.SIGKILL)
            await _wait_gone(prelaunched_pid)  # ipykernel's parent poller, or the supervisor's reaping


async def test_a_prelaunched_kernel_that_died_is_replaced_by_a_new_process(tmp_path: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with KernelGateway(port=0, working_dir=tmp_path) as gateway:
            prelaunched_pid = _prelaunched_pid(gateway)
            psutil.Process(prelaunched_pid).send_signal(signal.SIGKILL)
            await _wait_gone(prelaunched_pid)
            async with _client(gateway, tmp_path) as client:
                assert (await _probe(client))["pid"] != prelaunched_pid
            assert _taken_over(gateway) == {}
            assert any("Not taking over the pre-launched kernel" in line and "exited" in line
                       for line in _LOG.lines), _LOG.lines


async def test_a_pool_takes_the_prelaunched_kernel_first(tmp_path: Path) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with KernelGateway(port=0, working_dir=tmp_path, pool_size=1) as gateway:
            prelaunched_pid = _prelaunched_pid(gateway)
            while not any("Pooled kernel" in line and "(1 ready)" in line for line in _LOG.lines):
                await anyio.sleep(0.05)  # polling the gateway's log for a condition
            async with _client(gateway, tmp_path) as client:
                assert (await _probe(client))["pid"] == prelaunched_pid
                assert _taken_over(gateway) == {client.kernel_id: prelaunched_pid}


async def test_the_taken_over_kernel_interrupts_and_restarts_as_a_new_process(tmp_path: Path) -> None:
    async def interrupt_when_running(client: KernelClient, started: anyio.Event) -> None:
        await started.wait()
        await client.interrupt()

    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with KernelGateway(port=0, working_dir=tmp_path) as gateway:
            prelaunched_pid = _prelaunched_pid(gateway)
            async with _client(gateway, tmp_path) as client:
                assert (await _probe(client))["pid"] == prelaunched_pid
                # An interrupt reaches it (SIGINT to its process group, as for any kernel).
                started = anyio.Event()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(interrupt_when_running, client, started)
                    with pytest.raises(ExecutionError) as info:
                        async for _ in client.stream("import time\nprint('go', flush=True)\ntime.sleep(60)"):
                            started.set()
                assert info.value.ename == "KeyboardInterrupt"
                await client.execute("kept = 1")
                # A requested restart launches a new process, not the old one again.
                headers = {"Authorization": f"token {gateway.token}"}
                async with httpx.AsyncClient(trust_env=False, headers=headers, timeout=60) as http:
                    response = await http.post(f"{gateway.url}/api/kernels/{client.kernel_id}/restart")
                    assert response.status_code == 200, response.text
                await _wait_gone(prelaunched_pid)
                with pytest.raises(ExecutionError) as missing:
                    await client.execute("kept")
                assert missing.value.ename == "NameError"
                restarted = await _probe(client)
                assert restarted["pid"] != prelaunched_pid
                # And the restarter replaces it when it dies, again as a new process.
                assert isinstance(restarted["pid"], int)
                psutil.Process(restarted["pid"]).send_signal(signal.SIGKILL)
                await _wait_gone(restarted["pid"])
                await client.reset()
                assert (await client.execute("1 + 1")).text == "2"


@pytest.mark.unit
def test_differences_name_what_a_takeover_would_change() -> None:
    info = {"transport": "tcp", "ip": "127.0.0.1", "shell_port": 1, "key": "k"}
    prelaunched = PrelaunchedKernel(
        kernel_id="id", argv=["/py", "-f", "/run/kernel-id.json"], env={"A": "1", "KERNEL_GATEWAY": "1"},
        connection_info=info, process=None,  # type: ignore[arg-type]
    )
    same = prelaunched.differences(["/py", "-f", "/run/kernel-id.json"], {"A": "1", "KERNEL_GATEWAY": "1"},
                                   {**info, "key": b"k"}, {"cwd": None})
    assert same == []
    changed = prelaunched.differences(["/py", "-f", "/run/kernel-other.json"], {"A": "2", "B": "x", "KERNEL_GATEWAY": "1"},
                                      {**info, "shell_port": 2}, {"cwd": "/elsewhere", "stdout": 1})
    assert changed == ["argv", "env A", "env B", "connection info shell_port", "argument cwd", "argument stdout"]
