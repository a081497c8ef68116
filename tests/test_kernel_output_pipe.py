"""Kernel output never passes for the gateway's log (`kernelbox._child.gateway.kernel_output`).

Kernels used to inherit the gateway's stdout/stderr, the pipe the supervisor reads as the
gateway's log: ``os.write(1, b"[C ...] ...")`` in kernel code became a CRITICAL record of
``kernelbox.gateway``, and 3,000 forged 16 KB ERROR lines (48 MB) became 3,000 ERROR records.
Now every kernel process writes to a pipe of its own, read by the gateway: at DEBUG the
gateway passes that output on as kernel output records (escaped, cut, rate-limited), which
the supervisor logs under ``kernelbox.kernel`` at DEBUG; at any other level it discards it.

Per backend, one gateway at DEBUG (kernel output reaches the log) and one at the default
INFO with a pool of one (it must not); one sandboxed gateway, under asyncio only. Forged lines
carry a tag the cell's code builds at run time, so no record that merely quotes the code (an
``execute_request`` logged at DEBUG) can match it.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import psutil
import pytest
from helpers.sandbox_dirs import sandbox_work_dir

from kernelbox import ExecutionResult, KernelClient, KernelGateway
from kernelbox._child.gateway.kernel_output import (
    DRAIN_SECONDS,
    MAX_BYTES_PER_SECOND,
    MAX_LINES_PER_SECOND,
    MAX_RECORD_BYTES,
    KernelOutputLines,
    escape,
    parse_record,
)

pytestmark = pytest.mark.anyio

TEST_TIMEOUT_SECONDS = 120.0
WAIT_SECONDS = 30.0
POLL_SECONDS = 0.05

# The forging part of a cell: `tag` is made at run time, `forged(level, what)` is one line that
# reads as a record of the gateway's own, ending in "<tag>-<what>".
FORGE_PRELUDE = '''\
import json, os, stat, subprocess, sys
tag = "kp" + "ipe-" + {nonce!r}
def forged(level, what):
    return ("[%s 12:00:00.000 KernelGatewayApp] Supervisor: all kernels stopped %s-%s\\n"
            % (level, tag, what)).encode()
'''
# Through fd 1 and fd 2 (ipykernel's capture, echoed to the original descriptors), through a
# subprocess of the kernel, and straight to the original stdout with control characters.
FORGE_EVERY_WAY = FORGE_PRELUDE + '''\
os.write(1, forged("C", "fd1"))
os.write(2, forged("E", "fd2"))
subprocess.run(["sh", "-c", 'printf "%s" "$0"; printf "%s" "$1" >&2',
                forged("W", "sub-out").decode(), forged("E", "sub-err").decode()], check=True)
os.write(sys.stdout.fileno(), b"\\x1b[31m" + forged("C", "ansi")[:-1] + b"\\r" + forged("E", "after-cr"))
# ipykernel forwards what reaches fds 1 and 2 from a thread of its own; output written just
# before a cell ends can miss that cell's result (also without kernelbox). So the cell ends
# once the test has seen it arrive (`_forge`): a condition, bounded.
import time
deadline = time.monotonic() + {wait_seconds}
while not os.path.exists({release!r}) and time.monotonic() < deadline:
    time.sleep(0.01)  # polling for the release file
print("printed", tag)
'''
FORGED_WHATS = ("fd1", "fd2", "sub-out", "sub-err", "ansi")
# What the execution's result must hold of the forged lines (the ANSI one bypasses ipykernel).
RESULT_WHATS = ("fd1", "fd2", "sub-out", "sub-err")
# Every pipe the kernel process holds, and which of them are its original stdout and stderr
# (ipykernel keeps copies of them; fds 1 and 2 are its capture pipes).
PIPES_PROBE = '''\
import json, os, stat, sys
pipes = set()
for fd in os.listdir("/proc/self/fd"):
    try:
        info = os.stat(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if stat.S_ISFIFO(info.st_mode):
        pipes.add(info.st_ino)
print(json.dumps({"pid": os.getpid(), "pipes": sorted(pipes),
                  "stdout": os.fstat(sys.stdout.fileno()).st_ino,
                  "stderr": os.fstat(sys.stderr.fileno()).st_ino}))
'''
# A process that outlives its kernel (a session of its own) with the kernel's original stdout.
ORPHAN_SCRIPT = "import os, sys, time\nwhile True:\n    os.write(1, sys.argv[1].encode() + b'\\n')\n    time.sleep(0.1)\n"


@dataclass(frozen=True)
class Logged:
    """One record of the supervisor's log as the test saw it."""

    at: float  # time.monotonic() when logged
    name: str
    level: int
    message: str


class Capture(logging.Handler):
    """Every record of ``kernelbox.gateway`` and ``kernelbox.kernel``, DEBUG included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[Logged] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(Logged(time.monotonic(), record.name, record.levelno, record.getMessage()))

    def containing(self, text: str) -> list[Logged]:
        return [record for record in self.records if text in record.message]

    def kernel_output(self, kernel_id: str) -> list[Logged]:
        """The kernel output records of `kernel_id`: its lines and the gateway's notes."""
        return [
            record for record in self.records
            if record.name == "kernelbox.kernel"
            and (record.message.startswith(f"[kernel {kernel_id}] ") or record.message.startswith(f"Kernel {kernel_id}: "))
        ]

    async def wait_for(self, condition: Callable[[], object], what: str) -> None:
        with anyio.fail_after(WAIT_SECONDS):
            while not condition():
                await anyio.sleep(POLL_SECONDS)  # polling the captured log for a condition
        assert condition(), what


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    handler = Capture()
    loggers = [logging.getLogger(name) for name in ("kernelbox.gateway", "kernelbox.kernel")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
async def debug_gateway(
    anyio_backend: str, capture: Capture, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[KernelGateway]:
    """A gateway that logs at DEBUG: kernel output reaches the supervisor's log."""
    working_dir = tmp_path_factory.mktemp("debug-work")
    async with KernelGateway(host="127.0.0.1", port=0, log_level="DEBUG", working_dir=working_dir) as gateway:
        yield gateway


@pytest.fixture(scope="module")
async def info_gateway(
    anyio_backend: str, capture: Capture, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[KernelGateway]:
    """A gateway at the default level (INFO) with a pool of one kernel.

    The captured records are cleared first: the pool's records of the other backend's
    gateway must not count as this one's.
    """
    capture.records.clear()
    working_dir = tmp_path_factory.mktemp("info-work")
    async with KernelGateway(host="127.0.0.1", port=0, pool_size=1, working_dir=working_dir) as gateway:
        yield gateway


def _client(gateway: KernelGateway, tmp_path: Path, **kwargs: object) -> KernelClient:
    return KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,  # type: ignore[arg-type]
                        images_dir=tmp_path / "images", **kwargs)


def _tag(nonce: str) -> str:
    return f"kpipe-{nonce}"


def _proc_fds(pid: int) -> list[str]:
    """The descriptors of process `pid` (the gateway is undumpable: only root may look)."""
    try:
        return os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        pytest.skip("reading the gateway's descriptors in /proc needs root (the gateway is undumpable)")


def _log_pipe_inode(gateway: KernelGateway) -> int:
    """The inode of the pipe the supervisor reads as the gateway's log (the process's stderr)."""
    assert gateway.pid is not None
    assert "2" in _proc_fds(gateway.pid)
    info = os.stat(f"/proc/{gateway.pid}/fd/2")
    assert stat.S_ISFIFO(info.st_mode)
    return info.st_ino


def _pipe_inodes(pid: int) -> set[int]:
    """The pipes process `pid` holds, by inode."""
    found = set()
    for fd in _proc_fds(pid):
        try:
            info = os.stat(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if stat.S_ISFIFO(info.st_mode):
            found.add(info.st_ino)
    return found


async def _pipes(client: KernelClient) -> dict[str, object]:
    result = await client.execute(PIPES_PROBE)
    assert result.text is not None
    report: dict[str, object] = json.loads(result.text)
    return report


async def _forge(client: KernelClient, working_dir: Path, nonce: str) -> ExecutionResult:
    """Run `FORGE_EVERY_WAY` in `client`'s kernel (its working directory: `working_dir`) and
    return its result, which then holds every forged line that went through ipykernel."""
    release = f"release-{nonce}-{uuid.uuid4().hex[:8]}"
    expected = [f"{_tag(nonce)}-{what}" for what in RESULT_WHATS]
    seen = ""
    async for item in client.stream(FORGE_EVERY_WAY.format(nonce=nonce, release=release, wait_seconds=WAIT_SECONDS)):
        if isinstance(item, ExecutionResult):
            return item
        seen += str(item)
        if all(text in seen for text in expected):
            (working_dir / release).touch()
    raise AssertionError("the stream ended without a result")


def _assert_only_kernel_records(capture: Capture, tag: str, kernel_id: str | None) -> list[Logged]:
    """Every record quoting `tag` is a DEBUG kernel output record of `kernel_id` on one line;
    returns them."""
    quoting = capture.containing(tag)
    assert not [r for r in quoting if r.name != "kernelbox.kernel"], quoting
    assert not [r for r in quoting if r.level != logging.DEBUG], quoting
    for record in quoting:
        assert kernel_id is not None and record.message.startswith(f"[kernel {kernel_id}] "), record
        assert all(ord(char) >= 0x20 for char in record.message), record
    return quoting


# -- forged records ------------------------------------------------------------------------


async def test_forged_log_lines_become_escaped_kernel_output_records(
    debug_gateway: KernelGateway, capture: Capture, tmp_path: Path
) -> None:
    nonce = uuid.uuid4().hex[:12]
    tag = _tag(nonce)
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with _client(debug_gateway, tmp_path) as client:
            result = await _forge(client, debug_gateway.working_dir, nonce)
            kernel_id = client.kernel_id
            # They do arrive (the attack ran to the log pipe's reader)...
            await capture.wait_for(
                lambda: all(capture.containing(f"{tag}-{what}") for what in FORGED_WHATS), "every forged line logged"
            )
    # ... as kernel output of this kernel, never as the gateway's, never above DEBUG.
    quoting = _assert_only_kernel_records(capture, tag, kernel_id)
    assert len(quoting) == len(FORGED_WHATS)  # one record per line written
    [ansi] = capture.containing(f"{tag}-ansi")
    assert "\\x1b[31m[C 12:00:00.000 KernelGatewayApp]" in ansi.message
    assert f"{tag}-ansi\\r[E 12:00:00.000 KernelGatewayApp]" in ansi.message  # the CR stays in its record
    assert f"{tag}-after-cr" in ansi.message
    # The kernel's ordinary output still reaches the execution's result as before.
    assert result.text is not None
    for what in RESULT_WHATS:
        assert f"Supervisor: all kernels stopped {tag}-{what}" in result.text
    assert f"printed {tag}" in result.text


async def test_no_kernel_shares_the_gateways_log_pipe_and_forgeries_log_nothing(
    info_gateway: KernelGateway, capture: Capture, tmp_path: Path
) -> None:
    log_pipe = _log_pipe_inode(info_gateway)
    nonce = uuid.uuid4().hex[:12]
    tag = _tag(nonce)
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        await capture.wait_for(lambda: capture.containing("(1 ready)"), "the pool filled")
        # The pre-launched kernel (taken by the pool), the pool's replacement, a kernel of its own.
        async with _client(info_gateway, tmp_path) as prelaunched:
            await capture.wait_for(
                lambda: [r for r in capture.containing("(1 ready)") if "Pooled kernel" in r.message
                         and prelaunched.kernel_id not in r.message], "the pool refilled")
            async with _client(info_gateway, tmp_path) as pooled, \
                    _client(info_gateway, tmp_path, kernel_env={"KERNEL_KPIPE": "own"}) as own:
                clients = {"prelaunched": prelaunched, "pooled": pooled, "own": own}
                reports = {name: await _pipes(client) for name, client in clients.items()}
                results = {name: await _forge(client, info_gateway.working_dir, nonce)
                           for name, client in clients.items()}
                kernel_ids = {name: client.kernel_id for name, client in clients.items()}
            own_id = kernel_ids["own"]
            # A record the gateway writes after the forgeries: had a kernel written to its log
            # pipe, the forged lines would be in the pipe before it.
            await capture.wait_for(lambda: capture.containing(f"Kernel shutdown: {own_id}"), "own kernel shut down")
    assert any(f"Kernel {kernel_ids['prelaunched']} is the pre-launched kernel process" in r.message
               for r in capture.records)
    assert any(f"Handed out pooled kernel {kernel_ids['pooled']}" in r.message for r in capture.records)
    # No descriptor of any kernel is the gateway's log pipe; stdout and stderr are one pipe,
    # each kernel's own.
    for name, report in reports.items():
        assert log_pipe not in report["pipes"], name  # type: ignore[operator]
        assert report["stdout"] == report["stderr"], name
    assert len({report["stdout"] for report in reports.values()}) == len(reports)
    # At INFO, kernel output is not passed on at all: not one record quotes the forged lines.
    assert capture.containing(tag) == []
    assert not [r for r in capture.records for kernel_id in kernel_ids.values()
                if r.name == "kernelbox.kernel" and kernel_id in r.message]
    for name, result in results.items():
        assert result.text is not None and f"{tag}-fd1" in result.text and f"{tag}-sub-err" in result.text, name


async def test_a_restarted_kernel_writes_to_a_new_pipe_and_the_old_one_is_closed(
    debug_gateway: KernelGateway, capture: Capture, tmp_path: Path
) -> None:
    assert debug_gateway.pid is not None
    nonce = uuid.uuid4().hex[:12]
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with _client(debug_gateway, tmp_path) as client:
            before = await _pipes(client)
            headers = {"Authorization": f"token {debug_gateway.token}"}
            async with httpx.AsyncClient(trust_env=False, headers=headers, timeout=WAIT_SECONDS) as http:
                response = await http.post(f"{debug_gateway.url}/api/kernels/{client.kernel_id}/restart")
                assert response.status_code == 200, response.text
            after = await _pipes(client)
            assert after["pid"] != before["pid"]
            assert after["stdout"] != before["stdout"] and after["stdout"] == after["stderr"]
            # The old process's pipe is closed once it ended; the new one is read, same kernel id.
            with anyio.fail_after(WAIT_SECONDS):
                while before["stdout"] in _pipe_inodes(debug_gateway.pid):
                    await anyio.sleep(POLL_SECONDS)  # polling the gateway's descriptors for a condition
            assert after["stdout"] in _pipe_inodes(debug_gateway.pid)
            await client.execute(f"import os\nos.write(1, ('restarted-' + {nonce!r} + '\\n').encode())")
            await capture.wait_for(lambda: capture.containing(f"restarted-{nonce}"), "the new process's output")
            [record] = capture.containing(f"restarted-{nonce}")
            assert record.name == "kernelbox.kernel" and record.message == f"[kernel {client.kernel_id}] restarted-{nonce}"


# -- a flood ---------------------------------------------------------------------------------

FLOOD_LONG_LINES = 3_000  # 16 KB each: the 48 MB of the original finding
FLOOD_SHORT_LINES = 100_000
FLOOD = FORGE_PRELUDE + '''\
import time
long_line = forged("E", "long")[:-1] + b"x" * 16_000 + b"\\n"
short_lines = forged("E", "short") * 1_000
started = time.monotonic()
for _ in range({long_lines}):
    os.write(1, long_line)
for _ in range({short_batches}):
    os.write(1, short_lines)
took = time.monotonic() - started
'''


def _dropped_lines(records: list[Logged]) -> int:
    total = 0
    for record in records:
        if " lines (" in record.message and "of output dropped" in record.message:
            total += int(record.message.split(": ", 1)[1].split(" lines (", 1)[0])
    return total


async def test_a_flood_costs_the_supervisor_a_bounded_log_and_says_what_it_dropped(
    debug_gateway: KernelGateway, capture: Capture, tmp_path: Path
) -> None:
    nonce = uuid.uuid4().hex[:12]
    tag = _tag(nonce)
    total_lines = FLOOD_LONG_LINES + FLOOD_SHORT_LINES
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with _client(debug_gateway, tmp_path) as client:
            kernel_id = client.kernel_id
            code = FLOOD.format(nonce=nonce, long_lines=FLOOD_LONG_LINES, short_batches=FLOOD_SHORT_LINES // 1_000)
            await client.execute(code, max_output_bytes=1 << 20)
            took = float((await client.execute("print(took)")).text or "nan")

            def accounted() -> int:
                lines = [r for r in capture.kernel_output(kernel_id) if tag in r.message]
                return len(lines) + _dropped_lines(capture.kernel_output(kernel_id))

            await capture.wait_for(lambda: accounted() >= total_lines, "every flooded line logged or counted")
            assert accounted() == total_lines  # each line logged or counted as dropped, once
            # After the flood, output is read and logged again (the reader is still there).
            await client.execute(f"import os\nos.write(1, ('after-' + 'flood-' + {nonce!r} + '\\n').encode())")
            await capture.wait_for(lambda: capture.containing(f"after-flood-{nonce}"), "output after the flood")
    flood = [r for r in capture.kernel_output(kernel_id) if f"after-flood-{nonce}" not in r.message]
    _assert_only_kernel_records(capture, tag, kernel_id)
    lines = [r for r in flood if r.message.startswith("[kernel ")]
    span = max(flood[-1].at - flood[0].at, 1e-3)
    logged_bytes = sum(len(r.message.encode()) for r in flood)
    # Within the budget of each one-second window (the first and last may be partial).
    windows = span / 1.0 + 2
    assert len(lines) <= windows * MAX_LINES_PER_SECOND
    assert logged_bytes <= windows * MAX_BYTES_PER_SECOND
    # Each line as the gateway wrote it ("[K <id>] <text>\n") was one write of at most PIPE_BUF.
    text_budget = MAX_RECORD_BYTES - len(f"[K {kernel_id}] \n")
    assert all(len(r.message.encode()) - len(f"[kernel {kernel_id}] ") <= text_budget for r in lines)
    long_records = [r for r in lines if f"{tag}-long" in r.message]
    assert long_records and all(r.message.endswith("[kernelbox: line cut]") for r in long_records)
    forged = len(f"[E 12:00:00.000 KernelGatewayApp] Supervisor: all kernels stopped {tag}-long")
    flood_bytes = FLOOD_LONG_LINES * (forged + 16_001) + FLOOD_SHORT_LINES * (forged + 1)
    print(  # the measurement (pytest -s)
        f"\nflood of {total_lines} lines ({flood_bytes} bytes) "
        f"written in {took:.2f} s; supervisor log: {len(flood)} records, {logged_bytes} bytes over "
        f"{span:.2f} s = {logged_bytes / span:.0f} bytes/s, {len(lines) / span:.0f} lines/s; "
        f"{_dropped_lines(flood)} lines dropped and counted"
    )


# -- processes that outlive their kernel -------------------------------------------------------


async def test_a_pipe_held_by_a_process_the_kernel_left_is_read_then_closed(
    debug_gateway: KernelGateway, capture: Capture, tmp_path: Path
) -> None:
    nonce = uuid.uuid4().hex[:12]
    marker = f"orphan-{nonce}"
    code = (
        "import os, subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {ORPHAN_SCRIPT!r}, 'orphan-' + {nonce!r}],\n"
        "    stdin=subprocess.DEVNULL, stdout=sys.stdout.fileno(), stderr=subprocess.DEVNULL,\n"
        "    start_new_session=True)\n"
        "print(os.getpid(), child.pid, os.fstat(sys.stdout.fileno()).st_ino)"
    )
    orphan: psutil.Process | None = None
    try:
        with anyio.fail_after(TEST_TIMEOUT_SECONDS):
            async with _client(debug_gateway, tmp_path) as client:
                kernel_id = client.kernel_id
                kernel_pid, orphan_pid, pipe = map(int, ((await client.execute(code)).text or "").split())
                orphan = psutil.Process(orphan_pid)
                await capture.wait_for(lambda: capture.containing(marker), "the orphan's output logged")
            # The kernel is shut down; the process it started in a session of its own is not.
            with anyio.fail_after(WAIT_SECONDS):
                while psutil.pid_exists(kernel_pid) and psutil.Process(kernel_pid).status() != psutil.STATUS_ZOMBIE:
                    await anyio.sleep(POLL_SECONDS)  # polling the process table for a condition
            kernel_gone_at = time.monotonic()
            assert orphan.is_running()
            # Its output is still read after the kernel exited...
            await capture.wait_for(lambda: [r for r in capture.containing(marker) if r.at > kernel_gone_at],
                                   "the orphan's output read after the kernel exited")
            # ... until the drain time is over: then the pipe is closed, and said so.
            await capture.wait_for(lambda: [r for r in capture.kernel_output(kernel_id)
                                            if "output pipe closed" in r.message], "the pipe closed")
            [closed] = [r for r in capture.kernel_output(kernel_id) if "output pipe closed" in r.message]
            assert closed.at - kernel_gone_at >= DRAIN_SECONDS / 2  # not at the exit: after a drain time
            assert closed.level == logging.DEBUG
            # The orphan's next write fails (EPIPE) and it exits; the gateway holds no end of it.
            with anyio.fail_after(WAIT_SECONDS):
                while orphan.is_running() and orphan.status() != psutil.STATUS_ZOMBIE:
                    await anyio.sleep(POLL_SECONDS)  # polling the process table for a condition
            assert debug_gateway.pid is not None
            assert pipe not in _pipe_inodes(debug_gateway.pid)
    finally:
        if orphan is not None and orphan.is_running():
            orphan.kill()


# -- sandboxed -----------------------------------------------------------------------------------


@pytest.mark.sandbox
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # once: the sandbox is the subject here
async def test_forged_log_lines_in_the_sandbox_become_kernel_output_records(capture: Capture, tmp_path: Path) -> None:
    from test_sandbox import _in_ci, _unavailable_reason

    reason = _unavailable_reason()
    if reason is not None:
        if _in_ci():
            pytest.fail(f"the sandbox cannot run here: {reason}")
        pytest.skip(f"the sandbox cannot run here: {reason}")
    nonce = uuid.uuid4().hex[:12]
    tag = _tag(nonce)
    with anyio.fail_after(TEST_TIMEOUT_SECONDS), sandbox_work_dir() as work:
        async with KernelGateway(host="127.0.0.1", port=0, sandbox=True, log_level="DEBUG", working_dir=work,
                                 startup_timeout=90) as gateway:
            log_pipe = _log_pipe_inode(gateway)  # srt's stderr: the same pipe reaches the gateway
            async with _client(gateway, tmp_path) as client:
                report = await _pipes(client)
                result = await _forge(client, work, nonce)
                kernel_id = client.kernel_id
                await capture.wait_for(
                    lambda: all(capture.containing(f"{tag}-{what}") for what in FORGED_WHATS), "every forged line logged"
                )
    assert log_pipe not in report["pipes"]  # type: ignore[operator]
    assert len(_assert_only_kernel_records(capture, tag, kernel_id)) == len(FORGED_WHATS)
    assert result.text is not None and f"{tag}-sub-out" in result.text


# -- the pure part: escaping, cutting, the rate limit, the record format ---------------------------


@pytest.mark.unit
def test_escape_leaves_nothing_that_acts_on_a_terminal_or_splits_a_line() -> None:
    raw = b"a\x1b[2Jb\r\n\tc\\d \xff\xfe \xe2\x80\xae rtl \xc2\x85 nel \xe2\x80\xa8 ls \xc3\xa9t\xc3\xa9 \x7f"
    text = escape(raw)
    assert text == ("a\\x1b[2Jb\\r\\n\\tc\\\\d \\xff\\xfe \\u202e rtl \\x85 nel \\u2028 ls été \\x7f")
    assert all(ord(char) >= 0x20 and char not in "\u2028\u2029\x85" for char in text)
    assert text.splitlines() == [text]


@pytest.mark.unit
def test_a_kernel_line_that_looks_like_a_record_stays_inside_one() -> None:
    lines = KernelOutputLines("0f1e-kernel")
    records = lines.feed(b"[C 12:00:00.000 KernelGatewayApp] stop\n[K other kernelbox] fake note\n", 0.0)
    parsed = [parse_record(record.decode().rstrip("\n")) for record in records]
    assert [(p.kernel_id, p.text, p.note) for p in parsed if p is not None] == [
        ("0f1e-kernel", "[C 12:00:00.000 KernelGatewayApp] stop", False),
        ("0f1e-kernel", "[K other kernelbox] fake note", False),
    ]
    assert parse_record("[C 12:00:00.000 KernelGatewayApp] stop") is None
    # An id with spaces or brackets cannot end the prefix early.
    [record] = KernelOutputLines("a] b").feed(b"x\n", 0.0)
    assert record == b"[K a??b] x\n"


@pytest.mark.unit
def test_a_line_is_joined_across_reads_and_cut_to_one_atomic_write() -> None:
    lines = KernelOutputLines("k")
    assert lines.feed(b"hel", 0.0) == []
    assert lines.feed(b"lo\nwor", 0.0) == [b"[K k] hello\n"]
    assert lines.close(0.0) == [b"[K k] wor\n"]
    # A line of escapes is cut between escapes, within PIPE_BUF, and its rest skipped.
    cut = KernelOutputLines("k")
    [record] = cut.feed(b"\x1b" * 50_000, 0.0)
    assert cut.feed(b"\x1b" * 50_000 + b"\nnext\n", 0.0) == [b"[K k] next\n"]
    assert len(record) <= MAX_RECORD_BYTES
    assert record.endswith(b"\\x1b [kernelbox: line cut]\n")


@pytest.mark.unit
def test_past_the_rate_limit_output_is_dropped_counted_and_noted_once() -> None:
    lines = KernelOutputLines("k", max_lines_per_second=3, max_bytes_per_second=1_000)
    records = lines.feed(b"1\n2\n3\n4\n5\n", 0.0) + lines.feed(b"6\n7", 0.5)
    assert records == [b"[K k] 1\n", b"[K k] 2\n", b"[K k] 3\n"]
    assert lines.due(0.9) == []
    [note] = lines.due(1.0)
    assert note == (b"[K k kernelbox] 4 lines (7 bytes) of output dropped: over 3 lines or 1000 bytes "
                    b"per second\n")
    assert lines.feed(b"\n8\n", 1.1) == [b"[K k] 8\n"]  # the rest of line 7 was already counted
    # The byte budget counts whole records.
    small = KernelOutputLines("k", max_lines_per_second=100, max_bytes_per_second=20)
    assert small.feed(b"aaaaaaaa\nbbbbbbbb\n", 0.0) == [b"[K k] aaaaaaaa\n"]
    assert small.close(0.1) == [b"[K k kernelbox] 1 lines (9 bytes) of output dropped: over 100 lines or 20 "
                                b"bytes per second\n"]
