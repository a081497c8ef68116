"""Isolation attacks from kernel code against a real sandboxed gateway, through the public API.

Each test is one attack, tried for real from inside a kernel of ``KernelGateway(sandbox=True)``
(``default`` preset unless the attack is about another), and asserts that it FAILS. The
attacker is kernel code; the supervisor is this test process, which is root in CI (the sandbox
then runs as ``kernelbox-sandbox``). ``make test-isolation-unprivileged`` runs the same file as
a normal user.

Nothing here changes the host: ``/proc/sys`` writability is probed by writing the current value
back, planted files are removed at once, and credentials are fakes in a fake ``HOME``.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.sandbox_dirs import sandbox_work_dir
from test_sandbox import sandbox_prerequisites  # noqa: F401  (autouse: skip or fail in CI)

import kernelbox
from kernelbox import GatewayStartError, KernelboxError, KernelClient, KernelGateway
from kernelbox.gateway._cgroups import cgroup_support

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox]

START_TIMEOUT_SECONDS = 90.0
EXECUTE_TIMEOUT_SECONDS = 60.0
TEST_TIMEOUT_SECONDS = 240.0
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
async def sandboxed(
    work: Path, *, kernels: int = 1, **gateway_kwargs: Any
) -> AsyncIterator[tuple[KernelGateway, list[KernelClient]]]:
    """A sandboxed gateway on `work` with `kernels` connected clients (each its own kernel)."""
    gateway_kwargs.setdefault("sandbox_config", "default")
    with anyio.fail_after(START_TIMEOUT_SECONDS):
        gw = KernelGateway(
            host="127.0.0.1", port=0, sandbox=True, working_dir=work,
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
        with anyio.fail_after(30):
            await gw.stop()


async def run(kc: KernelClient, code: str, timeout: float = EXECUTE_TIMEOUT_SECONDS) -> str:
    with anyio.fail_after(timeout + 15):
        result = await kc.execute(textwrap.dedent(code), timeout=timeout)
    return result.text or ""


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


# -- 1. host root: /proc/sys ----------------------------------------------------------------


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_1_proc_sys_is_not_writable(work: Path) -> None:
    """core_pattern = '|/script' + a crash would run the script as host root."""
    async with sandboxed(work) as (_gw, (kc,)):
        text = await run(kc, """
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
        """)
    assert not _lines(text, "WRITABLE"), text


# -- 2. the gateway process -----------------------------------------------------------------


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_2_gateway_process_is_out_of_reach(work: Path) -> None:
    async with sandboxed(work) as (gw, (kc,)):
        text = await run(kc, f"""
            import ctypes, os, socket
            token = {gw.token!r}
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            me = os.getpid()
            def inner_pid(pid):   # /proc may belong to an outer pid namespace
                for line in open(f"/proc/{{pid}}/status"):
                    if line.startswith("NSpid:"):
                        return int(line.split()[-1])
            for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
                try:
                    cmdline = open(f"/proc/{{pid}}/cmdline", "rb").read()
                except OSError:
                    continue
                argv = cmdline.split(b"\\0")
                if b"kernelbox._child.gateway" not in argv:
                    continue
                print("found gateway", pid)
                try:
                    env = open(f"/proc/{{pid}}/environ", "rb").read()
                    print("ENVIRON-READ", pid, "TOKEN-FOUND" if token.encode() in env else "")
                except OSError as exc:
                    print("environ denied", exc.errno)
                try:
                    mem = os.open(f"/proc/{{pid}}/mem", os.O_RDONLY)
                    start = int(open(f"/proc/{{pid}}/maps").readline().split("-")[0], 16)
                    os.pread(mem, 16, start)
                    print("MEM-READ", pid)
                except OSError as exc:
                    print("mem denied", exc.errno)
                try:
                    pidfd = os.pidfd_open(inner_pid(pid))
                except OSError as exc:
                    print("pidfd_open denied", exc.errno)
                    continue
                for fd in range(3, 64):
                    new = libc.syscall(ctypes.c_long(438), ctypes.c_int(pidfd), ctypes.c_int(fd),
                                       ctypes.c_uint(0))
                    if new < 0:
                        continue
                    try:
                        s = socket.socket(fileno=new)
                        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                            print("LISTENING-SOCKET-STOLEN", s.getsockname())
                    except OSError:
                        os.close(new)
                print("pidfd_getfd done", ctypes.get_errno())
                r = libc.ptrace(ctypes.c_long(16), ctypes.c_long(inner_pid(pid)), None, None)
                if r == 0:
                    print("PTRACE-ATTACHED")
                    libc.ptrace(ctypes.c_long(17), ctypes.c_long(inner_pid(pid)), None, None)
        """)
    assert "TOKEN-FOUND" not in text, text
    for marker in ("ENVIRON-READ", "MEM-READ", "LISTENING-SOCKET-STOLEN", "PTRACE-ATTACHED"):
        assert not _lines(text, marker), text


# -- 3. kernels of one gateway --------------------------------------------------------------


ATTACKER_CODE = """
import glob, json, os, time, uuid
import zmq
from jupyter_client import BlockingKernelClient
results = []
# (a) the victim's connection file in the runtime directory: execute code in it
runtime = os.environ.get("JUPYTER_RUNTIME_DIR", "")
for path in glob.glob(os.path.join(runtime, "kernel-*.json")):
    if os.path.basename(path) == MY_FILE:
        continue
    try:
        info = json.load(open(path))
    except OSError:
        continue
    kc = BlockingKernelClient()
    kc.load_connection_info(info)
    kc.start_channels()
    try:
        kc.execute("VICTIM_PWNED = True")
        reply = kc.get_shell_msg(timeout=5)
        print("EXECUTED-IN-VICTIM", reply["content"]["status"])
    except Exception as exc:
        print("execute failed", type(exc).__name__)
    finally:
        kc.stop_channels()
# (b) no key at all: subscribe to every loopback listener, as iopub would allow
ports = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(table).readlines()[1:]
    except OSError:
        continue
    for line in lines:
        fields = line.split()
        if fields[3] == "0A":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
ctx = zmq.Context()
subs = []
for port in ports:
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.linger = 0
    s.connect(f"tcp://127.0.0.1:{port}")
    subs.append(s)
deadline = time.monotonic() + 6
sniffed = b""
while time.monotonic() < deadline:
    for s in subs:
        try:
            sniffed += b"".join(s.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            pass
    time.sleep(0.05)
print("SNIFFED-VICTIM-OUTPUT" if b"victim-secret-output" in sniffed else "sniffed nothing")
"""


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_3_kernels_cannot_drive_or_watch_each_other(work: Path) -> None:
    async with sandboxed(work, kernels=2) as (_gw, (victim, attacker)):
        out: dict[str, str] = {}
        my_file = f"kernel-{attacker.kernel_id}.json"

        async def attack() -> None:
            out["attacker"] = await run(attacker, f"MY_FILE = {my_file!r}\n" + ATTACKER_CODE)

        async def victim_prints() -> None:
            await anyio.sleep(1.5)  # the attacker subscribes first
            out["victim"] = await run(victim, """
                import time
                for i in range(8):
                    print("victim-secret-output", i, flush=True)
                    time.sleep(0.5)
            """)

        async with anyio.create_task_group() as tg:
            tg.start_soon(attack)
            tg.start_soon(victim_prints)
        pwned = await run(victim, "print('VICTIM_PWNED' in globals())")
    assert pwned == "False", out
    assert "EXECUTED-IN-VICTIM" not in out["attacker"], out
    assert "SNIFFED-VICTIM-OUTPUT" not in out["attacker"], out


RACE_CODE = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
me, seen, deadline = os.getpid(), set(), time.monotonic() + WINDOW
while time.monotonic() < deadline:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me or pid in seen:
            continue
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"kernelbox._child.kernel" not in cmdline:
            continue
        seen.add(pid)
        try:
            os.close(os.open(f"/proc/{pid}/mem", os.O_RDONLY))
            print("MEM-OPENED", pid)
        except OSError as exc:
            print("mem denied", pid, exc.errno)
        if libc.ptrace(ctypes.c_long(16), ctypes.c_long(int(pid)), None, None) == 0:
            print("PTRACE-ATTACHED", pid)
            libc.ptrace(ctypes.c_long(17), ctypes.c_long(int(pid)), None, None)
print("saw", len(seen), "kernels")
"""


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_3_a_kernel_cannot_reach_a_sibling_during_its_start_up(work: Path) -> None:
    """Before a new kernel makes itself undumpable (~50 ms), a polling sibling must still fail."""
    async with sandboxed(work) as (gw, (attacker,)):
        out: dict[str, str] = {}

        async def attack() -> None:
            out["attacker"] = await run(attacker, "WINDOW = 12\n" + RACE_CODE)

        async def start_victims() -> None:
            await anyio.sleep(2)  # the attacker is polling by then
            for _ in range(3):
                with anyio.fail_after(START_TIMEOUT_SECONDS):
                    async with KernelClient(host=gw.host, port=gw.port, token=gw.token) as victim:
                        assert (await victim.execute("1 + 1")).text == "2"

        async with anyio.create_task_group() as tg:
            tg.start_soon(attack)
            tg.start_soon(start_victims)
    text = out["attacker"]
    assert "saw 0 kernels" not in text, text  # the attacker did see new kernels
    assert not _lines(text, "MEM-OPENED") and not _lines(text, "PTRACE-ATTACHED"), text


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


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_4_session_keyring_and_credential_files_are_out_of_reach(tmp_path: Path, work: Path) -> None:
    home = tmp_path / "home"
    for relative in CREDENTIAL_FILES:
        path = home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CREDENTIAL_TEXT, encoding="utf-8")
    key = _add_session_key()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        async with sandboxed(work) as (_gw, (kc,)):
            text = await run(kc, f"""
                import ctypes, os
                libc = ctypes.CDLL(None, use_errno=True)
                libc.syscall.restype = ctypes.c_long
                def keyctl(*args):
                    return libc.syscall(ctypes.c_long(250),
                                        *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
                # every key this process can see (/proc/keys) or reach from its session keyring
                ids = set()
                try:
                    ids |= {{int(line.split()[0], 16) for line in open("/proc/keys")}}
                except OSError:
                    pass
                buf = ctypes.create_string_buffer(4096)
                n = keyctl(11, -3, buf, 4096)
                ids |= {{int.from_bytes(buf.raw[i:i + 4], "little") for i in range(0, max(n, 0), 4)}}
                for k in ids:
                    value = ctypes.create_string_buffer(256)
                    m = keyctl(11, k, value, 256)
                    if m > 0 and {KEY_SECRET!r} in value.raw[:m]:
                        print("KEY-READ", k)
                for relative in {list(CREDENTIAL_FILES)!r}:
                    path = os.path.join({str(home)!r}, relative)
                    try:
                        if {CREDENTIAL_TEXT!r} in open(path).read():
                            print("CREDENTIAL-READ", relative)
                    except OSError as exc:
                        print("denied", relative, exc.errno)
            """)
    if key is not None:
        assert not _lines(text, "KEY-READ"), text
    assert not _lines(text, "CREDENTIAL-READ"), text


# -- 5. planting code the host runs later ---------------------------------------------------


PLANT_MARK = "# kernelbox-isolation-plant-probe\n"


def _planted_on_host(text: str) -> list[str]:
    """The paths the kernel reports written whose *host* file holds the marker (cleaned up).

    Inside the sandbox a path can be writable in a private view (srt puts a tmpfs over /tmp for
    an unprivileged user) without anything reaching the host, so the host is what is checked.
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
def try_write(path, append=False):
    # Writes a marker; the test then checks the *host* for it (inside, a path can be writable
    # in a private view, e.g. a tmpfs over /tmp, without anything reaching the host).
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a" if append else "x") as f:
            f.write(MARK)
        print("WRITTEN", path)
    except OSError as exc:
        print("blocked", path, exc.errno)
root = CHECKOUT
try_write(os.path.join(root, "sitecustomize.py"))
try_write(os.path.join(root, "usercustomize.py"))
for js in sorted(glob.glob(os.path.join(root, ".tools/srt/node_modules/*/package.json"))
                 + glob.glob(os.path.join(root, ".tools/srt/node_modules/@*/*/package.json"))):
    try_write(js, append=True)
try_write(os.path.join(root, ".tools/srt/node_modules/.bin/planted"))
for entry in HOST_SYS_PATH:                  # what the host's Python imports from
    if entry and os.path.isdir(entry):
        try_write(os.path.join(entry, "planted_isolation_probe.pth"))
state = os.path.dirname(os.environ.get("HOME", "/nonexistent"))
# (PIP_TARGET is writable by design: %pip installs there. Only kernels import from it; the
# gateway runs with -I, and nothing on the host imports from the state directory.)
try_write(os.path.join(state, "jupyter/kernels/python3/kernel.json"), append=True)
for spec in glob.glob(os.path.join(state, "jupyter/kernels/*/kernel.json")):
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
    assert not planted, f"kernel code planted files the host runs: {planted}\n{text}"
    assert _lines(text, "blocked"), text  # the probes ran


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
            # each child process gets its own RLIMIT_DATA
            "import subprocess, sys\nps = [subprocess.Popen([sys.executable, '-c', "
            "'import time; b = bytearray(250 << 20); print(1, flush=True); time.sleep(3)'], "
            "stdout=subprocess.PIPE) for _ in range(3)]\n"
            "ok = sum(p.stdout.readline().strip() == b'1' for p in ps)\n"
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
            except KernelboxError as exc:  # a killed kernel: the limit held
                got.append(f"stopped: {type(exc).__name__}")
                if "devshm" not in code:
                    with anyio.fail_after(START_TIMEOUT_SECONDS):
                        await kc.reset()
    allocated = [line for text in got for line in _lines(text, "ALLOCATED")]
    assert not allocated, got
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
            import os, signal, time
            children = []
            try:
                for _ in range(2048):
                    pid = os.fork()
                    if pid == 0:
                        time.sleep(30)
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
    assert _lines(text, "fork refused"), text
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
    assert any("pypi.org:443" in line for line in accepted), text  # still useful
