"""File transfer through the kernel: round trips, limits, path escapes, no residue in the kernel."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import anyio
import pytest

from kernelbox import FileTransferError, KernelClient
from kernelbox.client.transfer import MAX_CHUNK_BYTES, build_cell

TIMEOUT = 60


async def kernel_eval(client: KernelClient, expression: str) -> str:
    result = await client.execute(f"print({expression})")
    assert result.text is not None
    return result.text


async def start_dir(client: KernelClient) -> Path:
    return Path(await kernel_eval(client, "get_ipython().starting_dir"))


# -- pure ------------------------------------------------------------------------------------


def test_build_cell_is_one_exec_with_a_throwaway_namespace() -> None:
    cell = build_cell("sys.modules['x'].f()\n", install=True)
    first, second = cell.split("\n", 1)
    assert first.startswith("#")  # the marker the kernel helper recognises
    assert second.startswith("exec(") and second.endswith(", {})")
    assert "\n" not in second  # one line: nothing for IPython's line transforms to rewrite
    compile(cell, "<test>", "exec")


def test_bad_arguments_are_refused_before_anything_is_sent() -> None:
    client = KernelClient(port=1)  # never connected: the checks come first

    async def check() -> None:
        with pytest.raises(ValueError, match="non-empty"):
            await client.upload(b"x", "")
        with pytest.raises(ValueError, match="NUL"):
            await client.download("a\x00b")
        with pytest.raises(ValueError, match="chunk_bytes"):
            await client.upload(b"x", "f", chunk_bytes=MAX_CHUNK_BYTES + 1)
        with pytest.raises(ValueError, match="max_bytes"):
            await client.download("f", max_bytes=-1)
        with pytest.raises(FileTransferError, match="more than max_bytes=3") as info:
            await client.upload(b"four", "f", max_bytes=3)
        assert info.value.reason == "too_large"

    anyio.run(check)


# -- against a real kernel -------------------------------------------------------------------


@pytest.mark.anyio
async def test_binary_round_trip_in_several_chunks(client: KernelClient, tmp_path: Path) -> None:
    data = os.urandom(200_000) + bytes(range(256)) * 4 + b"\x00\r\n\x1a"
    with anyio.fail_after(TIMEOUT):
        written = await client.upload(data, "sub/dir/blob.bin", chunk_bytes=64 * 1024)
        base = await start_dir(client)
        assert written == str(base / "sub" / "dir" / "blob.bin")
        digest = await kernel_eval(client, f"__import__('hashlib').sha256(open({written!r}, 'rb').read()).hexdigest()")
        assert digest == hashlib.sha256(data).hexdigest()
        back = await client.download("sub/dir/blob.bin", tmp_path / "local" / "blob.bin", chunk_bytes=50_000)
    assert back == data
    assert (tmp_path / "local" / "blob.bin").read_bytes() == data
    assert [p.name for p in (tmp_path / "local").iterdir()] == ["blob.bin"]  # no temporary file left


@pytest.mark.anyio
async def test_upload_from_a_local_file_replaces_and_empty_files_work(client: KernelClient, tmp_path: Path) -> None:
    source = tmp_path / "source.csv"
    source.write_text("a,b\n1,2\n")
    with anyio.fail_after(TIMEOUT):
        await client.upload(b"old content that is longer", "table.csv")
        await client.upload(source, "table.csv")
        assert await client.download("table.csv") == b"a,b\n1,2\n"
        await client.upload(b"", "empty.txt")
        assert await client.download("empty.txt") == b""


@pytest.mark.anyio
async def test_transfers_leave_no_names_history_or_cached_source(client: KernelClient) -> None:
    snapshot = ("print(repr((sorted(k for k in globals() if not k.startswith('__')), len(In), "
                "sum(len(''.join(v[2])) for v in __import__('linecache').cache.values()), _)))")

    async def take() -> tuple[list[str], int, int, object]:
        # store_history=False: the snapshot itself must not add history entries.
        result = await client.execute(snapshot, store_history=False)
        assert result.text is not None
        return eval(result.text)

    with anyio.fail_after(TIMEOUT):
        await client.execute("40 + 2")  # sets _ (the last result), which a transfer must not touch
        names_before, history_before, cached_before, last_before = await take()
        await client.upload(os.urandom(300_000), "noise.bin", chunk_bytes=100_000)
        await client.download("noise.bin")
        names_after, history_after, cached_after, last_after = await take()
    assert names_after == names_before
    assert history_after == history_before
    assert last_after == last_before == 42
    # At most the snapshot cell and, once per kernel, the helper's installer stay cached:
    # none of the 400 kB of data cells.
    assert cached_after - cached_before < 20_000


@pytest.mark.anyio
async def test_paths_are_relative_to_the_start_directory_even_after_chdir(
    client: KernelClient, tmp_path: Path
) -> None:
    with anyio.fail_after(TIMEOUT):
        base = await start_dir(client)
        await client.execute(f"import os; os.chdir({str(tmp_path)!r})")
        written = await client.upload(b"here", "where.txt")
        assert written == str(base / "where.txt")
        assert not (tmp_path / "where.txt").exists()
        # An absolute path inside the start directory is fine.
        assert await client.download(str(base / "where.txt")) == b"here"


@pytest.mark.anyio
async def test_escapes_are_refused_unless_allowed(client: KernelClient, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    with anyio.fail_after(TIMEOUT):
        base = await start_dir(client)
        link = base / f"link-{os.getpid()}-{id(client)}"
        os.symlink(outside, link)
        try:
            relative_up = os.path.relpath(outside / "new.txt", base)
            attempts = [
                lambda: client.upload(b"x", relative_up),                   # ../../outside/new.txt
                lambda: client.upload(b"x", str(outside / "new.txt")),      # absolute, elsewhere
                lambda: client.upload(b"x", f"{link.name}/new.txt"),        # through a symlink
                lambda: client.download(str(outside / "secret.txt")),
                lambda: client.download(f"{link.name}/secret.txt"),
                lambda: client.download("../" * 10 + "etc/passwd"),
            ]
            for attempt in attempts:
                with pytest.raises(FileTransferError, match="outside the kernel's working directory") as info:
                    await attempt()
                assert info.value.reason == "outside"
                assert "allow_outside=True" in str(info.value)
            assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]

            assert await client.download(f"{link.name}/secret.txt", allow_outside=True) == b"secret"
            await client.upload(b"allowed", str(outside / "new.txt"), allow_outside=True)
            assert (outside / "new.txt").read_bytes() == b"allowed"
        finally:
            link.unlink()


@pytest.mark.anyio
async def test_limits_missing_files_and_directories_are_clear_errors(client: KernelClient) -> None:
    with anyio.fail_after(TIMEOUT):
        await client.upload(b"0123456789", "ten.bin")
        cases = [
            (lambda: client.download("ten.bin", max_bytes=9), "too_large", "10 bytes, more than max_bytes=9"),
            (lambda: client.download("no-such-file"), "not_found", "does not exist"),
            (lambda: client.download("."), "not_a_file", "directory"),
            (lambda: client.upload(b"x", "."), "not_a_file", "directory"),
            (lambda: client.upload(b"x", "ten.bin/inside"), "os_error", "cannot write"),
        ]
        for attempt, reason, message in cases:
            with pytest.raises(FileTransferError, match=message) as info:
                await attempt()
            assert info.value.reason == reason
        # Nothing half-written is left behind, and the kernel is still fine.
        leftovers = await kernel_eval(client, "[n for n in __import__('os').listdir() if n.endswith('.part')]")
        assert leftovers == "[]"
        assert await client.download("ten.bin", max_bytes=10) == b"0123456789"


@pytest.mark.anyio
async def test_transfers_queue_behind_user_executions(client: KernelClient) -> None:
    """A transfer started while user code runs waits for it, and sees what it wrote."""
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            started = anyio.Event()

            async def writer() -> None:
                async for item in client.stream(
                    "import time\nprint('go', flush=True)\ntime.sleep(0.5)\n"
                    "open('late.txt', 'w').write('written by user code')"
                ):
                    if item == "go\n":
                        started.set()

            tg.start_soon(writer)
            await started.wait()
            assert await client.download("late.txt") == b"written by user code"

