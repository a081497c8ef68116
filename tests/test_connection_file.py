"""Connection files: ``kernelbox serve --connection-file`` and ``KernelClient.from_connection_file``."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
import anyio.abc
import psutil
import pytest

from kernelbox import KernelClient
from kernelbox._connection_file import (
    ConnectionInfo,
    read_connection_file,
    remove_connection_file,
    write_connection_file,
)

KERNELBOX = [sys.executable, "-m", "kernelbox.cli"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_owner_only_even_with_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "kb.json"
    info = ConnectionInfo(url="http://127.0.0.1:1234", token="t0ken", pid=42)
    old_umask = os.umask(0)
    try:
        write_connection_file(path, info)
    finally:
        os.umask(old_umask)
    assert mode(path) == 0o600
    assert json.loads(path.read_text()) == {"url": "http://127.0.0.1:1234", "token": "t0ken", "pid": 42}
    assert read_connection_file(path) == info
    assert [p.name for p in tmp_path.iterdir()] == ["kb.json"]  # no temporary file left


def test_replaces_an_existing_file_and_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "kb.json"
    path.write_text("stale")
    path.chmod(0o644)
    write_connection_file(path, ConnectionInfo(url="http://h:1", token="new"))
    assert mode(path) == 0o600
    assert read_connection_file(path).token == "new"


def test_removed_only_while_it_still_describes_this_server(tmp_path: Path) -> None:
    path = tmp_path / "kb.json"
    mine = ConnectionInfo(url="http://h:1", token="mine", pid=1)
    write_connection_file(path, mine)
    write_connection_file(path, ConnectionInfo(url="http://h:2", token="theirs", pid=2))
    assert not remove_connection_file(path, mine)
    assert path.exists()
    write_connection_file(path, mine)
    assert remove_connection_file(path, mine)
    assert not path.exists()
    assert not remove_connection_file(path, mine)


def test_from_connection_file_builds_a_client_and_reports_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "kb.json"
    write_connection_file(path, ConnectionInfo(url="https://gw.example:8443/base", token="tok"))
    client = KernelClient.from_connection_file(path, kernel_name="python3", verify=False)
    assert (client.base_url, client.token, client.verify) == ("https://gw.example:8443/base", "tok", False)
    with pytest.raises(FileNotFoundError):
        KernelClient.from_connection_file(tmp_path / "missing.json")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a kernelbox connection file"):
        KernelClient.from_connection_file(path)
    path.write_text('{"url": "http://h:1"}')
    with pytest.raises(ValueError, match="token"):
        KernelClient.from_connection_file(path)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_serve_writes_the_file_for_clients_and_removes_it_on_exit(tmp_path: Path, anyio_backend: str) -> None:
    path = tmp_path / "run" / "kernelbox.json"
    path.parent.mkdir()
    process = await anyio.open_process(
        [*KERNELBOX, "serve", "--port", "0", "--json", "--connection-file", str(path),
         "--working-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        with anyio.fail_after(60):
            line = b""
            async for data in process.stdout:  # type: ignore[union-attr]
                line += data
                if b"\n" in line:
                    break
        printed = json.loads(line.split(b"\n")[0])
        # The file exists by the time the URL is printed, owner-only, with the same facts.
        assert mode(path) == 0o600
        assert json.loads(path.read_text()) == printed
        with anyio.fail_after(60):
            async with KernelClient.from_connection_file(path, images_dir=tmp_path / "images") as client:
                assert (await client.execute("print(6 * 7)")).text == "42"
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await process.wait() == 0
        assert not path.exists()
        assert list(path.parent.iterdir()) == []
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()


async def _start_serve(tmp_path: Path, *extra: str) -> tuple[anyio.abc.Process, dict, Path]:
    path = tmp_path / "run" / "kernelbox.json"
    path.parent.mkdir(exist_ok=True)
    process = await anyio.open_process(
        [*KERNELBOX, "serve", "--port", "0", "--json", "--connection-file", str(path),
         "--working-dir", str(tmp_path), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    line = b""
    with anyio.fail_after(60):
        async for data in process.stdout:  # type: ignore[union-attr]
            line += data
            if b"\n" in line:
                break
    return process, json.loads(line.split(b"\n")[0]), path


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT])
async def test_serve_cleans_up_on_every_stop_signal(tmp_path: Path, anyio_backend: str, signum: int) -> None:
    # Before: SIGHUP/SIGQUIT left the connection file and the state directory behind.
    before = set(Path(tempfile.gettempdir()).glob("kernelbox-gateway-*"))
    process, printed, path = await _start_serve(tmp_path)
    try:
        state_dirs = set(Path(tempfile.gettempdir()).glob("kernelbox-gateway-*")) - before
        assert state_dirs  # this server's state directory (others may appear meanwhile)
        process.send_signal(signum)
        with anyio.fail_after(30):
            assert await process.wait() == 0
        assert not path.exists()
        assert not any(d.exists() for d in state_dirs)
        assert not psutil.pid_exists(printed["pid"]) or psutil.Process(printed["pid"]).status() == psutil.STATUS_ZOMBIE
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_serve_exits_with_one_readable_line_when_restarts_are_exhausted(tmp_path: Path, anyio_backend: str) -> None:
    # Before: a raw ExceptionGroup traceback.
    process, printed, path = await _start_serve(tmp_path, "--restart-limit", "0")
    try:
        os.kill(printed["pid"], signal.SIGKILL)
        with anyio.fail_after(30):
            assert await process.wait() == 1
            stderr = b"".join([chunk async for chunk in process.stderr]).decode()  # type: ignore[union-attr]
        assert "Traceback" not in stderr and "ExceptionGroup" not in stderr
        fatal = [line for line in stderr.splitlines() if line.startswith("kernelbox: ")]
        assert len(fatal) == 1 and "exited with status -9" in fatal[0], stderr
        assert not path.exists()
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()
