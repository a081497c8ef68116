"""The gateway log pipe's line reader (`kernelbox.gateway._supervisor.read_lines`), fed by hand."""

from __future__ import annotations

import anyio
import pytest

from kernelbox.gateway._supervisor import read_lines

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


async def _lines(chunks: list[bytes], max_line_bytes: int) -> list[bytes]:
    send, receive = anyio.create_memory_object_stream[bytes](len(chunks) + 1)
    with send:
        for chunk in chunks:
            send.send_nowait(chunk)
    with anyio.fail_after(5):
        return [line async for line in read_lines(receive, max_line_bytes)]


async def test_lines_are_split_across_reads() -> None:
    assert await _lines([b"one\ntw", b"o\n\nthr", b"ee\n"], 100) == [b"one", b"two", b"", b"three"]


async def test_a_last_line_without_newline_is_kept() -> None:
    assert await _lines([b"a\nb"], 100) == [b"a", b"b"]


async def test_a_long_line_is_cut_and_its_rest_dropped() -> None:
    long = b"x" * 50
    chunks = [b"start\n", long[:20], long[20:], b"yy\nafter\n"]
    assert await _lines(chunks, 10) == [b"start", b"x" * 10 + b" [line cut]", b"after"]


async def test_a_long_line_in_one_read_is_cut_too() -> None:
    assert await _lines([b"y" * 30 + b"\nok\n"], 10) == [b"y" * 10 + b" [line cut]", b"ok"]


async def test_a_long_line_without_end_is_cut_once() -> None:
    assert await _lines([b"z" * 8] * 10, 10) == [b"z" * 10 + b" [line cut]"]


async def test_memory_stays_bounded_without_a_newline() -> None:
    # 100 reads of 1 KiB without a newline: the reader never holds more than the cap plus a read.
    send, receive = anyio.create_memory_object_stream[bytes](200)
    with send:
        for _ in range(100):
            send.send_nowait(b"w" * 1024)
    lines = read_lines(receive, 4096)
    with anyio.fail_after(5):
        assert await lines.__anext__() == b"w" * 4096 + b" [line cut]"
        assert receive.statistics().current_buffer_used > 90  # the rest is still unread
        assert [line async for line in lines] == []
