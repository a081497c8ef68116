"""The filesystem boundary, attacked from kernel code: a kernel sees only what it was given.

Each attack is made for real from a kernel of ``KernelGateway(sandbox=True)`` and must fail;
each also has its positive control, so a test cannot pass because the attack did nothing: the
same reading code, run by a kernel of an *unsandboxed* gateway (or by this test process), does
read the same files. Runs as root in CI (the sandbox then runs as ``kernelbox-sandbox``) and as
an unprivileged user (``scripts/test-isolation-unprivileged.sh``).

Canary files are world-readable (0644 in 0755 directories): only the sandbox's view can keep
them from a kernel.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.sandbox_dirs import sandbox_work_dir
from test_sandbox import sandbox_prerequisites  # noqa: F401  (autouse: skip or fail in CI)

from kernelbox import KernelClient, KernelGateway

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox]

START_TIMEOUT_SECONDS = 90.0
EXECUTE_TIMEOUT_SECONDS = 60.0
TEST_TIMEOUT_SECONDS = 300.0
CANARY_TEXT = "kernelbox-canary-3f9e"

# Reads each path in PATHS; prints one JSON line per path: {"path", "read": text or None, "error"}.
READER = """
import json
for path in PATHS:
    try:
        with open(path, encoding="utf-8") as file:
            print(json.dumps({"path": path, "read": file.read(), "error": None}))
    except OSError as exc:
        print(json.dumps({"path": path, "read": None, "error": exc.strerror}))
"""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def work() -> Iterator[Path]:
    with sandbox_work_dir() as path:
        yield path


@contextlib.contextmanager
def planted_canaries() -> Iterator[list[Path]]:
    """World-readable canary files where other users and tools keep theirs.

    ``/tmp/<dir>``, ``/var/tmp/<dir>`` and another project's ``.env`` always; ``/home/<user>``,
    ``/opt/<dir>`` and ``/srv/<dir>`` where this process may create them (as root).
    """
    tag = uuid.uuid4().hex[:12]
    roots = [Path("/tmp"), Path("/var/tmp"), Path("/home"), Path("/opt"), Path("/srv")]
    created: list[Path] = []
    canaries: list[Path] = []
    try:
        for root in roots:
            if not root.is_dir() or not os.access(root, os.W_OK):
                continue
            directory = root / f"kernelbox-canary-{tag}"
            directory.mkdir(mode=0o755)
            os.chmod(directory, 0o755)
            created.append(directory)
            canary = directory / "canary.txt"
            canary.write_text(CANARY_TEXT)
            os.chmod(canary, 0o644)
            canaries.append(canary)
        project = created[0] / "otherproj"
        project.mkdir(mode=0o755)
        os.chmod(project, 0o755)
        env_file = project / ".env"
        env_file.write_text(f"API_KEY={CANARY_TEXT}\n")
        os.chmod(env_file, 0o644)
        canaries.append(env_file)
        yield canaries
    finally:
        for directory in created:
            shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def kernel(work: Path, **gateway_kwargs: Any) -> AsyncIterator[tuple[KernelGateway, KernelClient]]:
    with anyio.fail_after(START_TIMEOUT_SECONDS):
        gw = KernelGateway(host="127.0.0.1", port=0, working_dir=work,
                           startup_timeout=START_TIMEOUT_SECONDS, **gateway_kwargs)
        await gw.start()
    try:
        with anyio.fail_after(START_TIMEOUT_SECONDS):
            kc = KernelClient(host=gw.host, port=gw.port, token=gw.token)
            await kc.connect()
        try:
            yield gw, kc
        finally:
            with anyio.fail_after(30):
                await kc.disconnect()
    finally:
        with anyio.fail_after(30):
            await gw.stop()


async def run(kc: KernelClient, code: str, timeout: float = EXECUTE_TIMEOUT_SECONDS) -> str:
    with anyio.fail_after(timeout + 15):
        result = await kc.execute(textwrap.dedent(code), timeout=timeout)
    return result.text or ""


async def read_from_kernel(kc: KernelClient, paths: list[Path]) -> dict[str, dict[str, Any]]:
    text = await run(kc, f"PATHS = {[str(path) for path in paths]!r}\n" + READER)
    results = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert [entry["path"] for entry in results] == [str(path) for path in paths], text
    return {entry["path"]: entry for entry in results}


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_host_directories_outside_the_view_are_not_readable(work: Path) -> None:
    own = work / "mine.txt"
    own.write_text("MINE")
    os.chmod(own, 0o644)
    with planted_canaries() as canaries:
        assert len(canaries) >= 3  # /tmp, /var/tmp and another project's .env at least
        async with kernel(work, sandbox=True, sandbox_config="default") as (_gw, kc):
            sandboxed = await read_from_kernel(kc, [*canaries, own])
        # The positive control: a kernel without the sandbox reads every canary this way.
        async with kernel(work) as (_gw, kc):
            unsandboxed = await read_from_kernel(kc, canaries)
    for canary in canaries:
        assert unsandboxed[str(canary)]["read"] is not None, unsandboxed[str(canary)]
        assert CANARY_TEXT in unsandboxed[str(canary)]["read"]
        assert sandboxed[str(canary)]["read"] is None, sandboxed[str(canary)]
    assert sandboxed[str(own)]["read"] == "MINE"  # the kernel's own working directory is shown


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_the_kernel_sees_an_empty_host_tmp_and_home(work: Path) -> None:
    with planted_canaries() as canaries:
        async with kernel(work, sandbox=True, sandbox_config="default") as (_gw, kc):
            text = await run(kc, f"""
                import os
                for directory in {sorted({str(c.parent.parent) for c in canaries[:-1]})!r}:
                    try:
                        print("LISTING", directory, sorted(os.listdir(directory)))
                    except FileNotFoundError:
                        print("LISTING", directory, "absent")
            """)
    listings = [line for line in text.splitlines() if line.startswith("LISTING")]
    assert len(listings) == len(canaries) - 1, text
    for line in listings:
        assert "kernelbox-canary-" not in line, text


# What a tenant leaves behind: its working directory (0600 and 0644 files), its HOME and its
# %pip packages (both in the gateway's state directory).
TENANT_CODE = """
import json, os
secret = SECRET
paths = {
    "private": os.path.join(os.getcwd(), "private.txt"),
    "public": os.path.join(os.getcwd(), "public.txt"),
    "home": os.path.join(os.environ["HOME"], "notes.txt"),
    "package": os.path.join(os.environ["PIP_TARGET"], "tenantpkg_" + secret + ".py"),
}
for name, path in paths.items():
    with open(path, "w") as file:
        file.write(f"SECRET = {secret!r}\\n")
    os.chmod(path, 0o600 if name == "private" else 0o644)
print(json.dumps(paths))
"""


async def plant_tenant_files(kc: KernelClient, secret: str) -> dict[str, str]:
    text = await run(kc, f"SECRET = {secret!r}\n" + TENANT_CODE)
    paths: dict[str, str] = json.loads(text.splitlines()[-1])
    return paths


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_two_gateways_at_once_cannot_read_each_other() -> None:
    with sandbox_work_dir() as work_a, sandbox_work_dir() as work_b:
        async with kernel(work_a, sandbox=True) as (_ga, a), kernel(work_b, sandbox=True) as (_gb, b):
            paths_a = await plant_tenant_files(a, "tenantA" + uuid.uuid4().hex[:8])
            paths_b = await plant_tenant_files(b, "tenantB" + uuid.uuid4().hex[:8])
            a_reads_b = await read_from_kernel(a, [Path(p) for p in paths_b.values()])
            b_reads_a = await read_from_kernel(b, [Path(p) for p in paths_a.values()])
            # Positive controls: each tenant reads its own files, and they are on the host.
            a_reads_a = await read_from_kernel(a, [Path(p) for p in paths_a.values()])
            for path in [*paths_a.values(), *paths_b.values()]:
                assert Path(path).is_file(), path
            imported = await run(a, f"""
                import importlib
                for name in ({Path(paths_a["package"]).stem!r}, {Path(paths_b["package"]).stem!r}):
                    try:
                        importlib.import_module(name)
                        print("IMPORTED", name)
                    except ImportError as exc:
                        print("NOT IMPORTED", name, type(exc).__name__)
            """)
    assert all(entry["read"] is not None for entry in a_reads_a.values()), a_reads_a
    for entry in [*a_reads_b.values(), *b_reads_a.values()]:
        assert entry["read"] is None, entry
    assert f"IMPORTED {Path(paths_a['package']).stem}" in imported, imported  # its own: yes
    assert f"NOT IMPORTED {Path(paths_b['package']).stem}" in imported, imported


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_a_later_gateway_cannot_read_an_earlier_ones_files() -> None:
    with sandbox_work_dir() as work_a, sandbox_work_dir() as work_b:
        async with kernel(work_a, sandbox=True) as (_ga, a):
            paths_a = await plant_tenant_files(a, "earlier" + uuid.uuid4().hex[:8])
        kept = [Path(paths_a["private"]), Path(paths_a["public"])]
        for path in kept:  # the working directory outlives its gateway
            assert path.is_file(), path
        async with kernel(work_b, sandbox=True) as (_gb, b):
            later = await read_from_kernel(b, kept)
    for entry in later.values():
        assert entry["read"] is None, entry


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_read_paths_and_write_paths_extend_the_view(work: Path) -> None:
    with planted_canaries() as canaries, sandbox_work_dir("kernelbox-test-shared-") as shared:
        shown = canaries[0].parent
        async with kernel(work, sandbox=True, read_paths=[shown], write_paths=[shared]) as (_gw, kc):
            # canaries[-1] is otherproj/.env inside the shown directory: the presets' **/.env
            # deny covers the directories the caller adds too.
            reads = await read_from_kernel(kc, [*canaries[:2], canaries[-1]])
            text = await run(kc, f"""
                open({str(shared / "out.txt")!r}, "w").write("shared")
                try:
                    open({str(shown / "new.txt")!r}, "w").write("x")
                    print("WROTE read-only path")
                except OSError as exc:
                    print("refused", exc.strerror)
            """)
        assert (shared / "out.txt").read_text() == "shared"
    assert reads[str(canaries[0])]["read"] == CANARY_TEXT
    assert reads[str(canaries[1])]["read"] is None
    assert canaries[-1].is_relative_to(shown) and reads[str(canaries[-1])]["read"] is None
    assert "refused" in text, text


async def _two_kernels_read_each_other(work: Path, **gateway_kwargs: Any) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], str]:
    """Two kernels of one gateway plant tenant files; each then reads the other's and its own."""
    async with kernel(work, sandbox=True, **gateway_kwargs) as (gw, a):
        with anyio.fail_after(START_TIMEOUT_SECONDS):
            async with KernelClient(host=gw.host, port=gw.port, token=gw.token) as b:
                await plant_tenant_files(a, "kernelA" + uuid.uuid4().hex[:8])
                paths_b = await plant_tenant_files(b, "kernelB" + uuid.uuid4().hex[:8])
                a_reads_b = await read_from_kernel(a, [Path(p) for p in paths_b.values()])
                b_reads_b = await read_from_kernel(b, [Path(p) for p in paths_b.values()])
                imported = await run(a, f"""
                    import importlib
                    try:
                        importlib.import_module({Path(paths_b["package"]).stem!r})
                        print("IMPORTED")
                    except ImportError as exc:
                        print("NOT IMPORTED", type(exc).__name__)
                """)
    return a_reads_b, b_reads_b, imported


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_isolated_kernels_of_one_gateway_cannot_read_each_other(work: Path) -> None:
    a_reads_b, b_reads_b, imported = await _two_kernels_read_each_other(work, isolate_kernels=True)
    assert all(entry["read"] is not None for entry in b_reads_b.values()), b_reads_b  # its own: yes
    for entry in a_reads_b.values():
        assert entry["read"] is None, entry
    assert "NOT IMPORTED" in imported, imported
    assert len([child for child in work.iterdir() if child.is_dir()]) == 2  # one directory each


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_kernels_share_their_files_without_isolate_kernels(work: Path) -> None:
    """The positive control: the same reads succeed between kernels of one ordinary gateway."""
    a_reads_b, _b_reads_b, imported = await _two_kernels_read_each_other(work)
    for entry in a_reads_b.values():
        assert entry["read"] is not None, entry
    assert "IMPORTED" in imported and "NOT IMPORTED" not in imported, imported


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_an_isolated_kernel_writes_only_its_own_directories(work: Path) -> None:
    (work / "shared.txt").write_text("gateway's")
    os.chmod(work / "shared.txt", 0o666)
    async with kernel(work, sandbox=True, isolate_kernels=True) as (_gw, kc):
        text = await run(kc, f"""
            import os, tempfile
            for path in ({str(work / "shared.txt")!r}, {str(work / "planted.txt")!r}, "/tmp/planted.txt"):
                try:
                    with open(path, "a") as file:
                        file.write("x")
                    print("WROTE", path)
                except OSError as exc:
                    print("REFUSED", path, exc.strerror)
            with tempfile.NamedTemporaryFile(dir=None) as own:   # TMPDIR is the kernel's own
                print("OWN TMP", own.name)
            open("here.txt", "w").write("mine")
            print("CWD", os.getcwd())
        """)
    assert "WROTE" not in text, text
    assert text.count("REFUSED") == 3, text
    cwd = Path(next(line for line in text.splitlines() if line.startswith("CWD")).split(" ", 1)[1])
    assert cwd.parent == work and (cwd / "here.txt").read_text() == "mine"
    assert (work / "shared.txt").read_text() == "gateway's"


BOUNDS_CODE = """
import errno, os, time
def fill(directory, chunk=16 * 1024 * 1024, limit=1280 * 1024 ** 2):
    written = 0
    path = os.path.join(directory, "fill-%d" % os.getpid())
    try:
        with open(path, "wb") as file:
            while written < limit:
                file.write(b"\\0" * chunk)
                file.flush()
                written += chunk
        return written, None
    except OSError as exc:
        return written, exc.errno
    finally:
        if os.path.exists(path):
            os.unlink(path)
for directory in ("/dev/shm", "/var"):
    written, error = fill(directory)
    print("FILL", directory, written, error)
children = []
error = None
try:
    while len(children) < 6000:
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
except OSError as exc:
    error = exc.errno
for pid in children:
    os.kill(pid, 9)
for pid in children:
    os.waitpid(pid, 0)
print("FORKS", len(children), error)
"""


def _bounds(text: str) -> tuple[dict[str, tuple[int, int | None]], tuple[int, int | None]]:
    fills: dict[str, tuple[int, int | None]] = {}
    forks = (0, None)
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["FILL"]:
            fills[parts[1]] = (int(parts[2]), None if parts[3] == "None" else int(parts[3]))
        elif parts[:1] == ["FORKS"]:
            forks = (int(parts[1]), None if parts[2] == "None" else int(parts[2]))
    return fills, forks


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_a_sandboxed_gateway_is_bounded_by_default(work: Path) -> None:
    """2,000 children in 0.8 s and a private 12 GiB /dev/shm were possible with no option set."""
    async with kernel(work, sandbox=True) as (_gw, kc):
        text = await run(kc, BOUNDS_CODE, timeout=180)
    fills, (forks, fork_error) = _bounds(text)
    gib = 1024**3
    # The attack ran until the bound stopped it, and the bound is the documented one.
    assert fills["/dev/shm"][1] == 28 and 0.9 * gib <= fills["/dev/shm"][0] <= gib, text  # ENOSPC
    assert fills["/var"][1] == 28 and fills["/var"][0] <= 64 * 1024 * 1024, text  # hidden dirs
    assert fork_error == 11 and 3000 <= forks <= 4096, text  # EAGAIN


@pytest.mark.timeout(TEST_TIMEOUT_SECONDS)
async def test_the_default_bounds_can_be_lifted(work: Path) -> None:
    """The positive control: the same code, with the bounds lifted, goes past them."""
    async with kernel(work, sandbox=True, pids_limit=None, shm_size=None) as (_gw, kc):
        text = await run(kc, BOUNDS_CODE.replace("6000", "4300"), timeout=180)
    fills, (forks, fork_error) = _bounds(text)
    assert fills["/dev/shm"][0] == 1280 * 1024**2 and fills["/dev/shm"][1] is None, text
    assert forks == 4300 and fork_error is None, text
