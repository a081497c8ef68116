"""Isolation attacks from kernel code against a real sandboxed gateway, through the public API.

Each test is one attack, tried for real from inside a kernel of ``KernelGateway(sandbox=True)``
(``default`` preset unless the attack is about another), and asserts that it FAILS. The
attacker is kernel code; the supervisor is this test process, which is root in CI (the sandbox
then runs as ``kernelbox-sandbox``). ``make test-isolation-unprivileged`` runs the same file as
a normal user.

A failed attack proves something only if it was really made. So each test also asserts that
the attack reached the point where only the protection could stop it (the target was found,
the call was made and refused with the errno of that protection), and, where one exists, runs
a positive control: the same attack code against a target without the protection (a stock
Jupyter kernel, a process of the attacker's own, the sandbox's uid outside the sandbox), where
it must succeed. Kernels are ordered by what they print (`helpers.cells`), never by sleeping.

Nothing here changes the host: ``/proc/sys`` writability is probed by writing the current value
back, planted files are removed at once, and credentials are fakes in a fake ``HOME``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.cells import StreamedCell
from helpers.control_kernel import stock_kernel
from helpers.outside_sandbox import run_as_sandbox_user
from helpers.sandbox_dirs import sandbox_work_dir
from test_sandbox import sandbox_prerequisites  # noqa: F401  (autouse: skip or fail in CI)

import kernelbox
from kernelbox import GatewayStartError, KernelboxError, KernelClient, KernelGateway
from kernelbox._child.kernel.hardening import landlock_abi
from kernelbox.gateway._cgroups import cgroup_support

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox]

START_TIMEOUT_SECONDS = 90.0
EXECUTE_TIMEOUT_SECONDS = 60.0
# How long an attacker's cell may wait for the test's stop file before it gives up.
ATTACK_BOUND_SECONDS = 180.0
TEST_TIMEOUT_SECONDS = 300.0
CREDENTIAL_TEXT = "FAKE-CREDENTIAL-51d0"
KEY_SECRET = b"kernelbox-isolation-key-7e1"
CHECKOUT = Path(kernelbox.__file__).resolve().parent.parent
# Credential files that kernel code must not read (relative to HOME).
CREDENTIAL_FILES = (
    ".pgpass",
    ".netrc",
    ".boto",
    ".s3cfg",
    ".config/rclone/rclone.conf",
    ".cache/huggingface/token",
    ".m2/settings.xml",
    ".terraformrc",
    ".bash_history",
    ".python_history",
    ".zsh_history",
    ".kernelbox/gateway.json",
)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def work() -> Iterator[Path]:
    """A working directory the sandbox can write (see `helpers.sandbox_dirs`)."""
    with sandbox_work_dir() as path:
        yield path


@contextlib.asynccontextmanager
async def gateway_with_kernels(
    work: Path, *, kernels: int = 1, sandbox: bool = True, **gateway_kwargs: Any
) -> AsyncIterator[tuple[KernelGateway, list[KernelClient]]]:
    """A gateway on `work` with `kernels` connected clients (each its own kernel).

    Sandboxed (``default`` preset unless told) unless `sandbox` is False: the unsandboxed
    gateway is where the positive controls' attackers run.
    """
    if sandbox:
        gateway_kwargs.setdefault("sandbox_config", "default")
    with anyio.fail_after(START_TIMEOUT_SECONDS):
        gw = KernelGateway(
            host="127.0.0.1", port=0, sandbox=sandbox, working_dir=work,
            startup_timeout=START_TIMEOUT_SECONDS, **gateway_kwargs,
        )
        await gw.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = []
            for _ in range(kernels):
                with anyio.fail_after(START_TIMEOUT_SECONDS):
                    kc = KernelClient(host=gw.host, port=gw.port, token=gw.token)
                    clients.append(await stack.enter_async_context(kc))
            yield gw, clients
    finally:
        with anyio.fail_after(30, shield=True):
            await gw.stop()


def sandboxed(work: Path, *, kernels: int = 1, **gateway_kwargs: Any) -> contextlib.AbstractAsyncContextManager[
    tuple[KernelGateway, list[KernelClient]]
]:
    """A sandboxed gateway on `work` with `kernels` connected clients."""
    return gateway_with_kernels(work, kernels=kernels, sandbox=True, **gateway_kwargs)


def unsandboxed(work: Path, *, kernels: int = 1) -> contextlib.AbstractAsyncContextManager[
    tuple[KernelGateway, list[KernelClient]]
]:
    """An unsandboxed gateway on `work`: kernels without the sandbox, for positive controls."""
    return gateway_with_kernels(work, kernels=kernels, sandbox=False)


async def run(kc: KernelClient, code: str, timeout: float = EXECUTE_TIMEOUT_SECONDS) -> str:
    with anyio.fail_after(timeout + 15):
        result = await kc.execute(textwrap.dedent(code), timeout=timeout)
    return result.text or ""


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def _reports(text: str, prefix: str) -> list[dict[str, Any]]:
    """The JSON objects printed on lines ``PREFIX {...}``."""
    return [json.loads(line.split(" ", 1)[1]) for line in _lines(text, prefix + " ")]


# -- 1. host root: /proc/sys ----------------------------------------------------------------


PROC_SYS_CODE = """
for name in ("kernel/core_pattern", "kernel/hostname", "kernel/domainname",
             "vm/drop_caches", "kernel/modprobe"):
    path = "/proc/sys/" + name
    try:
        value = open(path).read()
    except OSError as exc:
        print("unreadable", name, exc.errno)
        continue
    try:
        with open(path, "w") as f:   # the same value back: no change on success
            f.write(value)
        print("WRITABLE", name)
    except OSError as exc:
        print("denied", name, exc.errno)
"""


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_1_proc_sys_is_not_writable(work: Path) -> None:
    """core_pattern = '|/script' + a crash would run the script as host root."""
    async with sandboxed(work) as (_gw, (kc,)):
        text = await run(kc, PROC_SYS_CODE)
    assert not _lines(text, "WRITABLE"), text
    # The attack ran: core_pattern was read, and opening it for writing was refused on permission.
    assert f"denied kernel/core_pattern {errno.EACCES}" in text.splitlines(), text
    if os.geteuid() != 0:
        return  # a normal user cannot write /proc/sys anywhere: there is no control to run
    # The control: the same code in a kernel without the sandbox (and its privilege drop), as
    # root, does write core_pattern. So the privilege drop is what stops the attack above.
    async with unsandboxed(work) as (_gw, (control,)):
        control_text = await run(control, PROC_SYS_CODE)
    if "WRITABLE kernel/core_pattern" not in control_text.splitlines():
        pytest.skip(f"/proc/sys is read-only even for root on this host, so the attack cannot matter here:\n{control_text}")


# -- 2. the gateway process -----------------------------------------------------------------


GATEWAY_ATTACK_CODE = r"""
import ctypes, json, os, socket, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
PTRACE_ATTACH, PTRACE_DETACH, SYS_PIDFD_GETFD, WALL = 16, 17, 438, 0x40000000

def inner_pid(pid):   # /proc may belong to an outer pid namespace
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("NSpid:"):
            return int(line.split()[-1])

def processes_with_argument(argument):
    found = []
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if argument in argv:
            found.append(pid)
    return found

def attack(pid):
    # Each entry: what was obtained, or the errno that refused it.
    got = {}
    try:
        env = open(f"/proc/{pid}/environ", "rb").read()
        got["environ"] = "TOKEN" if TOKEN.encode() in env else "read"
    except OSError as exc:
        got["environ"] = exc.errno
    try:
        mem = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
        try:
            start = int(open(f"/proc/{pid}/maps").readline().split("-")[0], 16)
            os.pread(mem, 16, start)
            got["mem"] = "read"
        finally:
            os.close(mem)
    except OSError as exc:
        got["mem"] = exc.errno
    got["stolen_fds"], got["listening_sockets"], refusals = 0, [], set()
    pidfd = os.pidfd_open(inner_pid(pid))
    for fd in range(3, 64):
        new = libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd),
                           ctypes.c_uint(0))
        if new < 0:
            refusals.add(ctypes.get_errno())
            continue
        got["stolen_fds"] += 1
        try:
            s = socket.socket(fileno=new)
        except OSError:
            os.close(new)
            continue
        with s:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                got["listening_sockets"].append(s.getsockname()[1])
    os.close(pidfd)
    got["pidfd_getfd_errnos"] = sorted(refusals)
    target = inner_pid(pid)
    if libc.ptrace(ctypes.c_long(PTRACE_ATTACH), ctypes.c_long(target), None, None) == 0:
        os.waitpid(target, WALL)
        libc.ptrace(ctypes.c_long(PTRACE_DETACH), ctypes.c_long(target), None, None)
        got["ptrace"] = "attached"
    else:
        got["ptrace"] = ctypes.get_errno()
    return got

# The control: a process of this kernel's own, neither undumpable nor in another Landlock
# domain, holding the token in its environment and a listening socket, as the gateway does.
control = subprocess.Popen(
    [sys.executable, "-c", "import socket, sys; s = socket.create_server(('127.0.0.1', 0)); "
     "print(s.getsockname()[1], flush=True); sys.stdin.read()", "kernelbox-isolation-control"],
    env={**os.environ, "KG_AUTH_TOKEN": TOKEN}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
)
control_port = int(control.stdout.readline())
for pid in processes_with_argument(b"kernelbox._child.gateway"):
    print("GATEWAY", json.dumps(attack(pid)))
for pid in processes_with_argument(b"kernelbox-isolation-control"):
    print("CONTROL", json.dumps(dict(attack(pid), port=control_port)))
control.stdin.close()
returncode = control.wait()
"""


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_2_gateway_process_is_out_of_reach(work: Path) -> None:
    async with sandboxed(work) as (gw, (kc,)):
        text = await run(kc, f"TOKEN = {gw.token!r}\n" + GATEWAY_ATTACK_CODE)
    gateways, controls = _reports(text, "GATEWAY"), _reports(text, "CONTROL")
    # The attack ran: the gateway was found in /proc, and every step reached it and was refused
    # on permission (undumpable, and outside the kernel's Landlock domain).
    assert len(gateways) == 1, text
    gateway = gateways[0]
    assert gateway["environ"] == errno.EACCES, text
    assert gateway["mem"] == errno.EACCES, text
    assert gateway["stolen_fds"] == 0 and gateway["pidfd_getfd_errnos"] == [errno.EPERM], text
    assert gateway["listening_sockets"] == [], text
    assert gateway["ptrace"] == errno.EPERM, text
    # The control: the same code took everything from an unprotected process in the same sandbox.
    assert len(controls) == 1, text
    control = controls[0]
    assert control["environ"] == "TOKEN" and control["mem"] == "read", text
    assert control["port"] in control["listening_sockets"], text
    assert control["ptrace"] == "attached", text


# -- 3. kernels of one gateway --------------------------------------------------------------


ATTACKER_CODE = r"""
import concurrent.futures, json, os, socket, time
import zmq
from jupyter_client import BlockingKernelClient
from zmq.utils.monitor import recv_monitor_message

# (a) Connection files where Jupyter writes them: execute code in every other kernel found.
runtime = os.environ["JUPYTER_RUNTIME_DIR"]
entries = os.listdir(runtime)   # raises when hidden: the attack must see the directory
others = sorted(name for name in entries
                if name.startswith("kernel-") and name.endswith(".json") and name != MY_FILE)
print("RUNTIME-DIR", json.dumps({"entries": len(entries), "connection_files": others}), flush=True)
for name in others:
    kc = BlockingKernelClient()
    kc.load_connection_info(json.load(open(os.path.join(runtime, name))))
    kc.start_channels()
    try:
        kc.execute("VICTIM_PWNED = True")
        reply = kc.get_shell_msg(timeout=10)
        print("EXECUTED-IN-VICTIM", name, reply["content"]["status"], flush=True)
    except Exception as exc:
        print("execute failed", name, type(exc).__name__, flush=True)
    finally:
        kc.stop_channels()

# (b) No key at all: subscribe to every loopback listener, as an unencrypted iopub would allow.
ports = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(table).readlines()[1:]
    except OSError:
        continue
    for line in lines:
        fields = line.split()
        address, port = fields[1].rsplit(":", 1)
        if fields[3] == "0A" and address.strip("0") in ("", "100007F", "1000000"):   # listening on loopback
            ports.add(int(port, 16))
print("LISTENING", json.dumps(sorted(ports)), flush=True)
context = zmq.Context()
subscribers, outcomes, monitors = {}, {}, zmq.Poller()
for port in sorted(ports):
    s = context.socket(zmq.SUB)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.linger = 0
    s.handshake_ivl = 3000   # a listener that never answers (not ZMQ) fails in 3 s
    monitor = s.get_monitor_socket(addr=f"inproc://monitor-{port}")
    monitors.register(monitor, zmq.POLLIN)
    s.connect(f"tcp://127.0.0.1:{port}")
    subscribers[port] = (s, monitor)
# Wait until every connection's ZMTP handshake succeeded or failed; only then is the
# subscription in place (or known to be refused), so the victim may start printing.
deadline = time.monotonic() + 10
port_of = {monitor: port for port, (_, monitor) in subscribers.items()}
while len(outcomes) < len(subscribers) and time.monotonic() < deadline:
    for monitor, _ in monitors.poll(500):
        event = recv_monitor_message(monitor)["event"]
        port = port_of[monitor]
        if port not in outcomes and event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            outcomes[port] = "subscribed"
        elif port not in outcomes and event & (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            outcomes[port] = "refused"

def server_mechanism(port):
    # The security mechanism a ZMTP 3 server names in its greeting (bytes 12-31), which it
    # sends once it has read a client's signature and major version; None: not ZMTP.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"\xff" + b"\0" * 8 + b"\x7f\x03")
            greeting = b""
            while len(greeting) < 32:
                chunk = s.recv(64)
                if not chunk:
                    break
                greeting += chunk
    except OSError:
        return None
    if len(greeting) < 32 or greeting[0] != 0xFF or greeting[9] != 0x7F:
        return None
    return greeting[12:32].rstrip(b"\0").decode("ascii", "replace")

refused = [port for port, outcome in outcomes.items() if outcome == "refused"]
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for port, mechanism in zip(refused, pool.map(server_mechanism, refused)):
        outcomes[port] = f"refused: the server requires {mechanism}" if mechanism else "refused: not ZMTP"
print("SUBSCRIBED", json.dumps({str(port): outcome for port, outcome in outcomes.items()}), flush=True)
sniffed = b""
readers = zmq.Poller()
for s, _ in subscribers.values():
    readers.register(s, zmq.POLLIN)
deadline = time.monotonic() + BOUND
while b"victim-secret-output" not in sniffed and not os.path.exists(STOP) and time.monotonic() < deadline:
    for s, _ in readers.poll(100):
        sniffed += b"".join(s.recv_multipart(zmq.NOBLOCK))
print("SNIFFED-VICTIM-OUTPUT" if b"victim-secret-output" in sniffed else "sniffed nothing", flush=True)
"""

VICTIM_CODE = """
for i in range(10):
    print("victim-secret-output", i, flush=True)
"""

KERNEL_PORTS_CODE = """
import json
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
print(json.dumps({name: getattr(app, f"{name}_port") for name in ("shell", "iopub", "stdin", "control", "hb")}))
"""


async def _drive_and_watch(
    attacker: KernelClient, stop_dir: Path, print_secrets: Callable[[], Awaitable[str]]
) -> tuple[str, str]:
    """Run `ATTACKER_CODE` on `attacker`; once it is subscribed, let the victim print.

    `print_secrets` makes the victim print ``victim-secret-output`` lines and returns what
    it printed. The attacker's sniffing ends when it has seen them, or when the test drops
    the stop file in its working directory `stop_dir` after the victim has printed them all.

    Returns:
        ``(attacker's output, victim's output)``.
    """
    stop = f"attack-stop-{uuid.uuid4().hex}"
    prelude = (
        f"MY_FILE = {f'kernel-{attacker.kernel_id}.json'!r}\nSTOP = {stop!r}\n"
        f"BOUND = {ATTACK_BOUND_SECONDS!r}\n"
    )
    cell = StreamedCell()
    async with anyio.create_task_group() as tg:
        await tg.start(cell.run, attacker, prelude + ATTACKER_CODE, ATTACK_BOUND_SECONDS + 30)
        with anyio.fail_after(EXECUTE_TIMEOUT_SECONDS):
            await cell.wait_for("SUBSCRIBED ")
        with anyio.fail_after(EXECUTE_TIMEOUT_SECONDS):
            printed = await print_secrets()
        (stop_dir / stop).touch()
    return cell.text, printed


def _subscription(text: str, port: int) -> str | None:
    """What the attacker's ZMTP handshake with `port` came to (None: it never tried)."""
    reports = _reports(text, "SUBSCRIBED")
    return reports[0].get(str(port)) if reports else None


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_3_kernels_cannot_drive_or_watch_each_other(work: Path) -> None:
    # The control: the same attacker code, in a kernel without the sandbox, against a stock
    # Jupyter kernel (plain TCP, no CurveZMQ) whose connection file is in the attacker's
    # runtime directory. Both halves of the attack must succeed there.
    with sandbox_work_dir(prefix="kernelbox-test-control-") as control_work:
        async with unsandboxed(control_work) as (_gw, (attacker,)):
            runtime = Path(await run(attacker, "import os; print(os.environ['JUPYTER_RUNTIME_DIR'])"))
            connection_file = runtime / f"kernel-control-{uuid.uuid4().hex}.json"
            async with stock_kernel(connection_file, cwd=control_work) as stock:
                control, stock_printed = await _drive_and_watch(
                    attacker, control_work, lambda: stock.execute(textwrap.dedent(VICTIM_CODE))
                )
                stock_pwned = await stock.execute("print('VICTIM_PWNED' in globals())")
                stock_ports = stock.ports
    assert stock_printed.count("victim-secret-output") == 10, stock_printed
    assert _reports(control, "RUNTIME-DIR")[0]["connection_files"] == [connection_file.name], control
    assert f"EXECUTED-IN-VICTIM {connection_file.name} ok" in control.splitlines(), control
    assert stock_pwned.strip() == "True", control
    assert stock_ports["iopub"] in _reports(control, "LISTENING")[0], control
    assert _subscription(control, stock_ports["iopub"]) == "subscribed", control
    assert "SNIFFED-VICTIM-OUTPUT" in control.splitlines(), control

    # The attack: a kernel of a sandboxed gateway against its sibling.
    async with sandboxed(work, kernels=2) as (_gw, (victim, attacker)):
        victim_ports = json.loads(await run(victim, KERNEL_PORTS_CODE))
        text, printed = await _drive_and_watch(attacker, work, lambda: run(victim, VICTIM_CODE))
        pwned = await run(victim, "print('VICTIM_PWNED' in globals())")
    assert printed.count("victim-secret-output") == 10, printed
    # (a) ran: the runtime directory was listed, and no kernel's connection file is in it.
    runtime_dir = _reports(text, "RUNTIME-DIR")
    assert runtime_dir and runtime_dir[0]["connection_files"] == [], text
    assert pwned == "False", text
    assert not _lines(text, "EXECUTED-IN-VICTIM"), text
    # (b) ran: the attacker found all five of the victim's ports listening and reached the
    # victim's iopub, whose handshake refused it (CurveZMQ, while it offered none).
    listening = set(_reports(text, "LISTENING")[0])
    assert set(victim_ports.values()) <= listening, (victim_ports, text)
    assert _subscription(text, victim_ports["iopub"]) == "refused: the server requires CURVE", text
    assert "sniffed nothing" in text.splitlines(), text
    assert not _lines(text, "SNIFFED-VICTIM-OUTPUT"), text
    print(f"control:\n{control}\nattack:\n{text}")


RACE_CODE = """
import ctypes, os, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH, WALL = 16, 17, 0x40000000
me, uid, seen = os.getpid(), os.getuid(), set()

def dumpable(pid):
    # /proc/<pid>/environ belongs to the process's own uid only while it is dumpable
    # (task_dump_owner in the Linux source); once undumpable, to root (unmapped here).
    try:
        return os.stat(f"/proc/{pid}/environ").st_uid == uid
    except OSError:
        return False

def attack(pid):
    before = dumpable(pid)
    try:
        os.close(os.open(f"/proc/{pid}/mem", os.O_RDONLY))
        mem = "MEM-OPENED"
    except OSError as exc:
        mem = f"mem-denied-{exc.errno}"
    if libc.ptrace(ctypes.c_long(PTRACE_ATTACH), ctypes.c_long(int(pid)), None, None) == 0:
        os.waitpid(int(pid), WALL)
        libc.ptrace(ctypes.c_long(PTRACE_DETACH), ctypes.c_long(int(pid)), None, None)
        traced = "PTRACE-ATTACHED"
    else:
        traced = f"ptrace-denied-{ctypes.get_errno()}"
    # Dumpable before and after: it was dumpable throughout (a process never becomes
    # dumpable again without an execve), so only a protection other than that stopped us.
    window = "in-window" if before and dumpable(pid) else "after-window"
    print("KERNEL", pid, window, mem, traced, flush=True)

# The control: a process of this kernel's own (dumpable, in its Landlock domain) that the
# same loop below finds by the same name.
control = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", "control-kernelbox._child.kernel"],
                           stdin=subprocess.PIPE)
print("CONTROL", control.pid, flush=True)
print("POLLING", flush=True)
deadline = time.monotonic() + BOUND
while not os.path.exists(STOP) and time.monotonic() < deadline:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me or pid in seen:
            continue
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"kernelbox._child.kernel" in cmdline:
            seen.add(pid)
            attack(pid)
control.stdin.close()
control.wait()
print("saw", len(seen), "kernels")
"""
# Kernels started at most while the attacker waits to catch one in its start-up window.
RACE_VICTIMS = 8


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_3_a_kernel_cannot_reach_a_sibling_during_its_start_up(work: Path) -> None:
    """Before a new kernel makes itself undumpable (~50 ms), a polling sibling must still fail.

    The attacker proves it struck inside that window: the victim was still dumpable before and
    after the attempt, so its own Landlock domain is the only thing left to refuse it.
    """
    if landlock_abi() < 1:
        pytest.skip("no Landlock in this Linux kernel: the start-up window is a documented gap (README)")
    stop = f"attack-stop-{uuid.uuid4().hex}"
    cell = StreamedCell()
    victims: list[str] = []
    async with sandboxed(work) as (gw, (attacker,)), anyio.create_task_group() as tg:
        code = f"STOP = {stop!r}\nBOUND = {ATTACK_BOUND_SECONDS!r}\n" + RACE_CODE
        await tg.start(cell.run, attacker, code, ATTACK_BOUND_SECONDS + 30)
        with anyio.fail_after(EXECUTE_TIMEOUT_SECONDS):
            await cell.wait_for("POLLING")
        while len(victims) < RACE_VICTIMS and not any("in-window" in line for line in victims):
            with anyio.fail_after(START_TIMEOUT_SECONDS):
                async with KernelClient(host=gw.host, port=gw.port, token=gw.token) as victim:
                    pid = (await victim.execute("import os; os.getpid()")).text
                    victims.append(await cell.wait_for(f"KERNEL {pid} "))
        (work / stop).touch()
    text = cell.text
    # The control: the same attack took the attacker's own dumpable process.
    control_pid = cell.matching("CONTROL ")[0].split()[1]
    assert f"KERNEL {control_pid} in-window MEM-OPENED PTRACE-ATTACHED" in cell.lines, text
    # The attack ran: at least one new sibling was caught while still dumpable ...
    assert any(" in-window " in line for line in victims), f"no sibling caught in its window:\n{text}"
    # ... and every sibling refused both, on permission.
    for line in victims:
        assert line.endswith(f" mem-denied-{errno.EACCES} ptrace-denied-{errno.EPERM}"), text
    print(text)


# -- 4. secrets: session keyring, credential files ------------------------------------------


def _add_session_key() -> int | None:
    """Join a fresh session keyring and add a user key to it (as `keyctl add user ... @s`)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(250), ctypes.c_long(1), ctypes.c_void_p(None)) < 0:
        return None  # keyrings unavailable here
    key = libc.syscall(ctypes.c_long(248), b"user", b"kbisolation", KEY_SECRET,
                       ctypes.c_size_t(len(KEY_SECRET)), ctypes.c_long(-3))
    return key if key >= 0 else None


SECRETS_CODE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def keyctl(*args):
    return libc.syscall(ctypes.c_long(250),
                        *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
def read_key(k):
    value = ctypes.create_string_buffer(256)
    m = keyctl(11, k, value, 256)
    return value.raw[:m] if m >= 0 else ctypes.get_errno()
if KEY_ID is not None:
    # every key this process can see (/proc/keys) or reach from its session keyring, and the
    # supervisor's key by its id
    ids = {KEY_ID}
    try:
        ids |= {int(line.split()[0], 16) for line in open("/proc/keys")}
    except OSError:
        pass
    buf = ctypes.create_string_buffer(4096)
    n = keyctl(11, -3, buf, 4096)
    ids |= {int.from_bytes(buf.raw[i:i + 4], "little") for i in range(0, max(n, 0), 4)}
    for k in ids:
        got = read_key(k)
        if isinstance(got, bytes) and KEY_SECRET in got:
            print("KEY-READ", k)
    got = read_key(KEY_ID)
    print("key", "read" if isinstance(got, bytes) else got)
for path in FILES:
    try:
        content = open(path).read()
        print("CREDENTIAL-READ" if TEXT in content else "read-without-credential", path)
    except OSError as exc:
        print("denied", path, exc.errno)
"""


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_4_session_keyring_and_credential_files_are_out_of_reach(work: Path) -> None:
    # The fake home belongs to the sandbox's uid (as a normal user's home does): file
    # permissions let that uid read every credential, so only the sandbox can hide them.
    # The home is hidden by the sandbox's view and by the preset's denies; the `.env` files
    # in the working directory, which the sandbox shows, by the denies alone.
    with sandbox_work_dir(prefix="kernelbox-test-home-") as home:
        files = [home / relative for relative in CREDENTIAL_FILES]
        files += [work / ".env", work / "service" / ".env.production"]
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(CREDENTIAL_TEXT, encoding="utf-8")
        key = _add_session_key()
        code = (
            f"KEY_ID = {key!r}\nKEY_SECRET = {KEY_SECRET!r}\n"
            f"FILES = {[str(path) for path in files]!r}\nTEXT = {CREDENTIAL_TEXT!r}\n" + SECRETS_CODE
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HOME", str(home))
            async with sandboxed(work) as (_gw, (kc,)):
                text = await run(kc, code)
        # The control: the same code as the sandbox's uid outside the sandbox, in this
        # process's session keyring (as the gateway would be without its own), reads it all.
        control = await run_as_sandbox_user(code)
    print(f"attack:\n{text}\ncontrol:\n{control}")
    assert not _lines(text, "CREDENTIAL-READ"), text
    assert len(_lines(text, "denied ")) == len(files), text
    assert len(_lines(control, "CREDENTIAL-READ")) == len(files), control
    if key is None:
        return  # no keyrings in this Linux kernel: nothing to steal
    assert not _lines(text, "KEY-READ"), text
    # The attack ran: the key exists, and reading it was refused on permission (not found: ENOKEY).
    assert f"key {errno.EACCES}" in text.splitlines(), text
    assert _lines(control, "KEY-READ") and "key read" in control.splitlines(), control


# -- 5. planting code the host runs later ---------------------------------------------------


PLANT_MARK = "# kernelbox-isolation-plant-probe\n"


def _planted_on_host(text: str) -> list[str]:
    """The paths the kernel reports written whose *host* file holds the marker (cleaned up).

    Inside the sandbox a path can be writable in a private view (srt puts a tmpfs over a
    denied directory) without anything reaching the host, so the host is what is checked.
    """
    found = []
    for line in _lines(text, "WRITTEN"):
        path = Path(line.split(" ", 1)[1])
        try:
            content = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if PLANT_MARK in content:
            found.append(str(path))
            remaining = content.replace(PLANT_MARK, "")
            if remaining:
                path.write_text(remaining, encoding="utf-8")
            else:
                path.unlink()
    return found


PLANT_CODE = """
import glob, os, sys
def try_write(path, append=False, label="WRITTEN"):
    # Writes a marker; the test then checks the *host* for it (inside, a path can be writable
    # in a private view, e.g. a tmpfs over a denied directory, without anything reaching the host).
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a" if append else "x") as f:
            f.write(MARK)
        print(label, path)
    except OSError as exc:
        print("blocked", path, exc.errno)
# The control: the same writer in the working directory, which is writable by design.
try_write(os.path.join(os.getcwd(), "control-plant.py"), label="CONTROL-WRITTEN")
root = CHECKOUT
try_write(os.path.join(root, "sitecustomize.py"))
try_write(os.path.join(root, "usercustomize.py"))
packages = sorted(glob.glob(os.path.join(root, ".tools/srt/node_modules/*/package.json"))
                  + glob.glob(os.path.join(root, ".tools/srt/node_modules/@*/*/package.json")))
print("PROBED srt-packages", len(packages))
for js in packages:
    try_write(js, append=True)
try_write(os.path.join(root, ".tools/srt/node_modules/.bin/planted"))
entries = [entry for entry in HOST_SYS_PATH if entry and os.path.isdir(entry)]
print("PROBED sys-path", len(entries))
for entry in entries:                  # what the host's Python imports from
    try_write(os.path.join(entry, "planted_isolation_probe.pth"))
state = os.path.dirname(os.environ.get("HOME", "/nonexistent"))
# (PIP_TARGET is writable by design: %pip installs there. Only kernels import from it; the
# gateway runs with -I, and nothing on the host imports from the state directory.)
specs = glob.glob(os.path.join(state, "jupyter/kernels/*/kernel.json"))
print("PROBED kernelspecs", len(specs))
for spec in specs:
    try_write(spec, append=True)
for d in os.environ.get("JUPYTER_PATH", "").split(os.pathsep):
    if d:
        try_write(os.path.join(d, "kernels/planted/kernel.json"))
"""


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_5_a_working_dir_holding_host_code_is_refused() -> None:
    """The checkout is on every sys.path of its venv (editable install), and holds srt."""
    with pytest.raises(kernelbox.SandboxConfigError, match="which this host runs outside the sandbox"):
        async with sandboxed(CHECKOUT):
            pass


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_5_kernels_cannot_plant_code_the_host_runs(work: Path) -> None:
    """Nothing the host executes (its sys.path, srt's node_modules, the kernelspec) is writable."""
    async with sandboxed(work, kernel_memory_limit=1 << 30) as (_gw, (kc,)):
        prelude = f"CHECKOUT = {str(CHECKOUT)!r}\nHOST_SYS_PATH = {sys.path!r}\nMARK = {PLANT_MARK!r}\n"
        text = await run(kc, prelude + PLANT_CODE)
        planted = _planted_on_host(text)  # while the state directory still exists
    print(text)
    assert not planted, f"kernel code planted files the host runs: {planted}\n{text}"
    # The control: the writer works, and what it writes reaches the host.
    control = work / "control-plant.py"
    assert f"CONTROL-WRITTEN {control}" in text.splitlines(), text
    assert control.read_text(encoding="utf-8") == PLANT_MARK
    # The attack ran: it saw srt's packages, the host's sys.path and the kernelspec, and
    # every write to them was refused.
    probed = {line.split()[1]: int(line.split()[2]) for line in _lines(text, "PROBED ")}
    assert probed["srt-packages"] > 0 and probed["sys-path"] > 0 and probed["kernelspecs"] == 1, text
    assert _lines(text, f"blocked {CHECKOUT / 'sitecustomize.py'} "), text
    assert len(_lines(text, "blocked ")) >= sum(probed.values()), text


# -- 6. resource limits ---------------------------------------------------------------------


def _cgroups_refusal() -> str | None:
    problems = [reason for reason in cgroup_support().values() if reason is not None]
    return "; ".join(problems) or None


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_6_memory_limit_covers_the_whole_kernel_tree(work: Path) -> None:
    """Shared memory, /dev/shm and child processes are all inside ``memory_limit``.

    Where cgroups cannot be used (not root), asking for the limit is refused instead.
    """
    limit = 512 << 20
    if _cgroups_refusal() is not None:
        with pytest.raises(GatewayStartError, match="memory_limit cannot be enforced"):
            async with sandboxed(work, memory_limit=limit):
                pass
        return
    got: list[str] = []
    async with sandboxed(work, memory_limit=limit, kernel_memory_limit=limit) as (_gw, (kc,)):
        for code in (
            # shared anonymous memory is not counted by RLIMIT_DATA
            "import mmap\nm = mmap.mmap(-1, 700 << 20, flags=mmap.MAP_SHARED)\n"
            "for i in range(0, len(m), 4096): m[i] = 1\nprint('ALLOCATED shared')\nm.close()",
            # each child process gets its own RLIMIT_DATA; each holds its memory until its
            # standard input closes, so all three hold theirs at once
            "import subprocess, sys\nps = [subprocess.Popen([sys.executable, '-c', "
            "'import sys; b = bytearray(250 << 20); print(1, flush=True); sys.stdin.read()'], "
            "stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(3)]\n"
            "ok = sum(p.stdout.readline().strip() == b'1' for p in ps)\n"
            "for p in ps: p.stdin.close()\n"
            "[p.wait() for p in ps]\nprint('ALLOCATED children' if ok == 3 else f'children {ok}')",
            # cgroup v1 does not charge socket buffers to the memory limit by itself
            "import socket\nserver = socket.create_server(('127.0.0.1', 0))\nparked, pairs = 0, []\n"
            "for _ in range(600):\n"
            "    a = socket.create_connection(server.getsockname()); b, _ = server.accept()\n"
            "    a.setblocking(False); pairs.append((a, b))\n"
            "    try:\n"
            "        while True: parked += a.send(b'x' * (1 << 20))\n"
            "    except BlockingIOError: pass\n"
            "    if parked > 700 << 20: break\n"
            "print('ALLOCATED tcp' if parked > 700 << 20 else f'tcp {parked >> 20} MiB')\n"
            "for a, b in pairs: a.close(); b.close()",
            # tmpfs pages belong to no process (last: what it wrote stays charged to the group)
            "import os\nwith open('/dev/shm/kb-isolation', 'wb') as f:\n"
            "    for _ in range(700): f.write(b'x' * (1 << 20))\nprint('ALLOCATED devshm')\n"
            "os.unlink('/dev/shm/kb-isolation')",
        ):
            try:
                got.append(await run(kc, code))
            except KernelboxError as exc:  # a killed kernel, or MemoryError: the limit held
                got.append(f"stopped: {type(exc).__name__}: {exc}")
                if "devshm" not in code:
                    with anyio.fail_after(START_TIMEOUT_SECONDS):
                        await kc.reset()
    allocated = [line for text in got for line in _lines(text, "ALLOCATED")]
    assert not allocated, got
    # Each attempt ran into the limit: the kernel was stopped, or it reported how far it got.
    assert len(got) == 4 and all(got), got
    print("memory attempts:", got)


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_6_process_count_is_limited(work: Path) -> None:
    """Forks past ``pids_limit`` fail (or asking for it is refused where cgroups cannot be used)."""
    if _cgroups_refusal() is not None:
        with pytest.raises(GatewayStartError, match="pids_limit cannot be enforced"):
            async with sandboxed(work, pids_limit=256):
                pass
        return
    async with sandboxed(work, pids_limit=256) as (_gw, (kc,)):
        text = await run(kc, """
            import os, signal
            children = []
            try:
                for _ in range(2048):
                    pid = os.fork()
                    if pid == 0:
                        signal.pause()   # held until killed below
                        os._exit(0)
                    children.append(pid)
                print("FORKED", len(children))
            except OSError as exc:
                print("fork refused after", len(children), exc.errno)
            finally:
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
                for pid in children:
                    os.waitpid(pid, 0)
        """, timeout=120)
        still_useful = await run(kc, "print(sum(range(10)))")
    assert not _lines(text, "FORKED"), text
    # The attack ran up to the limit: many forks succeeded, then the cgroup refused (EAGAIN).
    refused = _lines(text, "fork refused after ")
    assert refused, text
    forked = int(refused[0].split()[3])
    assert 100 < forked < 256 and refused[0].endswith(f" {errno.EAGAIN}"), text
    assert still_useful == "45"


# -- 8. network: ports on allow-listed hosts ------------------------------------------------


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_8_pypi_preset_allows_only_https_port(work: Path) -> None:
    async with sandboxed(work, sandbox_config="pypi") as (_gw, (kc,)):
        text = await run(kc, """
            import base64, os, socket
            from urllib.parse import unquote, urlsplit
            proxy = urlsplit(os.environ.get("HTTPS_PROXY") or os.environ["https_proxy"])
            auth = ""
            if proxy.username:
                token = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
                auth = "Proxy-Authorization: Basic " + base64.b64encode(token.encode()).decode() + "\\r\\n"
            for target in ("pypi.org:22", "pypi.org:25", "files.pythonhosted.org:8080", "pypi.org:443"):
                s = socket.create_connection((proxy.hostname, proxy.port), timeout=20)
                s.sendall(f"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n{auth}\\r\\n".encode())
                status = s.recv(200).split(b"\\r\\n")[0].decode()
                s.close()
                print("ACCEPTED" if " 200 " in status + " " else "refused", target, status)
        """)
    accepted = _lines(text, "ACCEPTED")
    assert accepted == [line for line in accepted if line.split()[1] == "pypi.org:443"], text
    assert any("pypi.org:443" in line for line in accepted), text  # the control: still useful
    # The attack ran: the proxy itself answered each other port with a refusal.
    refused = _lines(text, "refused ")
    assert [line.split()[1] for line in refused] == ["pypi.org:22", "pypi.org:25", "files.pythonhosted.org:8080"], text
    assert all(" HTTP/1.1 403" in line for line in refused), text
