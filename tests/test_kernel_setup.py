"""What a client sets up in its kernel: working directory, KERNEL_* variables, start-up timeout."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import anyio
import pytest

from kernelbox import KernelClient, KernelGateway, KernelStartError
from kernelbox.client import _kernel_setup

TIMEOUT_SECONDS = 60


def test_kernel_env_names_must_start_with_kernel_prefix() -> None:
    assert _kernel_setup.validate_kernel_env({"KERNEL_USERNAME": "agent"}) == {"KERNEL_USERNAME": "agent"}
    with pytest.raises(ValueError, match="KERNEL_"):
        _kernel_setup.validate_kernel_env({"USERNAME": "agent"})
    with pytest.raises(TypeError):
        _kernel_setup.validate_kernel_env({"KERNEL_X": 1})  # type: ignore[dict-item]


def test_kernel_request_carries_env_only_when_given() -> None:
    assert _kernel_setup.kernel_request("python3", {}) == {"name": "python3"}
    assert _kernel_setup.kernel_request("python3", {"KERNEL_A": "1"}) == {
        "name": "python3", "env": {"KERNEL_A": "1"}}


def test_working_dir_cell_compiles() -> None:
    compile(_kernel_setup.working_dir_cell("/tmp/x"), "<test>", "exec")


def test_kernel_init_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        KernelClient(kernel_init_timeout=0)


@pytest.mark.anyio
async def test_working_dir_is_entered_kept_and_restored_with_a_notice(
    gateway: KernelGateway, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                working_dir=work, kernel_env={"KERNEL_TASK": "t-1"}) as kc:
            result = await kc.execute("import os; print(os.getcwd(), os.environ['KERNEL_TASK'])")
            assert result.text == f"{work.resolve()} t-1"
            result = await kc.execute("os.chdir('/'); print('moved')")
            assert result.text == f"moved\n[kernelbox] cwd reset to {work.resolve()}"
            assert (await kc.execute("print(os.getcwd())")).text == str(work.resolve())
            # The set-up cell binds nothing in the user's namespace and is not in the history.
            assert (await kc.execute("print('install' in dir(), len(In))")).text == "False 5"
            path = await kc.upload(b"data", "file.txt")
            assert path == os.path.join(str(work.resolve()), "file.txt")


@pytest.mark.anyio
async def test_a_missing_working_dir_fails_connect(gateway: KernelGateway, tmp_path: Path) -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        client = KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                              working_dir=tmp_path / "missing")
        with pytest.raises(KernelStartError, match="working_dir"):
            await client.connect()
        assert not client.connected


@pytest.mark.anyio
async def test_a_working_dir_removed_by_a_cell_is_reported_in_one_line(gateway: KernelGateway, tmp_path: Path) -> None:
    # Before: IPython printed "Error in callback ... (for post_run_cell)" and a traceback.
    work = tmp_path / "doomed"
    work.mkdir()
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                                working_dir=work, images_dir=tmp_path / "images") as kc:
            result = await kc.execute("import os\nos.chdir('/')\nos.rmdir(" + repr(str(work.resolve())) + ")")
            assert result.stderr == f"[kernelbox] cannot return to the working directory {work.resolve()}: No such file or directory\n"
            assert "Traceback" not in (result.text or "")
            assert (await kc.execute("print(1 + 1)")).text == "2"  # said once, not after every cell
            os.mkdir(work)
            assert (await kc.execute("print(3)")).text == f"3\n[kernelbox] cwd reset to {work.resolve()}"


@pytest.mark.anyio
async def test_cell_history_stays_in_the_kernels_memory(client: KernelClient) -> None:
    # The code of every cell used to go into ~/.ipython/.../history.sqlite, readable by the
    # next kernel of that home; the session's own history must keep working.
    marker = f"kb_history_marker_{uuid.uuid4().hex}"
    with anyio.fail_after(TIMEOUT_SECONDS):
        await client.execute(f"{marker} = 1")
        listed = await client.execute("%history -n")
        assert marker in (listed.text or "")
        # writeout_cache() writes an enabled history's pending cells to its file, in this thread.
        await client.execute("hm = get_ipython().history_manager\nif hm.enabled: hm.writeout_cache()")
        check = await client.execute(
            "import os\npath = get_ipython().history_manager.hist_file\n"
            f"print(not os.path.exists(path) or {marker!r}.encode() not in open(path, 'rb').read())"
        )
        assert check.text == "True"
