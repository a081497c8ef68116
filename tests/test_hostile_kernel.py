"""Attacks from kernel code on the client's side: the client trusts nothing the kernel sends.

Kernel code can replace kernelbox's kernel-side transfer helper and publish anything. These
tests do exactly that, through the public API, and check that every limit and path rule is
enforced by the client (README, "Threat model"). They need no sandbox: the client's guarantees
are the same either way. Each also checks that its attack really ran: the replaced helper
counts its calls, the planted symlink is in place, the flood was read to its end.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import psutil
import pytest

from kernelbox import FileTransferError, KernelClient, KernelGateway

pytestmark = pytest.mark.anyio

HELPER = "sys.modules['_kernelbox_transfer']"


async def _install_helper(client: KernelClient) -> None:
    """A first, honest transfer installs the kernel-side helper that the attacks then replace."""
    await client.upload(b"seed", "seed.txt")
    await client.execute(f"import sys\n{HELPER}.attack_calls = 0")


async def _attack_calls(client: KernelClient) -> int:
    """How many times the kernel-side helper's replaced function ran (it counts itself)."""
    return int((await client.execute(f"import sys\nprint({HELPER}.attack_calls)")).text or "0")


async def test_a_download_flood_past_max_bytes_is_refused(client: KernelClient) -> None:
    with anyio.fail_after(120):
        await _install_helper(client)
        await client.execute(
            "import sys, base64\n"
            f"m = {HELPER}\n"
            "def get(tid, chunk_bytes):\n"
            "    m.attack_calls += 1\n"
            "    m._publish({'tid': tid, 'data': base64.b64encode(b'x' * (8 << 20)).decode(), 'eof': False})\n"
            "m.get = get"
        )
        with pytest.raises(FileTransferError) as info:
            await client.download("seed.txt", max_bytes=1 << 20)
        assert await _attack_calls(client) >= 1
    assert info.value.reason in ("too_large", "integrity")


async def test_a_chunk_larger_than_asked_is_refused_even_under_max_bytes(client: KernelClient) -> None:
    with anyio.fail_after(120):
        await _install_helper(client)
        await client.execute(
            "import sys, base64\n"
            f"m = {HELPER}\n"
            "def get(tid, chunk_bytes):\n"
            "    m.attack_calls += 1\n"
            "    m._publish({'tid': tid, 'data': base64.b64encode(b'y' * (chunk_bytes + 1)).decode(), 'eof': False})\n"
            "m.get = get"
        )
        with pytest.raises(FileTransferError) as info:
            await client.download("seed.txt", chunk_bytes=1024, max_bytes=None)
        assert await _attack_calls(client) >= 1
    assert info.value.reason == "too_large"


async def test_a_download_redirected_outside_the_working_dir_is_refused(client: KernelClient) -> None:
    with anyio.fail_after(120):
        await _install_helper(client)
        await client.execute(
            "import sys\n"
            f"m = {HELPER}\n"
            "original = m.begin_download\n"
            "def begin_download(tid, path, allow_outside, max_bytes):\n"
            "    m.attack_calls += 1\n"
            "    return original(tid, '/etc/hostname', True, max_bytes)\n"
            "m.begin_download = begin_download"
        )
        with pytest.raises(FileTransferError) as info:
            await client.download("seed.txt")
        assert await _attack_calls(client) == 1
    assert info.value.reason == "outside"


async def test_an_upload_reporting_a_path_outside_is_refused(client: KernelClient) -> None:
    with anyio.fail_after(120):
        await _install_helper(client)
        await client.execute(
            "import sys\n"
            f"m = {HELPER}\n"
            "original_commit, original_publish = m.commit_upload, m._publish\n"
            "def commit_upload(tid, size, sha256):\n"
            "    m.attack_calls += 1\n"
            "    m._publish = lambda payload: original_publish(dict(payload, path='/etc/passwd'))\n"
            "    try:\n"
            "        original_commit(tid, size, sha256)\n"
            "    finally:\n"
            "        m._publish = original_publish\n"
            "m.commit_upload = commit_upload"
        )
        with pytest.raises(FileTransferError) as info:
            await client.upload(b"data", "inside.txt")
        assert await _attack_calls(client) == 1
    assert info.value.reason == "outside"


async def test_rich_output_and_images_are_capped_on_the_client(client: KernelClient, tmp_path: Path) -> None:
    # 20 displays of a 10 MiB "PNG" each: 200 MiB sent, at most the output limit kept or written.
    code = (
        "import base64\n"
        "from IPython.display import publish_display_data\n"
        "blob = base64.b64encode(b'\\x89PNG\\r\\n\\x1a\\n' + b'z' * (10 << 20)).decode()\n"
        "for i in range(20):\n"
        "    publish_display_data({'image/png': blob, 'text/plain': f'image {i}'})\n"
        "print('done')"
    )
    with anyio.fail_after(180):
        result = await client.execute(code, max_output_bytes=32 << 20)
    assert result.truncated
    assert result.dropped_bytes > 150 << 20
    assert 1 <= len(result.images) <= 3
    written = sum(path.stat().st_size for path in result.images)
    assert written <= 32 << 20
    assert "output truncated after" in (result.text or "")


POISON = "_k = get_ipython().kernel; _k.session.send(_k.iopub_socket, 'stream', content={payload}, parent=_k.get_parent('shell'))"


@pytest.mark.parametrize("payload", [
    "b'{\"name\":\"stdout\",\"text\":\"\\xff\"}'",                               # invalid UTF-8
    "b'{\"name\":'",                                                             # invalid JSON
    "b'{\"name\":\"stdout\",\"text\":' + b'[' * 100000 + b']' * 100000 + b'}'",  # deep nesting
    "b'[1]'",                                                                    # content not an object
], ids=["invalid-utf8", "invalid-json", "deep-nesting", "content-not-object"])
async def test_a_malformed_message_from_the_kernel_is_dropped_and_the_client_goes_on(
    client: KernelClient, payload: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: a raw UnicodeDecodeError/JSONDecodeError/RecursionError/AttributeError, and every
    # later call raised it again until reset() (the kernel's state lost).
    with anyio.fail_after(60):
        await client.execute("kept = 42")
        with caplog.at_level(logging.WARNING, logger="kernelbox.client"):
            await client.execute(POISON.format(payload=payload))
        assert (await client.execute("print(kept)")).text == "42"
    # The attack ran: the poisoned message reached the client, which dropped it (and said so)
    # before the execution it came with ended.
    dropped = [record.getMessage() for record in caplog.records
               if record.getMessage().startswith(f"Kernel {client.kernel_id} sent a")]
    assert len(dropped) == 1 and "dropped it" in dropped[0], caplog.text


async def test_images_are_never_written_through_a_symlink_planted_by_the_kernel(
    gateway: KernelGateway, tmp_path: Path
) -> None:
    # Before: kernel code replaced images/ in its working directory by a symlink, and the
    # client (root, outside the sandbox) wrote the kernel's bytes wherever it pointed.
    # The link is planted in a directory others may write, as a sandboxed kernel's working
    # directory is (it belongs to the sandbox's uid). A link that only root could have made
    # (root's, in a directory only root may write) is followed by design: a kernel able to
    # make it can write anywhere itself (`kernelbox._host_paths`).
    outside = tmp_path / "outside"
    outside.mkdir()
    async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token,
                            images_dir=tmp_path / "work-images") as probe:
        cwd = Path((await probe.execute("import os\nprint(os.getcwd())")).text or "")
    shared = cwd / f"shared-{tmp_path.name}"
    shared.mkdir()
    shared.chmod(0o777)
    images = shared / "images"
    async with KernelClient(host=gateway.host, port=gateway.port, token=gateway.token, images_dir=images) as client:
        code = (
            "import base64, os\n"
            "from IPython.display import publish_display_data\n"
            f"os.makedirs({str(images)!r}, exist_ok=True)\n"
            f"os.rename({str(images)!r}, {str(images) + '-moved'!r})\n"
            f"os.symlink({str(outside)!r}, {str(images)!r})\n"
            "publish_display_data({'image/png': base64.b64encode(b'\\x89PNG\\r\\n\\x1a\\n#!/bin/sh planted').decode(), 'text/plain': 'x'})"
        )
        with anyio.fail_after(60):
            result = await client.execute(code)
    # The attack ran: images_dir was the kernel's symlink to `outside` when the image came.
    assert images.is_symlink() and images.resolve() == outside.resolve()
    assert list(outside.iterdir()) == []
    assert result.images == [] and len(result.output_errors) == 1
    assert str(images) in result.output_errors[0], result.output_errors


async def test_a_kernel_flooding_its_output_pipe_costs_bounded_memory(
    gateway: KernelGateway, client: KernelClient
) -> None:
    # Before: 512 MiB without a newline on the log pipe kernels then shared grew the supervisor
    # by ~600 MB. Kernel output now has a pipe of its own, which the gateway reads: the same
    # flood must cost neither the gateway nor the supervisor more than a bounded line.
    code = (
        "import os, sys\n"
        "fd = sys.stderr._original_stdstream_copy\n"
        "chunk = b'x' * (1 << 20)\n"
        "written = sum(os.write(fd, chunk) for _ in range(64)) + os.write(fd, b'\\n')\n"
        "print(written)"
    )
    assert gateway.pid is not None
    processes = {"supervisor": psutil.Process(), "gateway": psutil.Process(gateway.pid)}
    before = {name: process.memory_info().rss for name, process in processes.items()}
    with anyio.fail_after(120):
        written = (await client.execute(code)).text
    # The attack ran: all of it went through the pipe, which holds 64 KiB, so it was read.
    assert written == str((64 << 20) + 1)
    grown = {name: process.memory_info().rss - before[name] for name, process in processes.items()}
    assert all(growth < 128 << 20 for growth in grown.values()), grown
    assert not any("x" * 1024 in line for line in gateway.log_tail)  # nor is it the gateway's log


async def test_one_output_message_past_the_receive_limit_is_reported_not_lost(
    client: KernelClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: httpx-ws held a message of any size, assembling it in quadratic time; one
    # 150 MB display took ~30 s, the server dropped the connection over missed pings, and the
    # output vanished from a result that said nothing (truncated=False, no output_errors).
    from kernelbox.client import _channels

    monkeypatch.setattr(_channels, "MAX_RECEIVE_BYTES", 4 * 1024 * 1024)
    with anyio.fail_after(60):
        result = await client.execute(
            "from IPython.display import display\n"
            "display({'text/plain': 'x' * 6_000_000}, raw=True)",
            max_output_bytes=None,
        )
        assert result.truncated
        assert result.dropped_bytes > 6_000_000
        assert any("dropped unread" in problem and "4194304" in problem for problem in result.output_errors)
        assert (await client.execute("print('still here')")).text == "still here"


async def test_a_large_output_message_is_received_whole(client: KernelClient) -> None:
    # One 60 MB message arrives in many pieces; they are joined once, whole and in order.
    with anyio.fail_after(30):
        result = await client.execute(
            "from IPython.display import display\n"
            "display({'text/plain': 'y' * 60_000_000}, raw=True)",
            max_output_bytes=None,
        )
    assert not result.truncated and result.output_errors == ()
    assert result.outputs[0].data["text/plain"] == "y" * 60_000_000
